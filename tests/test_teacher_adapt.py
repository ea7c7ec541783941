"""Teacher adaptation: a head-less encoder gets an MLM head, learns, and becomes a teacher; the
loss with the head at the masked positions only equals the full-logit loss; runs reproduce; the
corpora stream through a bounded buffer and held-out texts are never trained on."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from teacher_fixtures import TINY, minilm_dir, save_tiny_bert_mlm, write_tagged_corpus
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel
from typer.testing import CliRunner

import cli
from logit_store import UserError
from teacher_infer import adapt
from teacher_infer.adapt import mask_batch, masked_logits, run_adapt
from teacher_infer.configs import AdaptConfig
from teacher_infer.corpus_records import CorpusText
from teacher_infer.plan import MaskingSpec, PlannedUnit, plan_texts
from teacher_infer.teacher import load_teacher


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare BertModel checkpoint (like the packaged MiniLM): no MLM head weights."""
    path = tmp_path_factory.mktemp("adapt") / "base"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    BertModel(
        BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY)
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_adapt_initialises_a_head_learns_and_saves_a_teacher(base: Path, tmp_path: Path) -> None:
    corpus = write_tagged_corpus(tmp_path / "task.jsonl", 200)
    config = AdaptConfig(
        base=str(base), corpora=(("task", str(corpus)),), out=str(tmp_path / "t"),
        steps=60, batch_size=16, lr=3e-3, max_length=32, device="cpu",
    )  # fmt: skip
    metrics = run_adapt(config)
    teacher = load_teacher(str(tmp_path / "t"), "mlm", "cpu")  # refuses a random head
    assert "cls.predictions.transform.dense.weight" in metrics["initialised_weights"]
    before, after = metrics["before"]["task"], metrics["after"]["task"]
    assert before["positions"] == after["positions"] > 0
    assert after["cross_entropy"] < before["cross_entropy"] - 2.0
    assert after["accuracy"] > before["accuracy"]
    assert (
        json.loads((tmp_path / "t" / "adapt_metrics.json").read_text())["after"] == metrics["after"]
    )
    assert (tmp_path / "t" / "model.safetensors").exists()
    assert teacher.head_at_positions


def test_head_only_keeps_the_encoder_and_cli_prints_metrics(base: Path, tmp_path: Path) -> None:
    corpus = write_tagged_corpus(tmp_path / "task.jsonl", 60)
    args = ["teacher-adapt", "--base", str(base), "--corpus", f"task={corpus}"]
    args += ["--out", str(tmp_path / "h"), "--steps", "5", "--head-only", "--device", "cpu"]
    result = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    words = result.output.split()  # rich wraps the table at the console width
    assert "cross-entropy" in words and "after" in words and "10." in result.output
    old = BertModel.from_pretrained(base).state_dict()
    new = BertModel.from_pretrained(tmp_path / "h").state_dict()
    shared = [name for name in old if not name.startswith("pooler.")]  # MLM models have no pooler
    assert shared and all(torch.equal(old[name], new[name]) for name in shared)


def test_masked_position_loss_equals_full_logit_loss(tmp_path: Path) -> None:
    """Same loss and gradients as Hugging Face's `labels=` loss over all (B, L) logits."""
    model = BertForMaskedLM.from_pretrained(save_tiny_bert_mlm(tmp_path / "m")).train()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (4, 12), generator=gen)
    attention = torch.ones_like(ids)
    attention[1, 8:] = 0
    special = attention == 0
    inputs, labels = mask_batch(ids, special, 0.3, 103, model.config.vocab_size, gen)
    assert (labels != -100).sum() > 2

    def loss_and_grads(split: bool | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks
        if split is None:
            loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
        else:
            logits, gold = masked_logits(
                model, inputs, attention, labels, split, torch.device("cpu")
            )
            loss = torch.nn.functional.cross_entropy(logits, gold)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    reference, ref_grads = loss_and_grads(None)
    for split in (True, False):
        loss, grads = loss_and_grads(split)
        assert loss == pytest.approx(float(reference), rel=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6)


def test_adapt_is_deterministic_for_a_seed(base: Path, tmp_path: Path) -> None:
    corpus = write_tagged_corpus(tmp_path / "task.jsonl", 60)
    weights = []
    for out in ("a", "b"):
        config = AdaptConfig(
            base=str(base), corpora=(("task", str(corpus)),), out=str(tmp_path / out),
            steps=4, batch_size=8, lr=1e-3, max_length=32, device="cpu",
        )  # fmt: skip
        run_adapt(config)
        weights.append(load_file(str(tmp_path / out / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_adapt_streams_past_its_buffer_and_never_trains_on_held_out_texts(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 texts without a split (two stream units; a seeded sample is held out) and 300 with
    a test split (held out from it), a shuffle buffer of 128: training and evaluation run, held-out
    and test texts are never trained on, and one epoch of the stream is every other text."""
    plain = write_tagged_corpus(tmp_path / "plain.jsonl", 5000)
    split = tmp_path / "split.jsonl"
    rows = [
        {"text": f"fly from boston to denver at {i}", "split": "test" if i % 7 == 0 else "train"}
        for i in range(300)
    ]
    split.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tests = {i for i in range(300) if i % 7 == 0}
    held: dict[str, adapt.HeldOut] = {}
    trained: dict[str, set[int]] = {"plain": set(), "split": set()}
    hold_out, training_units = adapt.hold_out, adapt.training_units

    def recording_hold_out(*args: Any) -> adapt.HeldOut:
        held[args[0]] = hold_out(*args)
        return held[args[0]]

    def recording_units(*args: Any) -> Iterator[adapt.TrainingUnit]:
        for unit in training_units(*args):
            trained[unit.corpus] |= set(unit.records.tolist())
            yield unit

    monkeypatch.setattr(adapt, "hold_out", recording_hold_out)
    monkeypatch.setattr(adapt, "training_units", recording_units)
    config = AdaptConfig(
        base=str(base), corpora=(("plain", str(plain)), ("split", str(split))),
        out=str(tmp_path / "t"), steps=40, batch_size=16, lr=3e-3, max_length=32, eval_size=64,
        shuffle_buffer=128, device="cpu",
    )  # fmt: skip
    metrics = run_adapt(config)
    for name in ("plain", "split"):
        before, after = metrics["before"][name], metrics["after"][name]
        assert before["positions"] == after["positions"] > 0
        assert after["cross_entropy"] < before["cross_entropy"]
    assert len(held["plain"].records) == len(held["plain"].planned) == 64
    assert set(held["split"].records.tolist()) == tests  # 43 test texts < eval_size
    assert trained["plain"] and trained["split"]
    assert not trained["plain"] & set(held["plain"].records.tolist())
    assert not trained["split"] & tests

    tokenizer = AutoTokenizer.from_pretrained(base)
    spec = MaskingSpec("mlm", None, 0.15, 0, "masked")

    def plan(name: str, texts: list[CorpusText], records: np.ndarray) -> PlannedUnit:
        return plan_texts(name, texts, records, tokenizer, spec, 32, len(tokenizer))

    epoch = list(itertools.islice(training_units(list(held.values()), 0, plan), 3))  # 3 units
    seen = {
        name: [r for u in epoch if u.corpus == name for r in u.records.tolist()] for name in held
    }
    assert sorted(seen["plain"]) == sorted(set(range(5000)) - set(held["plain"].records.tolist()))
    assert sorted(seen["split"]) == sorted(set(range(300)) - tests)
    assert [len(u.sequences) for u in epoch] == [len(u.records) for u in epoch]


def test_a_corpus_without_training_texts_is_refused(base: Path, tmp_path: Path) -> None:
    """Only test-split texts: held out, none left to train on; one error line, not a hang."""
    corpus = tmp_path / "test_only.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"hi {i}", "split": "test"}) + "\n" for i in range(9))
    )
    config = AdaptConfig(
        base=str(base), corpora=(("t", str(corpus)),), out=str(tmp_path / "t"), steps=3,
        device="cpu",
    )  # fmt: skip
    with pytest.raises(UserError, match="no training texts left"):
        run_adapt(config)
    assert not (tmp_path / "t").exists()

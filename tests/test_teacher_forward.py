"""The teacher forward: MLM head at labelled positions only (vs full logits), and hashes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from teacher_fixtures import TINY, minilm_dir
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    XLMRobertaConfig,
    XLMRobertaForMaskedLM,
)

from logit_store import tokenizer_hash
from teacher_infer.teacher import Teacher, teacher_hash


def _tiny(arch: str, vocab: int) -> Any:
    torch.manual_seed(0)
    if arch == "bert":
        return BertForMaskedLM(BertConfig(vocab_size=vocab, **TINY))
    if arch == "xlmr":
        return XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=vocab, pad_token_id=1, **TINY))
    return DistilBertForMaskedLM(
        DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    )


@pytest.mark.parametrize("arch", ["bert", "xlmr", "distilbert"])
def test_head_at_positions_equals_full_logits(arch: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = _tiny(arch, 1000).eval()
    teacher = Teacher(
        "tiny", model, tokenizer, "mlm", None, torch.device("cpu"), torch.float32, "", "", True
    )
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 1000, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0  # a padded row
    b = torch.tensor([0, 0, 1, 2, 2])
    p = torch.tensor([1, 8, 4, 0, 5])
    part = teacher.logits_at(ids, mask, b, p)
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask).logits[b, p]
    assert part.shape == (5, 1000)
    assert torch.allclose(part, full, atol=1e-5)
    teacher.dtype = torch.bfloat16  # CPU bf16 autocast: close to fp32, same top-1 mostly
    low = teacher.logits_at(ids, mask, b, p).float()
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(low, -1),
        torch.log_softmax(full, -1),
        log_target=True,
        reduction="batchmean",
    )
    assert float(kl) < 0.05


def test_hashes_are_deterministic_and_sensitive() -> None:
    a, b = _tiny("bert", 500), _tiny("bert", 500)
    assert teacher_hash(a) == teacher_hash(b)
    with torch.no_grad():
        b.bert.encoder.layer[1].output.dense.bias[0] += 1e-3
    assert teacher_hash(a) != teacher_hash(b)
    bert_tok = AutoTokenizer.from_pretrained(minilm_dir())
    assert tokenizer_hash(bert_tok) == tokenizer_hash(AutoTokenizer.from_pretrained(minilm_dir()))
    bert_tok.add_tokens(["kdcachetoken"])
    assert tokenizer_hash(bert_tok) != tokenizer_hash(AutoTokenizer.from_pretrained(minilm_dir()))

"""Teacher-side targets against dense references: top-k + tail, sampling, head-at-positions."""

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

from teacher_infer.teacher import (
    Teacher,
    sampled_targets,
    teacher_hash,
    tokenizer_hash,
    topk_targets,
)


def _dense_reference(
    logits: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp64: sorted top-k log-probs and log of the exact mass outside them."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    top, ids = lp.sort(dim=-1, descending=True)
    return ids[:, :k], top[:, :k], torch.logsumexp(top[:, k:], dim=-1)


@pytest.mark.parametrize("peak", [0.0, 12.0, 20.0, 34.0])
def test_topk_and_tail_match_dense_reference(peak: float) -> None:
    """Flat, 0.9999-mass, ~1e-6-tail and ~1e-12-tail regimes: the tail stays exact in log space."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 3000, generator=gen)
    logits[:, :8] += peak  # the top 8 hold almost all the mass when peak is large
    ids, logprobs, tail = topk_targets(logits, 8)
    ref_ids, ref_lp, ref_tail = _dense_reference(logits, 8)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(logprobs.double(), ref_lp, atol=1e-5)
    assert torch.allclose(tail.double(), ref_tail, atol=2e-5, rtol=1e-5)
    if peak >= 20.0:  # the naive 1 - sum(top-k) in fp32 is far off here; we are not
        naive = torch.log1p(-logprobs.exp().sum(-1))
        assert not torch.isclose(naive.double(), ref_tail, atol=0.1).all()


def test_topk_with_k_at_least_classes_has_empty_tail() -> None:
    logits = torch.randn(5, 4)
    ids, logprobs, tail = topk_targets(logits, 10)
    assert ids.shape == (5, 4)
    assert torch.isneginf(tail).all()
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(5))


def test_sampled_targets_are_unique_counts_and_unbiased() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, generator=gen) * 2
    ids, counts = sampled_targets(logits, 20000, torch.Generator().manual_seed(5))
    assert ids.shape == counts.shape == (3, 10)
    assert (counts.sum(-1) == 20000).all()
    probs = torch.softmax(logits, -1)
    est = torch.zeros(3, 10).scatter_add_(1, ids, counts.float()) / 20000
    assert (est - probs).abs().max() < 0.02
    ids2, counts2 = sampled_targets(logits, 50, torch.Generator().manual_seed(5))
    ids3, counts3 = sampled_targets(logits, 50, torch.Generator().manual_seed(5))
    assert torch.equal(ids2, ids3) and torch.equal(counts2, counts3)
    for row_ids, row_counts in zip(ids2, counts2, strict=True):
        used = row_ids[row_counts > 0]
        assert len(set(used.tolist())) == len(used)
        assert (row_ids[row_counts == 0] == 0).all()


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

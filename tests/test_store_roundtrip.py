"""Round-trips of both encodings through the codec, and the exactness of the stored targets
(round trips through real stores on every backend: test_store_backends.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import VOCAB, numpy_targets, synthetic_meta, zipf_logits

from logit_store import SampledTargets, SequenceInfo, TopKTargets, target_codec
from logit_store.encodings import bucket_kl, log1mexp, sampled_targets, topk_targets
from logit_store.fidelity import fidelity, sort_by_id


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(0, 30),
    k=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    value_dtype=st.sampled_from(["q8", "fp16"]),
    spread=st.floats(0.1, 8.0),
)
def test_topk_codec_roundtrip(
    rows: int, k: int, seed: int, value_dtype: str, spread: float
) -> None:
    meta = synthetic_meta("topk", k=k, value_dtype=value_dtype)
    logits = zipf_logits(rows, VOCAB, torch.Generator().manual_seed(seed), spread)
    exact = numpy_targets(sort_by_id(topk_targets(logits, k)))
    enc = target_codec.encode(meta, exact)
    dec = meta.target_encoding.decode(
        target_codec.ids_from_gaps(enc["target_ids"], enc["id_table"]), enc
    )
    assert isinstance(dec, TopKTargets)
    # rows come back in id-table order: compare as {id: value} per row
    order = np.argsort(dec.ids, axis=1)
    dec = TopKTargets(
        np.take_along_axis(dec.ids, order, 1),
        logprobs=np.take_along_axis(dec.logprobs, order, 1),
        tail_logmass=dec.tail_logmass,
    )
    np.testing.assert_array_equal(dec.ids, exact.ids)
    np.testing.assert_array_equal(dec.tail_logmass, exact.tail_logmass)
    step = meta.q8_range / 255 if value_dtype == "q8" else 0.0
    clamped = np.maximum(exact.logprobs, -meta.q8_range) if value_dtype == "q8" else exact.logprobs
    tol = step / 2 + 1e-6 if value_dtype == "q8" else np.abs(exact.logprobs) * 1e-3 + 1e-6
    assert (np.abs(dec.logprobs - clamped) <= tol).all()
    if rows and value_dtype == "q8":  # 8-bit log-probs keep the quantization-only KL small
        assert float(bucket_kl(exact, dec).max()) <= 1e-3


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(0, 30),
    n=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    spread=st.floats(0.1, 8.0),
)
def test_sampled_codec_roundtrip_is_lossless(rows: int, n: int, seed: int, spread: float) -> None:
    meta = synthetic_meta("sampled", n_samples=n)
    logits = zipf_logits(rows, VOCAB, torch.Generator().manual_seed(seed), spread)
    exact = numpy_targets(sampled_targets(logits, n, torch.Generator().manual_seed(seed)))
    enc = target_codec.encode(meta, exact)
    dec = meta.target_encoding.decode(
        target_codec.ids_from_gaps(enc["target_ids"], enc["id_table"]), enc
    )
    assert isinstance(dec, SampledTargets)

    def dense(t: SampledTargets) -> np.ndarray:
        rows = [
            np.bincount(i, weights=c, minlength=VOCAB) for i, c in zip(t.ids, t.counts, strict=True)
        ]
        return np.stack(rows) if rows else np.zeros((0, VOCAB))

    np.testing.assert_array_equal(dense(dec), dense(exact))
    assert (dec.counts.sum(axis=1) == n).all()


def test_topk_with_k_equal_vocab_reproduces_the_dense_distribution() -> None:
    logits = zipf_logits(16, VOCAB, torch.Generator().manual_seed(3))
    exact = topk_targets(logits, VOCAB)
    assert torch.isinf(exact.tail_logmass).all()
    report = fidelity(logits, exact)
    assert np.abs(report.forward_kl).max() < 1e-6 and report.jsd.max() < 1e-9  # fp32 log-probs
    # the KD cross-entropy of a student against the stored targets equals the dense one
    student = torch.log_softmax(
        torch.randn(16, VOCAB, generator=torch.Generator().manual_seed(4)), -1
    )
    dense_ce = -(torch.softmax(logits, -1) * student).sum(-1)
    sparse_ce = -(exact.logprobs.exp() * student.gather(1, exact.ids)).sum(-1)
    torch.testing.assert_close(sparse_ce, dense_ce, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tail_mass", [1e-2, 1e-4, 1e-6, 1e-9])
def test_tail_logmass_is_exact_when_topk_hold_almost_all_mass(tail_mass: float) -> None:
    vocab, k = 1000, 4
    head = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64) * (1 - tail_mass))
    rest = torch.full((vocab - k,), math.log(tail_mass / (vocab - k)), dtype=torch.float64)
    logits = torch.cat([head, rest]).float().unsqueeze(0)
    t = topk_targets(logits, k)
    exact = torch.log1p(-torch.softmax(logits.double(), -1)[0, :k].sum())
    assert abs(float(t.tail_logmass[0]) - float(exact)) < 1e-4 * max(1.0, abs(float(exact)))
    assert abs(float(t.tail_logmass[0]) - math.log(tail_mass)) < 1e-3


def test_log1mexp_matches_float64_reference() -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 120
    x = -torch.logspace(-12, 2, 200, dtype=torch.float64)
    ref = torch.tensor(
        [float(mpmath.log(1 - mpmath.exp(mpmath.mpf(float(v))))) for v in x], dtype=torch.float64
    )
    torch.testing.assert_close(log1mexp(x), ref, rtol=1e-12, atol=0.0)


_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    ident=st.one_of(st.none(), _TEXT),
    line=st.one_of(st.none(), st.integers(-(2**70), 2**70), st.booleans()),
    split=_TEXT,
    domain=st.one_of(st.none(), _TEXT),
    tags=st.one_of(st.none(), st.lists(_TEXT, max_size=3)),
    text=_TEXT,
)
def test_a_record_is_stored_as_its_json_dump(
    ident: str | None, line: int | None, split: str, domain: str | None, tags: list[str] | None,
    text: str,
) -> None:  # fmt: skip
    """`SequenceInfo.to_json` (a template for unlabelled records) equals `json.dumps` exactly,
    surrogates, control characters and big or boolean line numbers included."""
    record = SequenceInfo(id=ident, line=line, split=split, domain=domain, tags=tags, text=text)
    stored = record.to_json()
    assert stored == json.dumps(record.to_dict(), ensure_ascii=False)
    assert SequenceInfo.from_json(stored) == record

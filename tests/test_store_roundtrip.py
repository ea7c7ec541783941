"""Round-trips of both encodings through the codec and through real stores on disk/memory."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import (
    VOCAB,
    numpy_targets,
    synthetic_meta,
    synthetic_plans,
    unit_data,
    write_synthetic,
    zipf_logits,
)

from logit_store import SampledTargets, TopKTargets, consolidate_store, open_store, target_codec
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


@pytest.mark.parametrize("encoding", ["topk", "sampled"])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_store_roundtrip_records_and_batches(tmp_path, encoding: str, where: str) -> None:
    url = (
        str(tmp_path / "s.zarr")
        if where == "local"
        else f"memory://kdcache-{uuid.uuid4().hex}.zarr"
    )
    write_synthetic(url, encoding)
    store = open_store(url, expected={"tokenizer_hash": "a" * 64, "encoding": encoding})
    assert store.corpora == ["generic", "task"] and store.complete
    meta, plans = synthetic_meta(encoding), {p.name: p for p in synthetic_plans()}
    task = store["task"]
    assert len(task) == len(plans["task"].lengths)
    expected = unit_data(meta, plans["task"], 8, 16)  # unit 1
    r = task[9]
    n0 = int(plans["task"].lengths[8])
    np.testing.assert_array_equal(r.input_ids, expected.input_ids[n0 : n0 + len(r.input_ids)])
    info = r.info
    assert info.split == "train" and info.id == "task-9" and info.domain == "b"
    assert info.text == "sentence 9"
    batch = task.batch([9, 0, 33])
    assert batch.input_ids.shape[0] == 3 and batch.attention_mask.sum(1).tolist() == [
        int(plans["task"].lengths[i]) for i in (9, 0, 33)
    ]
    rows = batch.batch_index == 0
    np.testing.assert_array_equal(batch.targets.ids[rows].numpy()[:, : r.ids.shape[1]], r.ids)
    exact = unit_data(meta, plans["task"], 8, 16).targets  # what the writer was given for unit 1
    first = int(plans["task"].n_positions[8])
    want = sorted(
        zip(
            exact.ids[first].tolist(),
            getattr(exact, "counts" if encoding == "sampled" else "logprobs")[first].tolist(),
            strict=True,
        )
    )
    got_vals = r.counts if encoding == "sampled" else r.logprobs
    got = sorted(
        (i, v)
        for i, v, keep in zip(
            r.ids[0].tolist(), got_vals[0].tolist(), (got_vals[0] != 0).tolist(), strict=True
        )
        if keep or encoding == "topk"
    )
    assert [i for i, _ in got] == [i for i, v in want if encoding == "topk" or v > 0]
    assert np.allclose(
        [v for _, v in got],
        [v for _, v in want if encoding == "topk" or v > 0],
        atol=16 / 255 / 2 + 1e-6,
    )
    seen = batch.teacher_input_ids[batch.batch_index, batch.positions]
    assert torch.equal(seen, torch.full_like(seen, int(meta.mask_token_id or 0)))
    assert torch.equal(batch.labels, batch.input_ids[batch.batch_index, batch.positions])
    assert list(task.split_array()[:6]) == ["test", "train", "train", "train", "train", "test"]
    assert task.column("domain")[:3] == ["a", "b", "a"]
    assert task.unit_ranges()[0] == (0, 8)


def test_summary_and_fresh_units_read_alike(tmp_path: Path) -> None:
    """Counts, lengths and splits are the same whether a reader gets them from the done
    records, from the consolidated summary, or from both (units written after it)."""
    url = str(tmp_path / "s.zarr")
    write_synthetic(url, units=[0, 1, 2])
    before = open_store(url)["task"]
    consolidate_store(url)
    write_synthetic(url)  # the remaining units, not consolidated yet
    mixed = open_store(url)["task"]
    assert mixed.summary.covers(mixed.done_units).tolist() == [True] * 3 + [False] * 2
    consolidate_store(url)
    full = open_store(url)["task"]
    assert full.summary.covers(full.done_units).all()
    plan = synthetic_plans()[1]
    for corpus in (mixed, full):
        assert len(corpus) == 40 and corpus.info["counts"]["tokens"] == int(plan.lengths.sum())
        assert np.array_equal(corpus.lengths(), plan.lengths)
        splits = corpus.split_array()
        assert (splits == "test").sum() == 8
        assert np.array_equal(corpus.split_mask(("train",)), splits == "train")
        assert corpus.info["label_names"] == {"domain": ["a", "b"]}
    assert np.array_equal(before.lengths(), plan.lengths[:24])

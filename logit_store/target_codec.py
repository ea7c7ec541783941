"""Compact on-disk form of `SparseTargets` (applied before zarr's byte codecs).

Per labelled position (one row):

* ids are entropy-coded in two steps. Each unit gets an id table: its distinct target ids,
  most frequent first (a teacher's top-k keep returning the same few thousand tokens). Every id
  becomes its rank in that table; a row's ranks are sorted ascending and delta-coded (first
  rank absolute, then gaps) as uint32. Frequent ids get small ranks, sorted ranks small gaps,
  and blosc bit-shuffle + zstd then stores about the entropy of those gaps instead of
  ceil(log2 V) bits per id (V = 250,002, k = 32: ~25 B of ids per position instead of ~72).
  Readers therefore get a row's ids in table order, not by probability.
* top-k log-probs: ``q8`` maps [-q8_range, 0] linearly onto 0..255 (step q8_range / 255, at most
  half a step of error per value; log-probs below -q8_range are clamped), or plain ``fp16``.
  ``tail_logmass`` stays float32: it is the one number that keeps the student calibrated.
* sampled counts: uint8 when N <= 255, else uint16. Padding columns have gap 0 and count 0.
"""

from __future__ import annotations

import numpy as np

from logit_store.meta import StoreMeta
from logit_store.records import SparseTargets


def value_dtype(meta: StoreMeta) -> np.dtype:
    if meta.encoding == "sampled":
        return np.dtype(np.uint8 if meta.n_samples <= 255 else np.uint16)
    return np.dtype(np.uint8 if meta.value_dtype == "q8" else np.float16)


def _q8_table(meta: StoreMeta) -> np.ndarray:
    return (-np.arange(256, dtype=np.float32) * np.float32(meta.q8_range / 255.0)).astype(
        np.float32
    )


def encode(meta: StoreMeta, targets: SparseTargets) -> dict[str, np.ndarray]:
    """SparseTargets (numpy, P rows) -> `ids` (rank gaps), `table`, `values`, top-k `tail`."""
    ids = np.asarray(targets.ids, dtype=np.int64)
    width = meta.width
    if ids.ndim != 2 or ids.shape[1] > width:
        raise ValueError(f"targets have shape {ids.shape}, store expects (P, <= {width})")
    if len(ids) and (ids.min() < 0 or ids.max() >= meta.num_classes):
        raise ValueError(f"target ids outside [0, {meta.num_classes})")
    raw = np.asarray(targets.logprobs if meta.encoding == "topk" else targets.counts)
    if ids.shape[1] < width:  # sampled rows with fewer unique ids than N: pad with count 0
        pad = width - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)))
        raw = np.pad(raw, ((0, 0), (0, pad)))
    real = raw > 0 if meta.encoding == "sampled" else np.ones(ids.shape, dtype=bool)
    table, ranks = _rank_by_frequency(ids, real)
    # padding columns (sampled, count 0) sort last and repeat the row's last rank: gap 0
    key = np.where(real, ranks, len(table))
    order = np.argsort(key, axis=1, kind="stable")
    ranks = np.take_along_axis(np.where(real, ranks, 0), order, axis=1)
    raw = np.take_along_axis(raw, order, axis=1)
    ranks = np.maximum.accumulate(ranks, axis=1)
    gaps = np.diff(ranks, axis=1, prepend=0).astype(np.uint32)
    out = {"ids": gaps, "table": table.astype(np.uint32)}
    if meta.encoding == "topk":
        if meta.value_dtype == "q8":
            q = np.rint(-raw.astype(np.float64) * (255.0 / meta.q8_range))
            out["values"] = np.clip(q, 0, 255).astype(np.uint8)
        else:
            out["values"] = raw.astype(np.float16)
        out["tail"] = np.asarray(targets.tail_logmass, dtype=np.float32)
    else:
        counts = raw.astype(np.int64)
        if (counts.sum(axis=1) != meta.n_samples).any():
            raise ValueError(f"sampled counts must sum to N = {meta.n_samples} in every row")
        out["values"] = counts.astype(value_dtype(meta))
    return out


def _rank_by_frequency(ids: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table of distinct ids, most frequent first; rank of every entry of `ids` in it)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(ids.shape, dtype=np.int64)
    distinct, inverse, counts = np.unique(ids[real], return_inverse=True, return_counts=True)
    by_frequency = np.argsort(-counts, kind="stable")
    rank_of = np.empty(len(distinct), dtype=np.int64)
    rank_of[by_frequency] = np.arange(len(distinct))
    ranks = np.zeros(ids.shape, dtype=np.int64)
    ranks[real] = rank_of[inverse]
    return distinct[by_frequency], ranks


def ids_from_gaps(gaps: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Stored rank gaps (P, W) + the unit's id table -> absolute ids (P, W) int64."""
    ranks = np.cumsum(gaps, axis=1, dtype=np.int64)
    if ranks.size == 0:
        return ranks
    return table.astype(np.int64)[ranks]


def decode(
    meta: StoreMeta, full_ids: np.ndarray, values: np.ndarray, tail: np.ndarray | None
) -> SparseTargets:
    """Absolute ids (see `ids_from_gaps`), stored values and tail -> SparseTargets (numpy)."""
    if meta.encoding == "topk":
        if meta.value_dtype == "q8":
            logprobs = _q8_table(meta)[values]
        else:
            logprobs = values.astype(np.float32)
        assert tail is not None
        return SparseTargets(
            "topk", full_ids, logprobs=logprobs, tail_logmass=tail.astype(np.float32)
        )
    counts = values.astype(np.float32)
    if len(counts):
        used = int((counts > 0).sum(axis=1).max())
        full_ids, counts = full_ids[:, :used], counts[:, :used]
    full_ids = np.where(counts > 0, full_ids, 0)
    return SparseTargets("sampled", full_ids, counts=counts, n_samples=meta.n_samples)

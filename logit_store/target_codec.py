"""Compact on-disk form of `SparseTargets` (applied before zarr's byte codecs).

Per labelled position (one row), the ids are coded the same way for every encoding, in two
steps. Each unit gets an id table: its distinct target ids, most frequent first (a teacher's
top-k keep returning the same few thousand tokens). Every id becomes its rank in that table; a
row's ranks are sorted ascending and delta-coded (first rank absolute, then gaps) as uint32.
Frequent ids get small ranks, sorted ranks small gaps, and blosc bit-shuffle + zstd then stores
about the entropy of those gaps instead of ceil(log2 V) bits per id (V = 250,002, k = 32: ~25 B
of ids per position instead of ~72). Readers therefore get a row's ids in table order, not by
probability. The encoding's own arrays (values, tail mass) are stored in that order too, by
the encoding (`logit_store.encodings`). Padding columns (sampled rows with fewer unique ids
than W) sort last with gap 0.
"""

from __future__ import annotations

import numpy as np

from logit_store.encodings import SparseTargets
from logit_store.meta import StoreMeta


def encode(meta: StoreMeta, targets: SparseTargets) -> dict[str, np.ndarray]:
    """SparseTargets (numpy, P rows) -> every stored target array by name: `target_ids` (rank
    gaps), `id_table` and the encoding's arrays."""
    ids = np.asarray(targets.ids, dtype=np.int64)
    width = meta.width
    if ids.ndim != 2 or ids.shape[1] > width:
        raise ValueError(f"targets have shape {ids.shape}, store expects (P, <= {width})")
    if len(ids) and (ids.min() < 0 or ids.max() >= meta.num_classes):
        raise ValueError(f"target ids outside [0, {meta.num_classes})")
    pad = width - ids.shape[1]  # sampled rows with fewer unique ids than N: padding columns
    targets = targets.map(lambda x: np.pad(x, ((0, 0), (0, pad))) if np.ndim(x) == 2 else x)
    ids = np.asarray(targets.ids, dtype=np.int64)
    real = ~targets.padding()
    table, ranks = _rank_by_frequency(ids, real)
    # padding columns sort last and repeat the row's last rank: gap 0
    key = np.where(real, ranks, len(table))
    order = np.argsort(key, axis=1, kind="stable")
    ranks = np.take_along_axis(np.where(real, ranks, 0), order, axis=1)
    ranks = np.maximum.accumulate(ranks, axis=1)
    gaps = np.diff(ranks, axis=1, prepend=0).astype(np.uint32)
    stored = targets.map(lambda x: np.take_along_axis(x, order, axis=1) if x.ndim == 2 else x)
    return {
        "target_ids": gaps,
        "id_table": table.astype(np.uint32),
        **meta.target_encoding.encode(stored),
    }


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

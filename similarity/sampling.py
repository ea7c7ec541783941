"""Seeded, order-invariant sampling and bootstrap resampling.

Every subset the report uses (the split halves of the task, the matched generic subset, the
supporting-metric subsets) is chosen by a *content key*: a seeded 64-bit hash of each vector's
float bits. Taking the rows with the smallest keys is a uniform random sample (bottom-k
sampling) that does not depend on row order or on where a row sits in a stream, so a report is
invariant to shuffling its inputs, and the generic side can be sampled while it streams by.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 8192


def content_keys(vectors: np.ndarray, seed: int) -> np.ndarray:
    """(n,) uint64 keys: h = Σ_j bits(x_j)·m_j mod 2^64 (m_j seeded odd), then splitmix64."""
    bits = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32)
    rng = np.random.default_rng(seed)
    mult = rng.integers(1, 2**62, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    keys = np.empty(len(bits), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(bits), _CHUNK):
            h = (bits[start : start + _CHUNK].astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(31)
            h *= _MIX1
            h ^= h >> np.uint64(29)
            h *= _MIX2
            h ^= h >> np.uint64(32)
            keys[start : start + _CHUNK] = h
    return keys


def canonical_order(vectors: np.ndarray, seed: int) -> np.ndarray:
    """Permutation sorting rows by content key: the order every computation runs in."""
    return np.argsort(content_keys(vectors, seed), kind="stable")


class BottomKSample:
    """The ``size`` rows with the smallest content keys of a stream of blocks (a uniform sample).

    `offer(block, offset)` sees rows ``offset ..``; `rows()` returns (global positions, vectors)
    ordered by key. Memory: O(size · d).
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.keys = np.empty(0, dtype=np.uint64)
        self.positions = np.empty(0, dtype=np.int64)
        self.vectors: np.ndarray | None = None

    def offer(self, block: np.ndarray, offset: int) -> None:
        keys = np.concatenate([self.keys, content_keys(block, self.seed)])
        positions = np.concatenate([self.positions, offset + np.arange(len(block))])
        vectors = block if self.vectors is None else np.concatenate([self.vectors, block])
        keep = np.argsort(keys, kind="stable")[: self.size]
        self.keys, self.positions, self.vectors = keys[keep], positions[keep], vectors[keep]

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.vectors is not None, "no block was offered"
        return self.positions, self.vectors


def bootstrap_indices(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Yield the identity (the point estimate) then ``replicates`` seeded resamples of range(n)."""
    yield np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        yield rng.integers(0, n, size=n)


def weighted_group_means(
    values: np.ndarray, counts: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """(1 + n_groups,) the ``counts``-weighted mean of ``values`` overall then within each group
    id (nan where the weights are zero): a bootstrap resample's mean without gathering it."""
    weighted = counts * values
    sums = np.concatenate(
        [[weighted.sum()], np.bincount(groups, weights=weighted, minlength=n_groups)]
    )
    totals = np.concatenate(
        [[counts.sum()], np.bincount(groups, weights=counts, minlength=n_groups)]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, sums / totals, np.nan)

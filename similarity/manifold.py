"""Nearest-neighbour manifold metrics of a task set X covered by another set Y (Naeem et al. 2020).

With unit vectors, cosine similarity s = x·y and the k-NN ball of task point x_i is
B_i = {y : x_i·y >= r_i}, r_i = similarity of x_i to its k-th nearest *other* task point.

* coverage = (1/N) Σ_i 1[∃ j: y_j ∈ B_i]          (share of task neighbourhoods that Y reaches)
* density  = (1/(k·M)) Σ_i |{j : y_j ∈ B_i}|        (≈ 1 when Y is distributed like X)
* nn_cosine_i = max_j x_i·y_j                       (top-1 neighbour similarity per task point)

All three decompose over task points, so a group's value is the mean over its points (density_g =
N·mean_{i∈g} c_i / (k·M), which is also ≈ 1 when Y matches X around that group), and a bootstrap
over task points only re-weights per-point arrays. `ManifoldScan` computes the per-point arrays
while Y streams by in blocks: X → block top-k for coverage / nn_cosine, block → X search for the
ball counts c_i (how many balls contain each y_j: a reverse k-NN count, searched with k' = 4k
neighbours and doubled for rows whose k'-th neighbour is still inside its ball, up to MAX_BALLS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from similarity.knn import InnerProductIndex, StreamedTopK

MAX_BALLS = 512
"""Largest number of task balls counted for one other-side point before it is reported truncated."""

TOLERANCE = 1e-5
"""Float32 slack for "inside the ball" (an exact copy of x_i has similarity 1 ± 1e-7 to it)."""


@dataclass(frozen=True)
class ManifoldPoints:
    """Per-task-point results of X against Y.

    radius: (N,) r_i; nn_cosine: (N,) top-1 similarity to Y; nn_index: (N,) its row in Y;
    covered: (N,) bool; count: (N,) c_i; n_other: M; truncated: Y points whose count hit MAX_BALLS;
    recall: recall@k of the X → Y search (1.0 exact).
    """

    radius: np.ndarray
    nn_cosine: np.ndarray
    nn_index: np.ndarray
    covered: np.ndarray
    count: np.ndarray
    n_other: int
    k: int
    truncated: int
    recall: float

    def density_scale(self) -> float:
        """Factor turning mean(c_i) over any subset into density: N / (k·M)."""
        return len(self.count) / (self.k * self.n_other)


def task_radii(index: InnerProductIndex, k: int) -> np.ndarray:
    """(N,) similarity to the k-th nearest other point: column k of the (k+1)-NN of X in X."""
    sims, _ = index.search(index.vectors, k + 1)
    return sims[:, min(k, sims.shape[1] - 1)]


class ManifoldScan:
    """Accumulates `ManifoldPoints` of a fixed task set against blocks of the other set."""

    def __init__(
        self,
        task_index: InnerProductIndex,
        radius: np.ndarray,
        k: int,
        *,
        top: int,
        approximate: bool,
        nprobe: int,
        min_recall: float,
        use_gpu: bool,
    ):
        self.task_index = task_index
        self.radius = radius
        self.k = k
        self.topk = StreamedTopK(
            task_index.vectors,
            top,
            approximate=approximate,
            nprobe=nprobe,
            min_recall=min_recall,
            use_gpu=use_gpu,
        )
        self.count = np.zeros(len(radius), dtype=np.int64)
        self.truncated = 0

    def add_block(self, block: np.ndarray, offset: int) -> None:
        self.topk.add_block(block, offset)
        n_task = len(self.radius)
        rows = np.arange(len(block))
        width = min(4 * self.k, n_task)
        while len(rows):
            sims, ids = self.task_index.search(block[rows], width)
            inside = (ids >= 0) & (sims >= self.radius[np.maximum(ids, 0)] - TOLERANCE)
            saturated = inside[:, -1] & (width < n_task)
            done = ~saturated | (width >= MAX_BALLS)
            np.add.at(self.count, ids[done][inside[done]], 1)
            self.truncated += int((saturated & (width >= MAX_BALLS)).sum())
            rows, width = rows[~done], min(2 * width, n_task)

    def finish(self) -> ManifoldPoints:
        sims, ids = self.topk.result()
        nn_cosine, nn_index = sims[:, 0], ids[:, 0]
        return ManifoldPoints(
            radius=self.radius,
            nn_cosine=nn_cosine,
            nn_index=nn_index,
            covered=nn_cosine >= self.radius - TOLERANCE,
            count=self.count,
            n_other=self.topk.n,
            k=self.k,
            truncated=self.truncated,
            recall=self.topk.recall(),
        )


def scan_in_memory(
    task_index: InnerProductIndex,
    radius: np.ndarray,
    other: np.ndarray,
    k: int,
    *,
    block_size: int,
    exact_max: int,
    nprobe: int,
    min_recall: float,
    use_gpu: bool,
) -> ManifoldPoints:
    """`ManifoldScan` over an in-memory other set, fed in blocks."""
    scan = ManifoldScan(
        task_index,
        radius,
        k,
        top=k,
        approximate=len(other) > exact_max,
        nprobe=nprobe,
        min_recall=min_recall,
        use_gpu=use_gpu,
    )
    for start in range(0, len(other), block_size):
        scan.add_block(other[start : start + block_size], start)
    return scan.finish()


def _sorted_quantiles(ordered: np.ndarray, cum: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Quantiles (numpy's default linear method) of the multiset with ``ordered`` values repeated
    by counts whose inclusive cumulative sum is ``cum``: order statistic j sits at the first
    position whose cum exceeds j."""
    h = qs * (cum[-1] - 1)
    lo = np.floor(h)
    below = ordered[np.searchsorted(cum, lo, side="right")]
    above = ordered[np.searchsorted(cum, np.minimum(lo + 1, cum[-1] - 1), side="right")]
    return below + (h - lo) * (above - below)


class GroupQuantiles:
    """Quantiles of fixed per-point ``values`` overall and per group under bootstrap resamples.

    A resample is given as a count per point (`np.bincount` of its indices); values are sorted
    once (overall, and by group then value), so each resample costs two cumulative sums instead
    of sorting (or partitioning) the resampled values again.
    """

    def __init__(self, values: np.ndarray, groups: np.ndarray, n_groups: int):
        self.by_value = np.argsort(values, kind="stable")
        self.by_group = np.lexsort((values, groups))
        self.ordered, self.grouped = values[self.by_value], values[self.by_group]
        self.bounds = np.searchsorted(groups[self.by_group], np.arange(n_groups + 1))
        self.n_groups = n_groups

    def __call__(self, counts: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
        """(len(qs), 1 + n_groups) quantiles overall then per group (nan where a group is empty)."""
        q = np.asarray(qs)
        out = np.full((len(q), 1 + self.n_groups), np.nan)
        out[:, 0] = _sorted_quantiles(self.ordered, np.cumsum(counts[self.by_value]), q)
        cum = np.cumsum(counts[self.by_group])
        for g in range(self.n_groups):
            lo, hi = self.bounds[g], self.bounds[g + 1]
            segment = cum[lo:hi] - (cum[lo - 1] if lo else 0)
            if hi > lo and segment[-1] > 0:
                out[:, 1 + g] = _sorted_quantiles(self.grouped[lo:hi], segment, q)
        return out

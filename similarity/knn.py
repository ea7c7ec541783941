"""FAISS inner-product search on L2-normalised vectors (cosine similarity = inner product).

Two shapes of search cover every metric:

* `InnerProductIndex`: an index over one in-memory set (the task side, a reference set);
  exact `IndexFlatIP` up to ``exact_max`` vectors, else `IndexIVFFlat` (nlist ≈ 2·√n, trained on
  a seeded random sample).
* `StreamedTopK`: the top-k of fixed queries (the task side) over a database that arrives in
  blocks (the generic side). Each block is indexed, searched and dropped, and results are merged
  with `faiss.ResultHeap`, so memory is O(block · d + queries · k) whatever the generic size.
  Above ``exact_max`` generic vectors, every block goes into one IVF index whose coarse quantizer
  is trained once on the first block (a random sample: the sample order is shuffled), and the
  queries' coarse assignments are computed once and reused (`search_preassigned`).

Approximate search is calibrated, not guessed: on the first search (the first block), RECALL_QUERIES
sampled queries are searched exactly and with IVF at nprobe = ``nprobe``, 2·nprobe, ... until their
recall@k reaches ``min_recall`` (or every list is visited); that nprobe serves the rest, and the
recall on the sampled queries is reported.

faiss-gpu is used for exact search when installed and a GPU is visible; thread count is always
set explicitly with `faiss.omp_set_num_threads`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

TRAIN_PER_LIST = 40
"""k-means training points per IVF list (FAISS asks for at least 39)."""
RECALL_QUERIES = 256
"""Queries sampled for the recall@k check of an approximate index."""


def configure_threads(threads: int) -> None:
    """Pin FAISS's OpenMP pool to ``threads`` (it defaults to every core of the machine)."""
    faiss.omp_set_num_threads(threads)


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def _nlist(n: int) -> int:
    """IVF lists: ≈ 2·√n, at least TRAIN_PER_LIST training points each."""
    return int(min(max(16, 2 * math.sqrt(n)), n // TRAIN_PER_LIST))


def calibrate_nprobe(
    search_ids: Callable[[int], np.ndarray],
    exact_ids: np.ndarray,
    start: int,
    nlist: int,
    min_recall: float,
) -> tuple[int, float]:
    """Smallest nprobe in start, 2·start, ... (capped at nlist) whose recall reaches min_recall.

    ``search_ids(nprobe)`` returns the approximate ids of the sampled queries, (q, k).
    """
    nprobe = min(start, nlist)
    while True:
        recall = _recall(search_ids(nprobe), exact_ids)
        if recall >= min_recall or nprobe >= nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, nlist)


def _flat(d: int, use_gpu: bool) -> faiss.Index:
    index = faiss.IndexFlatIP(d)
    if use_gpu and gpu_count() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def _recall(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean |approx ∩ exact| / k over queries (both (q, k))."""
    hits = [
        len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx_ids, exact_ids, strict=True)
    ]
    return float(np.mean(hits)) / exact_ids.shape[1]


class InnerProductIndex:
    """Searchable set of ``n`` unit vectors (n, d) float32; `search` returns (sims, ids), (q, k).

    The first search of an IVF index calibrates its nprobe (see the module docstring).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        exact_max: int,
        nprobe: int,
        min_recall: float,
        seed: int,
        use_gpu: bool,
    ):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = self.vectors.shape
        self.exact = n <= exact_max
        self.index: Any
        if self.exact:
            self.index = _flat(d, use_gpu)
        else:
            nlist = _nlist(n)
            rng = np.random.default_rng(seed)
            train = self.vectors[rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False)]
            self.index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT
            )
            self.index.train(train)
        self.index.add(self.vectors)
        self.nprobe, self.min_recall = nprobe, min_recall
        self.recall: float | None = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.vectors.shape[0])
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.exact and self.recall is None:
            self._calibrate(queries, k)
        return self.index.search(queries, k)

    def _calibrate(self, queries: np.ndarray, k: int) -> None:
        rng = np.random.default_rng(len(queries))
        check = queries[
            rng.choice(len(queries), size=min(len(queries), RECALL_QUERIES), replace=False)
        ]
        exact = faiss.IndexFlatIP(self.vectors.shape[1])
        exact.add(self.vectors)

        def search_ids(nprobe: int) -> np.ndarray:
            self.index.nprobe = nprobe
            return self.index.search(check, k)[1]

        self.index.nprobe, self.recall = calibrate_nprobe(
            search_ids, exact.search(check, k)[1], self.nprobe, self.index.nlist, self.min_recall
        )

    def describe(self) -> dict[str, object]:
        if self.exact:
            return {"type": "IndexFlatIP", "n": int(self.vectors.shape[0]), "recall": 1.0}
        return {
            "type": "IndexIVFFlat",
            "n": int(self.vectors.shape[0]),
            "nlist": int(self.index.nlist),
            "nprobe": int(self.index.nprobe),
            "recall": self.recall,
        }


class StreamedTopK:
    """Top-k inner products of fixed ``queries`` (q, d) over a database fed block by block.

    `add_block(block, offset)` takes database rows ``offset .. offset+len(block)``; `result()`
    returns (sims, ids), (q, k), sorted by decreasing similarity, ids global.
    ``approximate``: use one IVF index (see module docstring) rather than exact block search.
    """

    def __init__(
        self,
        queries: np.ndarray,
        k: int,
        *,
        approximate: bool,
        nprobe: int,
        min_recall: float,
        use_gpu: bool,
    ):
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.d = self.queries.shape[1]
        self.approximate = approximate
        self.nprobe, self.min_recall = nprobe, min_recall
        self.use_gpu = use_gpu
        self.heap = faiss.ResultHeap(len(self.queries), k, keep_max=True)
        self.ivf: Any = None
        self.coarse: tuple[np.ndarray, np.ndarray] | None = None
        rng = np.random.default_rng(0)
        self.check = rng.choice(
            len(self.queries), size=min(len(self.queries), RECALL_QUERIES), replace=False
        )
        self.check_heap = faiss.ResultHeap(len(self.check), k, keep_max=True)
        self.n = 0
        self.finished = False

    def _train(self, block: np.ndarray, exact_check_ids: np.ndarray, k: int) -> None:
        """Train the IVF on the first block, calibrate nprobe on it, assign all queries once."""
        nlist = _nlist(len(block))
        quantizer = faiss.IndexFlatIP(self.d)
        ivf = faiss.IndexIVFFlat(quantizer, self.d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(block[: TRAIN_PER_LIST * nlist])
        ivf.add(block)
        check = self.queries[self.check]

        def search_ids(nprobe: int) -> np.ndarray:
            ivf.nprobe = nprobe
            return ivf.search(check, k)[1]

        ivf.nprobe, _ = calibrate_nprobe(
            search_ids, exact_check_ids, self.nprobe, nlist, self.min_recall
        )
        coarse_sims, coarse_ids = quantizer.search(self.queries, ivf.nprobe)
        self.ivf, self.coarse = ivf, (coarse_ids, coarse_sims)

    def add_block(self, block: np.ndarray, offset: int) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)
        k = min(self.k, len(block))
        if self.approximate:
            exact = faiss.IndexFlatIP(self.d)
            exact.add(block)
            check_sims, check_ids = exact.search(self.queries[self.check], k)
            self.check_heap.add_result(
                _pad(check_sims, self.k), _pad(check_ids + offset, self.k, -1)
            )
            if self.ivf is None:
                self._train(block, check_ids, k)
            else:
                self.ivf.reset()
                self.ivf.add(block)
            assert self.ivf is not None and self.coarse is not None
            sims, ids = self.ivf.search_preassigned(self.queries, k, *self.coarse)
        else:
            index = _flat(self.d, self.use_gpu)
            index.add(block)
            sims, ids = index.search(self.queries, k)
        ids = np.where(ids >= 0, ids + offset, -1)
        self.heap.add_result(_pad(sims, self.k), _pad(ids, self.k, -1))
        self.n += len(block)

    def describe(self) -> dict[str, object]:
        if not self.approximate:
            return {"type": "IndexFlatIP per block", "recall": 1.0}
        return {
            "type": "IVFFlat per block, shared quantizer",
            "nlist": None if self.ivf is None else int(self.ivf.nlist),
            "nprobe": None if self.ivf is None else int(self.ivf.nprobe),
            "recall": self.recall(),
        }

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.finished:
            self.heap.finalize()
            if self.approximate:
                self.check_heap.finalize()
            self.finished = True
        k = min(self.k, self.n)
        return self.heap.D[:, :k].copy(), self.heap.I[:, :k].copy()

    def recall(self) -> float:
        """recall@k of the approximate search on sampled queries (1.0 when exact)."""
        if not self.approximate:
            return 1.0
        self.result()
        k = min(self.k, self.n)
        return _recall(self.heap.I[self.check, :k], self.check_heap.I[:, :k])


def _pad(values: np.ndarray, k: int, fill: float = -np.inf) -> np.ndarray:
    """Right-pad (q, j) results to (q, k) so blocks smaller than k merge cleanly."""
    if values.shape[1] == k:
        return values
    out = np.full((values.shape[0], k), fill, dtype=values.dtype)
    out[:, : values.shape[1]] = values
    return out

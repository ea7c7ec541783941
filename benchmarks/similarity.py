"""Benchmark of the similarity core: FAISS kNN vs scikit-learn brute force, report time, memory.

Data: clustered unit vectors (d = 384, 2,000 centres, Gaussian noise), the shape sentence
embeddings have. Stages:

1. kNN (k = 10) of 100,000 task vectors in 100,000 generic vectors: the report's streamed search
   (`StreamedTopK`: IVF per block with the report's default nprobe calibration and recall
   check against exact search)
   vs `sklearn.neighbors.NearestNeighbors(algorithm="brute")` on the same data. scikit-learn is
   timed on the first ``--sklearn-queries`` task vectors and scaled linearly to all queries
   (brute force is linear in the number of queries) to keep the run short; FAISS exact is timed
   the same way for reference.
2. The whole report (`compare_embeddings`, default settings, 10 groups) on the same data.
3. Peak memory of a report with 100,000 vs 1,000,000 generic vectors generated block by block
   (each in a fresh process; peak VmHWM), showing memory does not grow with the generic side.

The machine is shared (2 cores, other developers' jobs): load averages are recorded. The last
line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `similarity` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

D = 384
CENTRES = 2_000


def clustered(n: int, seed: int, block: int = 65_536) -> Iterator[np.ndarray]:
    """Blocks of unit vectors around shared centres (seeded per block, so any n streams)."""
    centres = np.random.default_rng(12345).standard_normal((CENTRES, D)).astype(np.float32)
    for start in range(0, n, block):
        rng = np.random.default_rng([seed, start])
        size = min(block, n - start)
        x = centres[rng.integers(0, CENTRES, size)] + 0.7 * rng.standard_normal(
            (size, D), dtype=np.float32
        )
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is reset by exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def knn_stage(
    task: np.ndarray, generic: np.ndarray, sk_queries: int, threads: int
) -> dict[str, object]:
    import faiss
    from sklearn.neighbors import NearestNeighbors

    from similarity import CompareSettings
    from similarity.knn import StreamedTopK, configure_threads

    configure_threads(threads)
    defaults = CompareSettings()
    started = time.perf_counter()
    search = StreamedTopK(
        task,
        10,
        approximate=True,
        nprobe=defaults.nprobe,
        min_recall=defaults.min_recall,
        use_gpu=False,
    )
    for start in range(0, len(generic), 65_536):
        search.add_block(generic[start : start + 65_536], start)
    search.result()
    ours = time.perf_counter() - started
    queries = task[:sk_queries]
    started = time.perf_counter()
    exact = faiss.IndexFlatIP(D)
    exact.add(generic)
    exact.search(queries, 10)
    faiss_exact = (time.perf_counter() - started) * len(task) / sk_queries
    started = time.perf_counter()
    NearestNeighbors(n_neighbors=10, algorithm="brute").fit(generic).kneighbors(queries)
    sklearn = (time.perf_counter() - started) * len(task) / sk_queries
    return {
        "ours_s": round(ours, 2),
        "recall_at_10": round(search.recall(), 4),
        "nprobe": search.describe()["nprobe"],
        "faiss_exact_s_scaled": round(faiss_exact, 2),
        "sklearn_brute_s_scaled": round(sklearn, 2),
        "speedup_vs_sklearn": round(sklearn / ours, 2),
        "sklearn_queries_timed": sk_queries,
    }


def report_stage(task: np.ndarray, generic_n: int, seed: int, settings_kw: dict, out: dict) -> None:
    from similarity import CompareSettings, GenericSide, TaskSide, compare_embeddings

    groups = [f"g{i % 10}" for i in range(len(task))]
    generic = GenericSide(generic_n, lambda: clustered(generic_n, seed))
    started = time.perf_counter()
    report = compare_embeddings(
        TaskSide(task, groups=groups), generic, CompareSettings(**settings_kw)
    )
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["peak_rss_mb"] = peak_rss_mb()
    out["coverage"] = report["global"]["coverage"]["value"]
    out["recall"] = report["index"]["recalls"]
    out["warnings"] = report["warnings"]


def _child(task_n: int, generic_n: int, settings_kw: dict, queue: multiprocessing.Queue) -> None:
    out: dict = {"task": task_n, "generic": generic_n}
    task = np.concatenate(list(clustered(task_n, 1)))
    out["rss_before_mb"] = peak_rss_mb()
    report_stage(task, generic_n, 2, settings_kw, out)
    queue.put(out)


def in_child(task_n: int, generic_n: int, settings_kw: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(task_n, generic_n, settings_kw, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="task and generic vectors")
    parser.add_argument("--sklearn-queries", type=int, default=10_000)
    parser.add_argument("--memory-task", type=int, default=5_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    summary: dict = {"machine": f"{threads} cores (shared)", "load_before": os.getloadavg()}
    task = np.concatenate(list(clustered(args.n, 1)))
    generic = np.concatenate(list(clustered(args.n, 2)))
    summary["knn"] = knn_stage(task, generic, args.sklearn_queries, threads)
    print("knn", summary["knn"], flush=True)
    del generic
    report: dict = {"task": args.n, "generic": args.n}
    report_stage(task, args.n, 2, {"threads": threads}, report)
    summary["report"] = report
    print("report", report, flush=True)
    if not args.skip_memory:
        small_kw = {"threads": threads, "exact_max": 1_000, "bootstrap": 50}
        summary["memory"] = [in_child(args.memory_task, n, small_kw) for n in (100_000, 1_000_000)]
        print("memory", summary["memory"], flush=True)
    summary["load_after"] = os.getloadavg()
    summary["targets"] = {
        "speedup_ge_5": summary["knn"]["speedup_vs_sklearn"] >= 5,
        "report_under_60s": report["seconds"] < 60,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

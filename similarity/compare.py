"""The vector-level core: compare a task set with a (streamed) generic set, globally and per group.

`compare_embeddings(task, generic, settings)` needs only L2-normalised vectors, optional group
labels, and optional texts / ids / splits; `run_similarity` adds corpora and an encoder around it.
The task side is put in content-key order first (`sampling.canonical_order`), so results do not
depend on row order. The generic side is read once, block by block: each block is searched by
the task side (coverage, NN cosine), searched against the task side (density ball counts), and
offered to a bottom-k sample that feeds the matched references and the supporting metrics.
The tables of every side are built in `metric_tables`; `compare_embeddings` runs the steps in
order and assembles the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from similarity.config import CompareSettings
from similarity.duplicates import near_duplicates
from similarity.estimates import metric_entries
from similarity.knn import InnerProductIndex, configure_threads
from similarity.manifold import ManifoldPoints, ManifoldScan, scan_in_memory, task_radii
from similarity.metric_tables import (
    METRICS,
    Resamples,
    embedding_tables,
    lexical_side_tables,
)
from similarity.sampling import BottomKSample, canonical_order

HIST_EDGES = np.linspace(-0.2, 1.0, 49)


@dataclass(frozen=True)
class TaskSide:
    """vectors (n, d) unit rows; groups / texts / ids / splits: None or one per row."""

    vectors: np.ndarray
    groups: Sequence[str] | None = None
    texts: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    splits: Sequence[str] | None = None


@dataclass(frozen=True)
class GenericSide:
    """``n`` rows arriving as blocks of unit vectors from ``blocks()``; texts / ids: None or n."""

    n: int
    blocks: Callable[[], Iterator[np.ndarray]]
    texts: Sequence[str] | None = None
    ids: Sequence[str] | None = None

    @classmethod
    def from_array(
        cls,
        vectors: np.ndarray,
        block_size: int,
        texts: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
    ) -> GenericSide:
        def blocks() -> Iterator[np.ndarray]:
            for start in range(0, len(vectors), block_size):
                yield vectors[start : start + block_size]

        return cls(len(vectors), blocks, texts, ids)


def _pick(values: Sequence[str] | None, order: np.ndarray) -> list[str] | None:
    return None if values is None else [values[i] for i in order]


@dataclass(frozen=True)
class _OrderedTask:
    """The task side in canonical order, each row's group a code into ``names``."""

    order: np.ndarray  # (n,) caller's row of each ordered row
    vectors: np.ndarray  # (n, d) float32, contiguous
    labels: list[str]  # (n,) group label per row; "all" without groups
    names: list[str]  # group names, largest first (ties by name)
    groups: np.ndarray  # (n,) int64 codes into names

    @classmethod
    def of(cls, task: TaskSide, seed: int) -> _OrderedTask:
        order = canonical_order(task.vectors, seed)
        vectors = np.ascontiguousarray(task.vectors[order], dtype=np.float32)
        labels = _pick(task.groups, order) or ["all"] * len(vectors)
        sizes = {name: labels.count(name) for name in set(labels)}
        names = sorted(sizes, key=lambda name: (-sizes[name], name))
        code = {name: i for i, name in enumerate(names)}
        groups = np.array([code[label] for label in labels], dtype=np.int64)
        return cls(order, vectors, labels, names, groups)


def _index_options(s: CompareSettings) -> dict[str, Any]:
    return {
        "exact_max": s.exact_max,
        "nprobe": s.nprobe,
        "min_recall": s.min_recall,
        "use_gpu": s.use_gpu,
    }


def _scan_generic(
    task_index: InnerProductIndex, generic: GenericSide, s: CompareSettings, sample_size: int
) -> tuple[ManifoldScan, BottomKSample]:
    """One pass over the generic blocks: the manifold scan and a bottom-k sample of the rows."""
    scan = ManifoldScan(
        task_index,
        task_radii(task_index, s.k),
        s.k,
        top=s.k,
        approximate=generic.n > s.exact_max,
        nprobe=s.nprobe,
        min_recall=s.min_recall,
        use_gpu=s.use_gpu,
    )
    sample = BottomKSample(sample_size, s.seed + 1)
    offset = 0
    for block in generic.blocks():
        block = np.ascontiguousarray(block, dtype=np.float32)
        scan.add_block(block, offset)
        sample.offer(block, offset)
        offset += len(block)
    assert offset == generic.n, f"generic stream gave {offset} rows, expected {generic.n}"
    return scan, sample


def _reference_sides(
    vectors: np.ndarray, generic_sample: np.ndarray, half: int, seed: int
) -> dict[str, np.ndarray]:
    """What the first task half is compared with: the matched generic sample, the second half,
    and as many random unit directions."""
    random_dirs = np.random.default_rng(seed + 2).standard_normal((half, vectors.shape[1]))
    random_dirs = random_dirs.astype(np.float32)
    random_dirs /= np.linalg.norm(random_dirs, axis=1, keepdims=True)
    return {
        "matched": generic_sample[:half],
        "same": vectors[half : 2 * half],
        "unrelated": random_dirs,
    }


def _reference_points(
    first_half: np.ndarray, sides: dict[str, np.ndarray], s: CompareSettings
) -> dict[str, ManifoldPoints]:
    """The first half's manifold points against each reference side (held in memory)."""
    index = InnerProductIndex(first_half, seed=s.seed, **_index_options(s))
    radius = task_radii(index, s.k)
    return {
        name: scan_in_memory(
            index, radius, other, s.k, block_size=s.block_size, **_index_options(s)
        )
        for name, other in sides.items()
    }


def _per_metric(
    rows: _OrderedTask,
    texts: list[str] | None,
    points: dict[str, ManifoldPoints],
    sides: dict[str, np.ndarray],
    sample: BottomKSample,
    generic: GenericSide,
    res: Resamples,
    s: CompareSettings,
) -> dict[str, list[dict[str, Any]]]:
    """metric -> normalised estimates (overall, then per group) from every side's tables."""
    sample_rows, sample_vectors = sample.rows()
    n_groups = len(rows.names)
    tables = embedding_tables(
        rows.vectors,
        rows.groups,
        n_groups,
        points,
        sides,
        sample_vectors[: s.support_n],
        res,
        s.seed,
    )
    if texts is not None and generic.texts is not None:
        matched_texts = [generic.texts[i] for i in sample_rows[: res.n_half]]
        lexical = lexical_side_tables(
            texts, generic.texts, matched_texts, rows.groups, n_groups, res
        )
        for side, side_tables in lexical.items():
            tables[side].update(side_tables)
    return {
        name: metric_entries(
            tables["value"][name],
            tables["matched"][name],
            tables["same"][name],
            tables["unrelated"][name],
            s.ci,
        )
        for name in METRICS
        if name in tables["value"]
    }


def _group_reports(
    rows: _OrderedTask,
    full: ManifoldPoints,
    per_metric: dict[str, list[dict[str, Any]]],
    frechet_reliable: np.ndarray,
    texts: list[str] | None,
    ids: list[str],
    generic: GenericSide,
) -> list[dict[str, Any]]:
    group_counts = np.bincount(rows.groups, minlength=len(rows.names))
    reports = []
    for g, name in enumerate(rows.names):
        members = np.flatnonzero(rows.groups == g)
        hist = np.histogram(full.nn_cosine[members], bins=HIST_EDGES)[0]
        reports.append(
            {
                "name": name,
                "n": int(group_counts[g]),
                "frechet_reliable": bool(frechet_reliable[g]),
                "metrics": {metric: entries[1 + g] for metric, entries in per_metric.items()},
                "nn_cosine_histogram": hist.tolist(),
                "examples": _examples(members, full, texts, ids, generic),
            }
        )
    return reports


def _warnings(
    n_matched: int,
    half: int,
    n_support: int,
    reliable_n: int,
    truncated: int,
    recalls: dict[str, float | None],
) -> list[str]:
    warnings = []
    if n_matched < half:
        warnings.append(
            f"generic sample ({n_matched}) is smaller than the task half ({half}): "
            "the matched comparison is not size-matched"
        )
    if n_support < reliable_n:
        warnings.append(
            f"Fréchet distance is unreliable: {n_support} task vectors < 10·d = {reliable_n}"
        )
    if truncated:
        warnings.append(f"{truncated} density ball counts hit the cap and are lower bounds")
    for what, recall in recalls.items():
        if recall is not None and recall < 0.95:
            warnings.append(f"approximate search recall@k {what} = {recall:.3f} < 0.95")
    return warnings


def compare_embeddings(
    task: TaskSide, generic: GenericSide, settings: CompareSettings
) -> dict[str, Any]:
    """Metrics, references, near-duplicates and warnings of ``task`` against ``generic``."""
    s = settings
    configure_threads(s.threads)
    torch.set_num_threads(s.threads)
    rows = _OrderedTask.of(task, s.seed)
    n_task, d = rows.vectors.shape
    half = min(n_task // 2, s.reference_n)
    task_index = InnerProductIndex(rows.vectors, seed=s.seed, **_index_options(s))
    scan, sample = _scan_generic(task_index, generic, s, max(half, s.support_n))
    full = scan.finish()
    sides = _reference_sides(rows.vectors, sample.rows()[1], half, s.seed)
    refs = _reference_points(rows.vectors[:half], sides, s)

    res = Resamples.draw(n_task, half, s)
    texts = _pick(task.texts, rows.order)
    per_metric = _per_metric(rows, texts, {"value": full, **refs}, sides, sample, generic, res, s)

    reliable_n = 10 * d
    ids = _pick(task.ids, rows.order) or [f"task:{int(i)}" for i in rows.order]
    support_counts = np.bincount(rows.groups[: res.n_support], minlength=len(rows.names))
    group_reports = (
        []
        if task.groups is None
        else _group_reports(
            rows, full, per_metric, support_counts >= reliable_n, texts, ids, generic
        )
    )
    recalls = {"task_to_generic": full.recall, "task_index": task_index.recall}
    truncated = full.truncated + sum(points.truncated for points in refs.values())
    return {
        "sizes": {
            "task": n_task,
            "generic": generic.n,
            "reference_half": half,
            "support": res.n_support,
            "support_reference": res.n_support_half,
            "dim": d,
            "groups": len(group_reports),
        },
        "index": {
            "k": s.k,
            "task": task_index.describe(),
            "generic_search": {**scan.topk.describe(), "block_size": s.block_size},
            "recalls": recalls,
        },
        "metrics": {
            name: {
                "label": METRICS[name][0],
                "higher_is_similar": METRICS[name][1],
                "headline": METRICS[name][2],
            }
            for name in per_metric
        },
        "global": {metric: entries[0] for metric, entries in per_metric.items()},
        "global_nn_cosine_histogram": np.histogram(full.nn_cosine, bins=HIST_EDGES)[0].tolist(),
        "histogram_edges": [round(float(e), 4) for e in HIST_EDGES],
        "groups": group_reports,
        "near_duplicates": near_duplicates(
            full,
            s.near_dup_cosine,
            texts,
            ids,
            _pick(task.splits, rows.order),
            rows.labels if task.groups else None,
            generic.texts,
            generic.ids,
        ),
        "warnings": _warnings(
            len(sides["matched"]), half, res.n_support, reliable_n, truncated, recalls
        ),
    }


def _examples(
    members: np.ndarray,
    points: ManifoldPoints,
    texts: list[str] | None,
    ids: list[str],
    generic: GenericSide,
    per_end: int = 2,
) -> list[dict[str, Any]]:
    """The group's best- and least-covered task texts with their nearest generic neighbour."""
    ranked = members[np.argsort(-points.nn_cosine[members], kind="stable")]
    picks = list(dict.fromkeys([*ranked[:per_end].tolist(), *ranked[-per_end:].tolist()]))
    out = []
    for i in picks:
        j = int(points.nn_index[i])
        out.append(
            {
                "task_id": ids[i],
                "task_text": None if texts is None else texts[i],
                "nn_cosine": round(float(points.nn_cosine[i]), 4),
                "generic_id": None if generic.ids is None or j < 0 else generic.ids[j],
                "generic_text": None if generic.texts is None or j < 0 else generic.texts[j],
            }
        )
    return out

"""The vector-level core: compare a task set with a (streamed) generic set, globally and per group.

`compare_embeddings(task, generic, settings)` needs only L2-normalised vectors, optional group
labels, and optional texts / ids / splits; `run_similarity` adds corpora and an encoder around it.
The task side is put in content-key order first (`sampling.canonical_order`), so results do not
depend on row order. The generic side is read once, block by block: each block is searched by
the task side (coverage, NN cosine), searched against the task side (density ball counts), and
offered to a bottom-k sample that feeds the matched references and the supporting metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from similarity import distribution, lexical
from similarity.config import CompareSettings
from similarity.duplicates import near_duplicates
from similarity.estimates import metric_entries
from similarity.knn import InnerProductIndex, configure_threads
from similarity.manifold import (
    GroupQuantiles,
    ManifoldPoints,
    ManifoldScan,
    scan_in_memory,
    task_radii,
)
from similarity.sampling import (
    BottomKSample,
    bootstrap_indices,
    canonical_order,
    weighted_group_means,
)

QUANTILES = (0.1, 0.5, 0.9)
SHARE_THRESHOLDS = (0.5, 0.7, 0.9)
HIST_EDGES = np.linspace(-0.2, 1.0, 49)

METRICS: dict[str, tuple[str, bool, bool]] = {
    "coverage": ("coverage (Naeem et al.)", True, True),
    "density": ("density (Naeem et al.)", True, True),
    **{
        f"nn_cosine_q{int(q * 100)}": (f"top-1 NN cosine q{int(q * 100)}", True, False)
        for q in QUANTILES
    },
    **{
        f"nn_cosine_share_ge_{t}": (f"share NN cosine >= {t}", True, False)
        for t in SHARE_THRESHOLDS
    },
    "centroid_cosine": ("centroid cosine", True, False),
    "frechet": ("Fréchet distance", False, False),
    "mmd2": ("MMD² (median bandwidth)", False, False),
    "classifier_auc": ("classifier AUC (generic vs task)", False, False),
    "unigram_jsd": ("unigram JSD (bits)", False, False),
    "oov_rate": ("OOV token rate", False, False),
}
"""name -> (label, higher means more similar, headline)."""


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


def manifold_tables(
    points: ManifoldPoints, groups: np.ndarray, n_groups: int, indices: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """(R+1, 1+G) tables of the NN-manifold metrics from per-point arrays (see `manifold`).

    Every metric is a per-group mean or quantile of a per-point array, so a resample enters only
    as a count per point.
    """
    per_point = {
        "coverage": points.covered * 1.0,
        "density": points.count * points.density_scale(),
        **{f"nn_cosine_share_ge_{t}": (points.nn_cosine >= t) * 1.0 for t in SHARE_THRESHOLDS},
    }
    quantiles = GroupQuantiles(points.nn_cosine, groups, n_groups)
    rows: dict[str, list[np.ndarray]] = {
        name: [] for name in METRICS if name.startswith(("cov", "den", "nn_"))
    }
    for idx in indices:
        counts = np.bincount(idx, minlength=len(groups)).astype(np.float64)
        for name, values in per_point.items():
            rows[name].append(weighted_group_means(values, counts, groups, n_groups))
        for q, row in zip(QUANTILES, quantiles(counts, QUANTILES), strict=True):
            rows[f"nn_cosine_q{int(q * 100)}"].append(row)
    return {name: np.array(table) for name, table in rows.items()}


def _supporting(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    indices: list[np.ndarray],
    seed: int,
) -> dict[str, np.ndarray]:
    return {
        "centroid_cosine": distribution.centroid_cosine(x, y, groups, n_groups, indices),
        "frechet": distribution.frechet(x, y, groups, n_groups, indices),
        "mmd2": distribution.mmd2(x, y, groups, n_groups, indices),
        "classifier_auc": distribution.classifier_auc(x, y, groups, n_groups, indices, seed),
    }


def compare_embeddings(
    task: TaskSide, generic: GenericSide, settings: CompareSettings
) -> dict[str, Any]:
    """Metrics, references, near-duplicates and warnings of ``task`` against ``generic``."""
    configure_threads(settings.threads)
    torch.set_num_threads(settings.threads)
    s, k = settings, settings.k
    order = canonical_order(task.vectors, s.seed)
    vectors = np.ascontiguousarray(task.vectors[order], dtype=np.float32)
    n_task, d = vectors.shape
    labels = _pick(task.groups, order) or ["all"] * n_task
    sizes = {name: labels.count(name) for name in set(labels)}
    names = sorted(sizes, key=lambda name: (-sizes[name], name))
    code = {name: i for i, name in enumerate(names)}
    groups = np.array([code.get(label, 0) for label in labels], dtype=np.int64)
    n_groups = len(names)
    warnings: list[str] = []
    index_opts: dict[str, Any] = {
        "exact_max": s.exact_max,
        "nprobe": s.nprobe,
        "min_recall": s.min_recall,
        "use_gpu": s.use_gpu,
    }

    task_index = InnerProductIndex(vectors, seed=s.seed, **index_opts)
    scan = ManifoldScan(
        task_index,
        task_radii(task_index, k),
        k,
        top=k,
        approximate=generic.n > s.exact_max,
        nprobe=s.nprobe,
        min_recall=s.min_recall,
        use_gpu=s.use_gpu,
    )
    half = min(n_task // 2, s.reference_n)
    sample = BottomKSample(max(half, s.support_n), s.seed + 1)
    offset = 0
    for block in generic.blocks():
        block = np.ascontiguousarray(block, dtype=np.float32)
        scan.add_block(block, offset)
        sample.offer(block, offset)
        offset += len(block)
    assert offset == generic.n, f"generic stream gave {offset} rows, expected {generic.n}"
    full = scan.finish()
    sample_rows, sample_vectors = sample.rows()

    a, b = vectors[:half], vectors[half : 2 * half]
    random_dirs = np.random.default_rng(s.seed + 2).standard_normal((half, d)).astype(np.float32)
    random_dirs /= np.linalg.norm(random_dirs, axis=1, keepdims=True)
    matched = sample_vectors[:half]
    if len(matched) < half:
        warnings.append(
            f"generic sample ({len(matched)}) is smaller than the task half ({half}): "
            "the matched comparison is not size-matched"
        )
    a_index = InnerProductIndex(a, seed=s.seed, **index_opts)
    a_radius = task_radii(a_index, k)
    block_opts: dict[str, Any] = {"block_size": s.block_size, **index_opts}
    refs = {
        name: scan_in_memory(a_index, a_radius, other, k, **block_opts)
        for name, other in (("matched", matched), ("same", b), ("unrelated", random_dirs))
    }

    full_idx = list(bootstrap_indices(n_task, s.bootstrap, s.seed + 3))
    ref_idx = list(bootstrap_indices(half, s.bootstrap, s.seed + 4))
    tables = {"value": manifold_tables(full, groups, n_groups, full_idx)}
    for name, points in refs.items():
        tables[name] = manifold_tables(points, groups[:half], n_groups, ref_idx)

    n_sup = min(s.support_n, n_task)
    n_ref_sup = min(s.support_n, half)
    sup_idx = list(bootstrap_indices(n_sup, s.bootstrap, s.seed + 5))
    sup_ref_idx = list(bootstrap_indices(n_ref_sup, s.bootstrap, s.seed + 6))
    generic_sup = sample_vectors[: s.support_n]
    tables["value"].update(
        _supporting(vectors[:n_sup], generic_sup, groups[:n_sup], n_groups, sup_idx, s.seed)
    )
    for name, other in (("matched", generic_sup), ("same", b), ("unrelated", random_dirs)):
        tables[name].update(
            _supporting(
                a[:n_ref_sup], other[:n_ref_sup], groups[:n_ref_sup], n_groups, sup_ref_idx, s.seed
            )
        )

    texts = _pick(task.texts, order)
    if texts is not None and generic.texts is not None:
        matched_texts = [generic.texts[i] for i in sample_rows[:half]]
        tables["value"].update(
            lexical.lexical_tables(texts, generic.texts, groups, n_groups, full_idx)
        )
        tables["matched"].update(
            lexical.lexical_tables(texts[:half], matched_texts, groups[:half], n_groups, ref_idx)
        )
        tables["same"].update(
            lexical.lexical_tables(
                texts[:half], texts[half : 2 * half], groups[:half], n_groups, ref_idx
            )
        )
        tables["unrelated"].update(
            {name: np.ones_like(tables["same"][name]) for name in ("unigram_jsd", "oov_rate")}
        )

    per_metric = {
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
    reliable_n = 10 * d
    if n_sup < reliable_n:
        warnings.append(
            f"Fréchet distance is unreliable: {n_sup} task vectors < 10·d = {reliable_n}"
        )
    group_counts = np.bincount(groups, minlength=n_groups)
    sup_counts = np.bincount(groups[:n_sup], minlength=n_groups)
    ids = _pick(task.ids, order) or [f"task:{int(i)}" for i in order]
    group_reports = []
    for g, name in enumerate(names if task.groups is not None else []):
        members = np.flatnonzero(groups == g)
        hist = np.histogram(full.nn_cosine[members], bins=HIST_EDGES)[0]
        group_reports.append(
            {
                "name": name,
                "n": int(group_counts[g]),
                "frechet_reliable": bool(sup_counts[g] >= reliable_n),
                "metrics": {metric: entries[1 + g] for metric, entries in per_metric.items()},
                "nn_cosine_histogram": hist.tolist(),
                "examples": _examples(members, full, texts, ids, generic),
            }
        )
    truncated = full.truncated + sum(points.truncated for points in refs.values())
    if truncated:
        warnings.append(f"{truncated} density ball counts hit the cap and are lower bounds")
    recalls = {"task_to_generic": full.recall, "task_index": task_index.recall}
    for what, recall in recalls.items():
        if recall is not None and recall < 0.95:
            warnings.append(f"approximate search recall@k {what} = {recall:.3f} < 0.95")
    return {
        "sizes": {
            "task": n_task,
            "generic": generic.n,
            "reference_half": half,
            "support": n_sup,
            "support_reference": n_ref_sup,
            "dim": d,
            "groups": len(group_reports),
        },
        "index": {
            "k": k,
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
            _pick(task.splits, order),
            labels if task.groups else None,
            generic.texts,
            generic.ids,
        ),
        "warnings": warnings,
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

"""The metric tables of a comparison: side -> metric -> (R+1, 1+G) array.

A side is the measured comparison (``value``: the task against the generic corpus) or one of the
three references it is normalised between (``matched``, ``same``, ``unrelated``: the first task
half against a size-matched generic sample, the second half, and random directions). Row 0 of a
table is the point estimate, rows 1..R bootstrap replicates; column 0 is the whole task, columns
1..G its groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from similarity import distribution, lexical
from similarity.config import CompareSettings
from similarity.manifold import GroupQuantiles, ManifoldPoints
from similarity.sampling import bootstrap_indices, weighted_group_means

QUANTILES = (0.1, 0.5, 0.9)
SHARE_THRESHOLDS = (0.5, 0.7, 0.9)
SIDES = ("value", "matched", "same", "unrelated")

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
class Resamples:
    """Bootstrap row indices (the identity first) of each subset a table is computed on.

    full: all task rows; half: the first reference half; support / support_half: the first
    support_n rows of each, for the supporting (distribution) metrics.
    """

    full: list[np.ndarray]
    half: list[np.ndarray]
    support: list[np.ndarray]
    support_half: list[np.ndarray]

    @classmethod
    def draw(cls, n_task: int, half: int, s: CompareSettings) -> Resamples:
        return cls(
            list(bootstrap_indices(n_task, s.bootstrap, s.seed + 3)),
            list(bootstrap_indices(half, s.bootstrap, s.seed + 4)),
            list(bootstrap_indices(min(s.support_n, n_task), s.bootstrap, s.seed + 5)),
            list(bootstrap_indices(min(s.support_n, half), s.bootstrap, s.seed + 6)),
        )

    @property
    def n_half(self) -> int:
        return len(self.half[0])

    @property
    def n_support(self) -> int:
        return len(self.support[0])

    @property
    def n_support_half(self) -> int:
        return len(self.support_half[0])


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


def embedding_tables(
    vectors: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    points: dict[str, ManifoldPoints],
    references: dict[str, np.ndarray],
    generic_support: np.ndarray,
    res: Resamples,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Manifold and supporting tables of every side.

    vectors (n, d) and groups (n,): the ordered task rows; points: side -> manifold points
    (``value`` for all rows, the references for the first half); references: reference side ->
    the vectors the first half is compared with; generic_support: the generic support sample.
    """
    tables = {"value": manifold_tables(points["value"], groups, n_groups, res.full)}
    for side in SIDES[1:]:
        tables[side] = manifold_tables(points[side], groups[: res.n_half], n_groups, res.half)
    n_sup, n_ref = res.n_support, res.n_support_half
    tables["value"].update(
        _supporting(vectors[:n_sup], generic_support, groups[:n_sup], n_groups, res.support, seed)
    )
    first, first_groups = vectors[:n_ref], groups[:n_ref]
    for side in SIDES[1:]:
        other = references[side][:n_ref]
        tables[side].update(
            _supporting(first, other, first_groups, n_groups, res.support_half, seed)
        )
    return tables


def lexical_side_tables(
    texts: list[str],
    generic_texts: Sequence[str],
    matched_texts: list[str],
    groups: np.ndarray,
    n_groups: int,
    res: Resamples,
) -> dict[str, dict[str, np.ndarray]]:
    """Lexical tables of every side; the unrelated reference is 1 (no shared vocabulary)."""
    half = res.n_half
    first, second = texts[:half], texts[half : 2 * half]
    same = lexical.lexical_tables(first, second, groups[:half], n_groups, res.half)
    return {
        "value": lexical.lexical_tables(texts, generic_texts, groups, n_groups, res.full),
        "matched": lexical.lexical_tables(first, matched_texts, groups[:half], n_groups, res.half),
        "same": same,
        "unrelated": {name: np.ones_like(table) for name, table in same.items()},
    }

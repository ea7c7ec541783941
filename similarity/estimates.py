"""From bootstrap tables to report entries: percentile intervals and reference normalisation.

A metric m is computed on four pairs (task side, other side):

* value:     (T, G)   all sampled task texts against all sampled generic texts;
* matched:   (A, G_h) a random half A of the task against |B| random generic texts;
* same:      (A, B)   split-half "same corpus" reference, B the other half of the task;
* unrelated: (A, R)   R = |B| isotropic random unit vectors (seeded): what a set with no
  structure in common with the task scores. Lexical metrics use their ceiling instead
  (JSD = 1 bit, OOV = 1: no shared vocabulary).

normalised = (matched − unrelated) / (same − unrelated), computed per bootstrap replicate with the
same resample of A in all three pairs: 1 = as similar to the task as the task is to itself,
0 = as similar as the unrelated reference (values may leave [0, 1]). The matched pair keeps the
sizes equal to the split-half, because coverage, density and nearest-neighbour similarity grow
with the size of the other side. Intervals are bootstrap percentile intervals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEGENERATE = 1e-9
"""|same − unrelated| below this makes the normalised value undefined (reported null)."""


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _interval(column: np.ndarray, ci: float) -> list[float | None] | None:
    replicates = column[1:]
    replicates = replicates[np.isfinite(replicates)]
    if len(replicates) < 2:
        return None
    tail = 50.0 * (1.0 - ci)
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return [_num(lo), _num(hi)]


def metric_entries(
    actual: np.ndarray,
    matched: np.ndarray,
    same: np.ndarray,
    unrelated: np.ndarray | float,
    ci: float,
) -> list[dict[str, Any]]:
    """One entry per column (global, then groups) from (R+1, 1+G) tables (see module docstring)."""
    rows = min(len(matched), len(same))
    matched, same = matched[:rows], same[:rows]
    unrel = (
        np.broadcast_to(np.asarray(unrelated, dtype=np.float64), same.shape)
        if np.ndim(unrelated) == 0
        else np.asarray(unrelated)[:rows]
    )
    span = same - unrel
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(np.abs(span) > DEGENERATE, (matched - unrel) / span, np.nan)
    entries = []
    for col in range(actual.shape[1]):
        defined = abs(span[0, col]) > DEGENERATE
        entries.append(
            {
                "value": _num(actual[0, col]),
                "ci": _interval(actual[:, col], ci),
                "matched": _num(matched[0, col]),
                "same": _num(same[0, col]),
                "unrelated": _num(unrel[0, col]),
                "normalised": _num(normalised[0, col]) if defined else None,
                "normalised_ci": _interval(normalised[:, col], ci) if defined else None,
            }
        )
    return entries

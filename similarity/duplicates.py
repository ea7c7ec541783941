"""Near-duplicates: task texts that also appear in the generic corpus (contamination).

A task text is listed when its nearest generic vector has cosine >= the threshold, or when a
generic text is identical to it after `lexical.normalise_text` (case, punctuation, spacing).
Test-split texts come first (contamination there inflates evaluation), then by cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from similarity.lexical import normalise_text
from similarity.manifold import ManifoldPoints

MAX_LISTED = 200
"""Near-duplicates listed in the report (all are counted)."""


def near_duplicates(
    points: ManifoldPoints,
    threshold: float,
    texts: Sequence[str] | None,
    ids: Sequence[str],
    splits: Sequence[str] | None,
    groups: Sequence[str] | None,
    generic_texts: Sequence[str] | None,
    generic_ids: Sequence[str] | None,
) -> dict[str, Any]:
    """{"threshold", "count", "by_split", "items"}: items carry both texts and ids."""
    partner = {
        i: int(points.nn_index[i]) for i in np.flatnonzero(points.nn_cosine >= threshold).tolist()
    }
    identical: set[int] = set()
    if texts is not None and generic_texts is not None:
        first_generic: dict[str, int] = {}
        for j, text in enumerate(generic_texts):
            first_generic.setdefault(normalise_text(text), j)
        for i, text in enumerate(texts):
            match = first_generic.get(normalise_text(text))
            if match is not None:
                identical.add(i)
                partner.setdefault(i, match)
    split_of = (lambda i: splits[i]) if splits is not None else (lambda i: None)
    ranked = sorted(
        partner, key=lambda i: (split_of(i) != "test", -float(points.nn_cosine[i]), ids[i])
    )
    by_split: dict[str, int] = {}
    for i in ranked:
        by_split[str(split_of(i))] = by_split.get(str(split_of(i)), 0) + 1
    items = []
    for i in ranked[:MAX_LISTED]:
        j = partner[i]
        items.append(
            {
                "task_id": ids[i],
                "task_text": None if texts is None else texts[i],
                "split": split_of(i),
                "group": None if groups is None else groups[i],
                "generic_id": f"generic:{j}" if generic_ids is None else generic_ids[j],
                "generic_text": None if generic_texts is None else generic_texts[j],
                "nn_cosine": round(float(points.nn_cosine[i]), 4)
                if points.nn_index[i] == j
                else None,
                "identical_text": i in identical,
            }
        )
    return {"threshold": threshold, "count": len(partner), "by_split": by_split, "items": items}

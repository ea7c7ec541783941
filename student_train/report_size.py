"""Which student to ship: each report row's score against its model's size, beside the teacher.

Per finetuning target, the headline score (DC accuracy, ICNER intent accuracy; mean over seeds,
from the report table) of every row whose runs saved a model, with its parameter count (the
weights in RUN/model/model.safetensors: encoder + class head, counted from the file header)
and its gap to the teacher in points (100 × (score − teacher's score)). `smallest_within`
answers "the smallest student within X points of the teacher".
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from student_train.runs import MODEL_DIR, WEIGHTS_FILE

WITHIN_POINTS = 1.0
"""The gap to the teacher within which `size_lines` and the size plot name the smallest student."""


def count_parameters(folder: Path) -> int | None:
    """Parameters in `folder`/model.safetensors from its JSON header (no tensor is read);
    None without the file."""
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
    return total


def size_points(
    rows: list[dict[str, Any]], table: list[dict[str, Any]], targets: dict[str, Any], runs: Path
) -> dict[str, Any]:
    """Per target key: {"metric", "teacher": {...} | None, "points": [...]} with one point per
    table row that has a saved model: student, role, mix, label, parameters, score, gap."""
    parameters: dict[tuple[str, str, float | None, str], int] = {}
    for row in rows:
        count = count_parameters(runs / row["run"] / MODEL_DIR)
        key = (row["student"], row["role"], row["mix"], f"{row['task']}:{row['corpus']}")
        if count is not None:
            parameters[key] = count
    found: dict[str, Any] = {}
    for target, info in targets.items():
        metric = info["scores"][0][0]
        points = []
        for line in table:
            entry = line["targets"].get(target)
            size = parameters.get((line["student"], line["role"], line["mix"], target))
            if entry is None or size is None or entry["metrics"][metric]["mean"] is None:
                continue
            points.append(
                {
                    "student": line["student"], "role": line["role"], "mix": line["mix"],
                    "label": line["label"], "parameters": size,
                    "score": entry["metrics"][metric]["mean"],
                }
            )  # fmt: skip
        teacher = next((p for p in points if p["role"] == "teacher"), None)
        for point in points:
            point["gap_points"] = (
                None if teacher is None else 100 * (point["score"] - teacher["score"])
            )
        found[target] = {"metric": metric, "teacher": teacher, "points": points}
    return found


def smallest_within(sizes: dict[str, Any], target: str, points: float) -> dict[str, Any] | None:
    """The fewest-parameter non-teacher point of `target` at most `points` below the teacher."""
    close = [
        p
        for p in sizes[target]["points"]
        if p["role"] != "teacher"
        and p["gap_points"] is not None
        and p["gap_points"] >= -points - 1e-9  # a gap of exactly `points`, up to rounding
    ]
    return min(close, key=lambda p: (p["parameters"], -p["score"]), default=None)


def size_lines(sizes: dict[str, Any]) -> list[str]:
    """One line per target with a teacher: the smallest student within WITHIN_POINTS of it."""
    lines = []
    for target, found in sizes.items():
        teacher = found["teacher"]
        if teacher is None:
            continue
        best = smallest_within(sizes, target, WITHIN_POINTS)
        head = (
            f"{target}: teacher {found['metric']} {teacher['score']:.3f} "
            f"({teacher['parameters'] / 1e6:.1f}M parameters); "
        )
        if best is None:
            lines.append(head + f"no student within {WITHIN_POINTS:g} point of it")
        else:
            lines.append(
                head + f"smallest within {WITHIN_POINTS:g} point: {best['student']} "
                f"{best['label']} ({best['parameters'] / 1e6:.1f}M, {best['score']:.3f}, "
                f"{best['gap_points']:+.1f} points)"
            )
    return lines

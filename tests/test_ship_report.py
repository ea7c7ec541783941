"""`kdcache report` answers "which student to ship": parameters counted from each run's saved
model (a real safetensors file), scores beside the teacher's, the smallest student within one
point of it, and the size plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

from student_train.configs import ReportConfig
from student_train.report import print_report, run_report
from student_train.report_size import count_parameters

# student -> (hidden size of its fake weights, DC accuracy per seed)
STUDENTS = {
    "tiny": (8, (0.70, 0.72)),
    "small": (16, (0.885, 0.895)),
    "base": (32, (0.90, 0.91)),
    "teacher": (64, (0.90, 0.90)),
}


def _save_weights(folder: Path, hidden: int) -> int:
    """A model.safetensors of an embedding (100 × hidden) and a class head (5 × hidden + 5)."""
    folder.mkdir(parents=True)
    tensors = {
        "bert.embeddings.word_embeddings.weight": torch.zeros(100, hidden),
        "classifier.weight": torch.zeros(5, hidden),
        "classifier.bias": torch.zeros(5),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return 105 * hidden + 5


def _runs(root: Path) -> Path:
    rows: list[dict[str, Any]] = []
    for student, (hidden, scores) in STUDENTS.items():
        role = "teacher" if student == "teacher" else "distilled"
        for seed, acc in enumerate(scores):
            run = f"finetune/{student}_{seed}"
            digest = f"{len(rows):016x}"
            _save_weights(root / run / "model", hidden)
            metrics = {"config_hash": digest, "accuracy": acc, "macro_f1": acc}
            (root / run / "metrics.json").write_text(json.dumps(metrics))
            rows.append(
                {"run": run, "kind": "finetune", "role": role, "student": student, "seed": seed,
                 "mix": None if role == "teacher" else 1.0, "task": "dc", "corpus": "task/bbc",
                 "corpus_source": "demo:bbc", "config": {"config_hash": digest}}
            )  # fmt: skip
    rows.append({**rows[0], "run": "finetune/no_model", "seed": 2})  # an older run: no model/
    (root / "finetune/no_model").mkdir()
    metrics = {"config_hash": rows[0]["config"]["config_hash"], "accuracy": 0.1, "macro_f1": 0.1}
    (root / "finetune/no_model/metrics.json").write_text(json.dumps(metrics))
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_count_parameters_reads_the_header(tmp_path: Path) -> None:
    assert count_parameters(tmp_path / "m") is None
    expected = _save_weights(tmp_path / "m", 12)
    assert count_parameters(tmp_path / "m") == expected == 1265


def test_report_names_the_smallest_student_within_a_point(tmp_path: Path) -> None:
    runs = _runs(tmp_path / "runs")
    report = run_report(ReportConfig(str(runs)))
    sizes: dict[str, Any] = report["sizes"]["dc:task/bbc"]
    assert sizes["metric"] == "accuracy"
    by_student = {p["student"]: p for p in sizes["points"]}
    assert by_student["teacher"]["parameters"] == 105 * 64 + 5
    assert by_student["small"]["gap_points"] == pytest.approx(-1.0)
    # tiny's third seed has no saved model: its score still counts (the table), its size
    # comes from the runs that saved one
    assert by_student["tiny"]["parameters"] == 105 * 8 + 5
    assert Path(report["plots"]["size"]).stat().st_size > 10_000
    console = Console(record=True, width=200)
    print_report(report, console)
    text = console.export_text()
    assert "smallest within 1 point: small KD, task 1.00 (0.0M, 0.890, -1.0 points)" in text

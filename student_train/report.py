"""`run_report(ReportConfig) -> dict`: a sweep's results as a table, plots and correlations.

Every number is recomputed from the run folders: ``results.jsonl`` (written by the sweep) only
says which runs belong to the sweep and what they are (role, student, share of task data, seed,
finetuning target); the scores are read again from each run's own ``RUN/metrics.json``.

Per row (student × kind of run: random init, init without distillation, distilled at each share
of task data, the teacher) and finetuning target, over seeds::

    mean ± std   DC accuracy; ICNER intent accuracy, slot F1, semantic error rate (SER)
                 (std: sample standard deviation, ddof = 1; none for a single seed)
    Δerr         relative error change vs the same student from scratch (random init), paired
                 by seed: err_s / err_scratch_s − 1 with err = 1 − accuracy (DC) or SER
                 (ICNER), then mean ± std over the seeds both have; negative = fewer errors.
                 The teacher row is compared with the from-scratch student when the sweep has
                 a single student.

With similarity reports (``kdcache similarity``, grouped by domain or intent): per target whose
corpus source is a report's task, and per student::

    gain_g   mean over seeds of the accuracy on label g (``per_label`` of metrics.json) at the
             largest share of task data − the same at the smallest share
    ρ, p     Spearman correlation of gain_g with the report's similarity of group g
             (``scipy.stats.spearmanr``, two-sided p-value), over the labels in both (≥ 3)
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

from logit_store import UserError
from student_train.configs import ReportConfig
from student_train.report_plots import plot_correlations, plot_size, plot_sweep
from student_train.report_size import WITHIN_POINTS, size_lines, size_points
from student_train.runs import METRICS_FILE, RESULTS_FILE, read_metrics, write_json_atomic

TARGET_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "dc": (("accuracy", "acc"),),
    "icner": (
        ("intent_accuracy", "intent acc"), ("slot_f1", "slot F1"), ("semantic_error_rate", "SER"),
    ),
}  # fmt: skip
ERROR_LABEL = {"dc": "Δerr", "icner": "ΔSER"}
ROLE_ORDER = {"random": 0, "init": 1, "distilled": 2, "teacher": 3}
ROLE_LABEL = {"random": "random init", "init": "init, no KD", "teacher": "teacher"}
ROW_KEYS = {"run", "kind", "role", "student", "mix", "seed", "task", "corpus", "config"}
GROUPED_BY = {"dc": "domain", "icner": "intent"}
"""The similarity grouping whose names are a target's per-label scores."""
MIN_POINTS = 3
TIES_SHARE = 0.5
"""Warn when more than this share of the labels have one and the same similarity value."""


def error_of(task: str, metrics: dict[str, Any]) -> float:
    """1 − accuracy for DC, the semantic error rate for ICNER."""
    return 1.0 - metrics["accuracy"] if task == "dc" else metrics["semantic_error_rate"]


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """mean, sample std (ddof = 1; None for one value) and n of the defined `values` (None is
    undefined, e.g. the slot F1 of a test split without slots; mean None when none is)."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(array):
        return {"mean": None, "std": None, "n": 0}
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return {"mean": float(array.mean()), "std": std, "n": len(array)}


def load_results(runs: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The sweep's finetuning rows, each with `metrics` re-read from its run folder."""
    path = runs / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{runs}: no {RESULTS_FILE}; run `kdcache sweep --out {runs}` first")
    rows, warnings = [], []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{line_no}: not JSON ({err}); rerun the sweep") from err
        if not isinstance(row, dict) or not row.keys() >= ROW_KEYS:
            raise UserError(f"{path}:{line_no}: not a sweep result row; rerun the sweep")
        if row["kind"] != "finetune":
            continue
        folder = runs / row["run"]
        if not (folder / METRICS_FILE).is_file():
            warnings.append(f"{folder}: no {METRICS_FILE}; left out (rerun the sweep)")
            continue
        metrics = read_metrics(folder)
        if metrics.get("config_hash") != row["config"].get("config_hash"):
            warnings.append(f"{folder}: metrics.json is of another config; left out")
            continue
        rows.append({**row, "metrics": metrics})
    return rows, warnings


def _target_key(row: dict[str, Any]) -> str:
    return f"{row['task']}:{row['corpus']}"


def _row_key(row: dict[str, Any]) -> tuple[str, str, float | None]:
    return row["student"], row["role"], row["mix"]


def _row_label(role: str, mix: float | None) -> str:
    return f"KD, task {mix:.2f}" if role == "distilled" else ROLE_LABEL[role]


def build_table(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(table rows, targets): per (student, role, mix) and target, the seed statistics."""
    targets: dict[str, dict[str, Any]] = {}
    cells: dict[tuple[str, str, float | None], dict[str, dict[int, dict[str, Any]]]] = {}
    for row in rows:
        key = _target_key(row)
        target = {k: row.get(k) for k in ("task", "corpus", "corpus_source")}
        target["corpus_source_hash"] = row["config"].get("corpus_source_hash")
        targets.setdefault(key, {**target, "scores": TARGET_METRICS[row["task"]]})
        cells.setdefault(_row_key(row), {}).setdefault(key, {})[row["seed"]] = row["metrics"]
    students = list(dict.fromkeys(s for s, role, _ in cells if role != "teacher"))

    def position(k: tuple[str, str, float | None]) -> tuple[int, int, float]:
        student, role, mix = k
        first = len(students) if role == "teacher" else students.index(student)
        return first, ROLE_ORDER[role], -1.0 if mix is None else mix

    order = sorted(cells, key=position)
    table = []
    for student, role, mix in order:
        scratch_of = students[0] if role == "teacher" and len(students) == 1 else student
        scratch = cells.get((scratch_of, "random", None), {})
        line: dict[str, Any] = {"student": student, "role": role, "mix": mix}
        line["label"], line["targets"] = _row_label(role, mix), {}
        for key, by_seed in cells[(student, role, mix)].items():
            task = targets[key]["task"]
            seeds = sorted(by_seed)
            scores = {
                name: {**summarise([by_seed[s][name] for s in seeds]), "seeds": seeds}
                for name, _ in TARGET_METRICS[task]
            }
            base = scratch.get(key, {})
            paired = [s for s in seeds if s in base and error_of(task, base[s]) > 0]
            relative = [error_of(task, by_seed[s]) / error_of(task, base[s]) - 1 for s in paired]
            rel = summarise(relative) if relative and role != "random" else None
            line["targets"][key] = {"metrics": scores, "relative_error": rel}
        table.append(line)
    return table, targets


def _label_accuracy(metrics: dict[str, Any]) -> dict[str, float] | None:
    per_label = metrics.get("per_label")
    return None if per_label is None else {k: v["accuracy"] for k, v in per_label.items()}


def label_gains(rows: list[dict[str, Any]], student: str, key: str) -> dict[str, float] | None:
    """Per label: mean accuracy at the largest share of task data − at the smallest (module
    docstring), over the seeds run at both; None without two shares or per-label scores."""
    mine = [
        r for r in rows
        if r["role"] == "distilled" and r["student"] == student and _target_key(r) == key
    ]  # fmt: skip
    shares = sorted({r["mix"] for r in mine})
    if len(shares) < 2:
        return None
    at = [{r["seed"]: _label_accuracy(r["metrics"]) for r in mine if r["mix"] == m} for m in shares]
    low, high = at[0], at[-1]
    seeds = sorted(set(low) & set(high))
    pairs = [(lo, hi) for lo, hi in ((low[s], high[s]) for s in seeds) if lo and hi]
    if not seeds or len(pairs) < len(seeds):
        return None
    labels = set.intersection(*(set(lo) & set(hi) for lo, hi in pairs))
    return {g: float(np.mean([hi[g] - lo[g] for lo, hi in pairs])) for g in sorted(labels)}


def correlate(gains: dict[str, float], similarity: dict[str, Any], metric: str) -> dict[str, Any]:
    """Spearman ρ and p of per-label gains against the similarity report's per-group `metric`."""
    groups = {g["name"]: g["metrics"].get(metric, {}).get("value") for g in similarity["groups"]}
    points = [
        {"label": g, "similarity": groups[g], "gain": gain}
        for g, gain in gains.items()
        if groups.get(g) is not None
    ]
    result: dict[str, Any] = {
        "metric": metric,
        "by": similarity["config"].get("by"),
        "n": len(points),
    }
    result.update(points=points, rho=None, p=None)
    if len(points) >= MIN_POINTS:
        x = [p["similarity"] for p in points]
        y = [p["gain"] for p in points]
        if len(set(x)) > 1 and len(set(y)) > 1:
            test = stats.spearmanr(x, y)
            result["rho"], result["p"] = float(test.statistic), float(test.pvalue)
    return result


def correlations(
    rows: list[dict[str, Any]],
    targets: dict[str, Any],
    similarity: list[dict[str, Any]],
    metric: str,
    warnings: list[str],
) -> list[dict[str, Any]]:
    """One correlation per (target with a matching similarity report, student)."""
    out = []
    students = list(dict.fromkeys(r["student"] for r in rows if r["role"] == "distilled"))
    for report in similarity:
        task_source = report["config"]["task"]
        if metric not in report["metrics"]:
            raise UserError(
                f"--metric {metric!r} is not in the similarity report of {task_source!r}; "
                f"choose one of {', '.join(report['metrics'])}"
            )
        task_hash = report.get("corpus", {}).get("task", {}).get("source_hash")
        same = {task_source, task_hash} - {None}  # the path as typed, or the file's sha256
        keys = [
            k for k, t in targets.items() if same & {t["corpus_source"], t["corpus_source_hash"]}
        ]
        if not keys:
            warnings.append(f"similarity report of {task_source!r}: no finetuning target uses it")
        by = report["config"].get("by")
        for key in keys:
            wanted = GROUPED_BY[targets[key]["task"]]
            if by != wanted:
                warnings.append(
                    f"{key}: the similarity report of {task_source!r} is grouped by {by}, but "
                    f"{key} scores per {wanted}; left out (rerun similarity with --by {wanted})"
                )
                continue
            for student in students:
                gains = label_gains(rows, student, key)
                if gains is None:
                    warnings.append(
                        f"{key} {student}: no per-label scores at two task shares "
                        "(metrics.json 'per_label'); per-domain correlation left out"
                    )
                    continue
                found = correlate(gains, report, metric)
                out.append({"target": key, "student": student, **found})
                values = [point["similarity"] for point in found["points"]]
                tied = max((values.count(v) for v in values), default=0)
                if tied > TIES_SHARE * len(values):
                    warnings.append(
                        f"{key} {student}: {tied} of {len(values)} {found['by']} groups share one "
                        f"{metric} value, so ρ ranks mostly ties; a continuous metric "
                        "(--metric nn_cosine_q50) separates them"
                    )
    return out


def run_report(cfg: ReportConfig, similarity: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the report of `cfg.runs` (with loaded similarity reports), write its PNGs and
    RUNS/report.json, and return it."""
    runs = Path(cfg.runs)
    rows, warnings = load_results(runs)
    if not rows:
        raise UserError(f"{runs}: no completed finetuning runs in {RESULTS_FILE} yet")
    table, targets = build_table(rows)
    found = correlations(rows, targets, similarity or [], cfg.similarity_metric, warnings)
    report: dict[str, Any] = {"runs": str(runs), "targets": targets, "rows": table}
    report.update(correlations=found, warnings=warnings, plots={})
    try:
        _write_report(report, cfg, rows, runs)
    except OSError as err:
        if err.errno not in _NOT_WRITABLE:
            raise  # a full disk: the command line's handler says what to do
        raise UserError(
            f"{err.filename or runs}: {os.strerror(err.errno)}; report writes report.json "
            f"(and its PNGs, unless --plot / --similarity-plot put them elsewhere) into {runs}: "
            "copy that folder to a writable place and report the copy"
        ) from err
    return report


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _write_report(
    report: dict[str, Any], cfg: ReportConfig, rows: list[dict[str, Any]], runs: Path
) -> None:
    """The report's PNGs (their paths into ``report["plots"]``), then RUNS/report.json."""
    found, table, targets = report["correlations"], report["rows"], report["targets"]
    report["plots"]["sweep"] = plot_sweep(report, cfg.plot or str(runs / "report.png"))
    report["sizes"] = size_points(rows, table, targets, runs)
    if any(found["points"] for found in report["sizes"].values()):
        path = str(runs / "report_size.png")
        report["plots"]["size"] = plot_size(report, path, WITHIN_POINTS)
    if any(c["n"] for c in found):
        path = cfg.similarity_plot or str(runs / "report_similarity.png")
        report["plots"]["similarity"] = plot_correlations(report, path)
    write_json_atomic(runs / "report.json", report)


def _cell(stat: dict[str, Any] | None, percent: bool = False) -> str:
    """``0.850 ±0.071`` or ``-58.3% ±11.8`` (a relative change); no ± for a single seed. The
    space lets a narrow terminal wrap the spread under the mean."""
    if stat is None:
        return "—"
    if stat["mean"] is None:
        return "n/a"
    if percent:
        text, spread = f"{100 * stat['mean']:+.1f}%", f"{100 * (stat['std'] or 0):.1f}"
    else:
        text, spread = f"{stat['mean']:.3f}", f"{stat['std'] or 0:.3f}"
    return text if stat["std"] is None else f"{text} ±{spread}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The table (mean ± std over seeds; n = seeds), the correlations, plot paths, warnings.
    With a single student its name goes in the title instead of a column."""
    students = sorted({r["student"] for r in report["rows"] if r["role"] != "teacher"})
    alone = f", student {students[0]}" if len(students) == 1 else ""
    table = Table(title=f"sweep {report['runs']}{alone}: mean ± std over seeds")
    for column in ("run", "n") if alone else ("student", "run", "n"):
        table.add_column(column, no_wrap=True)
    for target in report["targets"].values():
        short = target["corpus"].rsplit("/", 1)[-1]
        for _, label in TARGET_METRICS[target["task"]]:
            table.add_column(f"{short}\n{label}", justify="right", min_width=6)
        table.add_column(f"{short}\n{ERROR_LABEL[target['task']]}", justify="right", min_width=6)
    for row in report["rows"]:
        cells, seeds = [], set()
        for key, target in report["targets"].items():
            entry = row["targets"].get(key)
            for name, _ in TARGET_METRICS[target["task"]]:
                cells.append(_cell(entry["metrics"][name]) if entry else "—")
                seeds |= set(entry["metrics"][name]["seeds"]) if entry else set()
            cells.append(_cell(entry["relative_error"], percent=True) if entry else "—")
        labels = (row["label"],) if alone else (row["student"], row["label"])
        table.add_row(*labels, str(len(seeds)), *cells)
    console.print(table)
    for c in report["correlations"]:
        rho = "—" if c["rho"] is None else f"{c['rho']:+.2f} (p = {c['p']:.3f})"
        console.print(
            f"{c['target']} {c['student']}: gain from task data vs {c['metric']} per "
            f"{c['by']} over {c['n']} labels: Spearman ρ = {rho}",
            highlight=False,
        )
    for line in size_lines(report.get("sizes", {})):
        console.print(line, highlight=False)
    for name, path in report["plots"].items():
        console.print(f"plot ({name}): {path}", highlight=False)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)

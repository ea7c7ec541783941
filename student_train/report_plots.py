"""The sweep report's PNGs: scores vs share of task data, and gain vs similarity per label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from matplotlib.ticker import FuncFormatter

BASELINE_STYLE = {"random": "--", "init": ":", "teacher": "-."}
PANEL = (4.2, 3.4)


def _panels(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target key, metric name, title) for every score of every target."""
    return [
        (key, name, f"{target['corpus']}: {label}")
        for key, target in report["targets"].items()
        for name, label in target["scores"]
    ]


def plot_sweep(report: dict[str, Any], path: str) -> str:
    """One panel per (target, score): a line per student over the share of task data (mean
    over seeds, ± std shaded); baselines as horizontal lines in the student's colour (random
    init dashed, init without KD dotted) and the teacher in black (dash-dot)."""
    panels = _panels(report)
    columns = min(4, len(panels))
    rows_n = -(-len(panels) // columns)
    fig = Figure(figsize=(PANEL[0] * columns, PANEL[1] * rows_n))
    axes = fig.subplots(rows_n, columns, squeeze=False)
    students = list(dict.fromkeys(r["student"] for r in report["rows"] if r["role"] != "teacher"))
    colours = {s: f"C{i}" for i, s in enumerate(students)}
    for ax, (key, name, title) in zip(axes.flat, panels, strict=False):
        for student in students:
            points = [
                (r["mix"], r["targets"][key]["metrics"][name])
                for r in report["rows"]
                if r["student"] == student
                and r["role"] == "distilled"
                and key in r["targets"]
                and r["targets"][key]["metrics"][name]["mean"] is not None
            ]
            if points:
                x = [mix for mix, _ in points]
                mean = [s["mean"] for _, s in points]
                std = [s["std"] or 0.0 for _, s in points]
                ax.plot(x, mean, marker="o", color=colours[student], label=f"{student} KD")
                low = [m - d for m, d in zip(mean, std, strict=True)]
                high = [m + d for m, d in zip(mean, std, strict=True)]
                ax.fill_between(x, low, high, color=colours[student], alpha=0.2)
        for r in report["rows"]:
            if r["role"] == "distilled" or key not in r["targets"]:
                continue
            if r["targets"][key]["metrics"][name]["mean"] is None:
                continue
            colour = "black" if r["role"] == "teacher" else colours[r["student"]]
            label = r["label"] if r["role"] == "teacher" else f"{r['student']} {r['label']}"
            ax.axhline(
                r["targets"][key]["metrics"][name]["mean"],
                color=colour,
                linestyle=BASELINE_STYLE[r["role"]],
                linewidth=1.2,
                label=label,
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("share of task data in the transfer set", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{report['runs']}: mean over seeds, ± std shaded", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_correlations(report: dict[str, Any], path: str) -> str:
    """One scatter per correlation: similarity of each label's texts to the generic corpus vs
    the accuracy gain from adding task data, with the Spearman ρ and p in the title."""
    found = [c for c in report["correlations"] if c["n"]]
    fig = Figure(figsize=(PANEL[0] * 1.2 * len(found), PANEL[1] * 1.2))
    axes = fig.subplots(1, len(found), squeeze=False)
    for ax, c in zip(axes.flat, found, strict=True):
        x = [p["similarity"] for p in c["points"]]
        y = [p["gain"] for p in c["points"]]
        ax.scatter(x, y, color="tab:blue")
        for p in c["points"]:
            ax.annotate(p["label"].removeprefix("atis_")[:18], (p["similarity"], p["gain"]),
                        fontsize=6, alpha=0.8)  # fmt: skip
        rho = "n/a" if c["rho"] is None else f"ρ = {c['rho']:+.2f}, p = {c['p']:.3f}"
        ax.set_title(f"{c['target']} ({c['student']})\nSpearman {rho}, n = {c['n']}", fontsize=9)
        ax.set_xlabel(f"{c['metric']} of the {c['by']} vs the generic corpus", fontsize=8)
        ax.set_ylabel("accuracy gain: most vs least task data", fontsize=8)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


ROLE_MARKER = {"distilled": "o", "init": "s", "random": "x", "teacher": "*"}
ROLE_LABELS = {"distilled": "KD (each share)", "init": "init, no KD", "random": "random init"}


def plot_size(report: dict[str, Any], path: str, within_points: float) -> str:
    """One panel per target: headline score (mean over seeds) against parameters (log scale)
    for every row with a saved model — a student's rows (shares of task data, baselines)
    stack at its size — with the teacher as a black star, its score dash-dot and
    `within_points` below it dotted: the smallest student above the dotted line is the one to
    ship."""
    sizes = report["sizes"]
    fig = Figure(figsize=(PANEL[0] * 1.2 * len(sizes), PANEL[1] * 1.2))
    axes = fig.subplots(1, len(sizes), squeeze=False)
    students = list(dict.fromkeys(r["student"] for r in report["rows"] if r["role"] != "teacher"))
    colours = {s: f"C{i}" for i, s in enumerate(students)}
    for ax, (key, found) in zip(axes.flat, sizes.items(), strict=True):
        for role, marker in ROLE_MARKER.items():
            for student in [*students, "teacher"]:
                points = [
                    p for p in found["points"] if p["role"] == role and p["student"] == student
                ]  # fmt: skip
                if not points:
                    continue
                colour = "black" if role == "teacher" else colours[student]
                label = "teacher" if role == "teacher" else f"{student} {ROLE_LABELS[role]}"
                ax.scatter(
                    [p["parameters"] / 1e6 for p in points],
                    [p["score"] for p in points],
                    marker=marker, color=colour, s=90 if role == "teacher" else 30, label=label,
                )  # fmt: skip
        teacher = found["teacher"]
        if teacher is not None:
            ax.axhline(teacher["score"], color="black", linestyle="-.", linewidth=1)
            ax.axhline(
                teacher["score"] - within_points / 100, color="grey", linestyle=":",
                linewidth=1, label=f"teacher − {within_points:g} point",
            )  # fmt: skip
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:g}"))  # 14, not 1.4 × 10^1
        ax.set_title(f"{key}: {found['metric']} vs size", fontsize=9)
        ax.set_xlabel("parameters (millions, model.safetensors)", fontsize=8)
        ax.set_ylabel(f"{found['metric']} (mean over seeds)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path

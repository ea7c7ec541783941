"""A similarity report as a rich terminal table and as a PNG (used by the CLI and by `show`)."""

from __future__ import annotations

import itertools
from typing import Any

from rich.console import Console
from rich.table import Table

MAX_PLOTTED_GROUPS = 12
GROUP_COLUMNS = ("coverage", "density", "nn_cosine_q50", "classifier_auc", "unigram_jsd")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _with_ci(entry: dict[str, Any], key: str = "value", ci: str = "ci") -> str:
    interval = entry.get(ci)
    text = _fmt(entry.get(key))
    return text if not interval else f"{text} [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def print_report(report: dict[str, Any], console: Console) -> None:
    """Global metrics, per-group headline metrics, near-duplicates and warnings."""
    config, sizes = report["config"], report["sizes"]
    console.print(
        f"[bold]task[/bold] {config['task']} ({sizes['task']})  vs  "
        f"[bold]generic[/bold] {config['generic']} ({sizes['generic']})  "
        f"encoder {config['encoder']}  k={report['index']['k']}"
    )
    table = Table(
        title="similarity of the task to the generic corpus (normalised: 1 = task vs itself, "
        "0 = unrelated)"
    )
    for column in ("metric", "value [CI]", "same", "unrelated", "normalised [CI]"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in report["global"].items():
        meta = report["metrics"][name]
        label = f"[bold]{meta['label']}[/bold]" if meta["headline"] else meta["label"]
        table.add_row(
            label,
            _with_ci(entry),
            _fmt(entry["same"]),
            _fmt(entry["unrelated"]),
            _with_ci(entry, "normalised", "normalised_ci"),
        )
    console.print(table)
    if report["groups"]:
        groups = Table(title=f"per {config.get('by') or 'group'} (value / normalised)")
        groups.add_column("group")
        groups.add_column("n", justify="right")
        shown = [name for name in GROUP_COLUMNS if name in report["global"]]
        for name in shown:
            groups.add_column(report["metrics"][name]["label"], justify="right")
        for group in report["groups"]:
            cells = [
                f"{_fmt(metrics[n]['value'])} / {_fmt(metrics[n]['normalised'], 2)}"
                for metrics in [group["metrics"]]
                for n in shown
            ]
            groups.add_row(group["name"], str(group["n"]), *cells)
        console.print(groups)
    dups = report["near_duplicates"]
    console.print(
        f"near-duplicates (cosine >= {dups['threshold']} or identical text): {dups['count']} "
        f"{dups['by_split']}"
    )
    _print_pairs(dups["items"], "~", console)
    print_exact_duplicates(report["exact_duplicates"], config.get("by"), console)
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def print_exact_duplicates(dups: dict[str, Any] | None, by: str | None, console: Console) -> None:
    """Per split (test first) and per group: task texts found in the whole generic corpus."""
    if dups is None:
        console.print("exact duplicates: not checked (--no-exact-duplicates)")
        return
    splits = list(dups["by_split"])
    table = Table(
        title=f"exact duplicates: task texts in the whole generic corpus "
        f"({dups['generic_scanned']:,} scanned, {dups['generic_matching']:,} match)"
    )
    table.add_column(by or "task")
    for split in splits:
        table.add_column(f"{split} found / texts", justify="right")
    for row in [{"name": "all", **dups}, *dups["groups"]]:
        cells = []
        for split in splits:
            entry = row["by_split"].get(split)
            cells.append("—" if entry is None else f"{entry['found']} / {entry['texts']}")
        table.add_row(row["name"], *cells)
    console.print(table)
    _print_pairs(dups["items"], "=", console)


def _print_pairs(items: list[dict[str, Any]], relation: str, console: Console) -> None:
    """The first few listed (task text, generic text) pairs, with the cosine where there is one."""
    for item in items[:5]:
        cosine = f" ({_fmt(item['nn_cosine'])})" if "nn_cosine" in item else ""
        console.print(
            f"  [{item['split']}] {item['task_id']}: {item['task_text']!r} {relation} "
            f"{item['generic_id']}: {item['generic_text']!r}{cosine}",
            markup=False,
            highlight=False,
        )


def plot_report(report: dict[str, Any], path: str) -> None:
    """Left: per-group top-1 NN-cosine distributions; right: coverage per group with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = report["histogram_edges"]
    centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
    groups = report["groups"][:MAX_PLOTTED_GROUPS]
    series = [("all", report["global_nn_cosine_histogram"], report["global"]["coverage"])]
    series += [
        (group["name"], group["nn_cosine_histogram"], group["metrics"]["coverage"])
        for group in groups
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for name, counts, _ in series:
        total = sum(counts) or 1
        left.plot(
            centres, [c / total for c in counts], label=name, lw=2.2 if name == "all" else 1.2
        )
    left.set_xlabel("cosine to nearest generic text")
    left.set_ylabel("share of task texts")
    left.set_title("top-1 nearest-neighbour cosine")
    left.legend(fontsize=7, ncol=2)
    names = [name for name, _, _ in series]
    values = [entry["value"] or 0.0 for _, _, entry in series]
    lows = [v - (e["ci"] or [v, v])[0] for v, (_, _, e) in zip(values, series, strict=True)]
    highs = [(e["ci"] or [v, v])[1] - v for v, (_, _, e) in zip(values, series, strict=True)]
    right.barh(
        range(len(names)), values, xerr=[lows, highs], color="tab:blue", alpha=0.8, capsize=3
    )
    same = [entry["same"] for _, _, entry in series]
    right.scatter(
        [s if s is not None else float("nan") for s in same],
        range(len(names)),
        color="black",
        marker="|",
        s=200,
        label="split-half reference",
    )
    right.set_yticks(range(len(names)), names, fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 1.05)
    right.set_xlabel("coverage of task neighbourhoods by generic")
    right.set_title("coverage (95% bootstrap interval)")
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{report['config']['task']} vs {report['config']['generic']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""`kdcache inspect`: what a store holds, what it cost on disk, and how complete it is."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from logit_store.reader import Store

POSITION_ARRAYS = ("positions", "masked_ids")


def _bytes(info: dict[str, Any], arrays: tuple[str, ...]) -> int:
    """Stored bytes of `arrays` over the done units (from their done records' manifests)."""
    return sum(int(info["bytes"].get(name, 0)) for name in arrays)


def inspect_summary(store: Store) -> dict[str, Any]:
    """A JSON-able summary: provenance, encoding, per-corpus sizes, bytes and completeness."""
    meta = store.meta
    target_arrays = ("target_ids", "id_table", *meta.target_encoding.stored_arrays())
    corpora = []
    for name in store.corpora:
        c = store[name]
        info = c.info
        counts = info["counts"]
        positions = max(int(counts["positions"]), 1)
        target_bytes = _bytes(info, target_arrays)
        corpora.append(
            {
                "name": name,
                "source": info.get("source", ""),
                "sequences": int(counts["sequences"]),
                "tokens": int(counts["tokens"]),
                "labelled_positions": int(counts["positions"]),
                "units_done": len(c.done_units),
                "units_total": c.n_units,
                "complete": c.complete,
                "skipped": info.get("skipped", {}),
                "skip_examples": info.get("skip_examples", []),
                "target_bytes": target_bytes,
                "target_bytes_per_position": round(target_bytes / positions, 2),
                "position_bytes_per_position": round(
                    (_bytes(info, POSITION_ARRAYS) + target_bytes) / positions, 2
                ),
            }
        )
    return {
        "store": store.url,
        "format_version": meta.format_version,
        "tool_version": meta.tool_version,
        "teacher": {"id": meta.teacher_id, "hash": meta.teacher_hash},
        "tokenizer": {
            "id": meta.tokenizer_id,
            "hash": meta.tokenizer_hash,
            "vocab_size": meta.vocab_size,
        },
        "mode": meta.mode,
        "task_kind": meta.task_kind,
        "label_names": list(meta.label_names),
        "encoding": meta.encoding,
        **meta.target_encoding.summary(),
        "masking": meta.masking,
        "max_length": meta.max_length,
        "complete": all(c["complete"] for c in corpora),
        "corpora": corpora,
        "extra": meta.extra,
    }


def print_summary(summary: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{summary['store']}[/bold]  "
        f"(format v{summary['format_version']}, {summary['tool_version']})"
    )
    console.print(
        f"teacher    {summary['teacher']['id']}  [dim]{summary['teacher']['hash'][:16]}[/dim]"
    )
    tok = summary["tokenizer"]
    console.print(f"tokenizer  {tok['id']}  V={tok['vocab_size']}  [dim]{tok['hash'][:16]}[/dim]")
    console.print(
        f"targets    mode={summary['mode']}  {summary['encoding']} {summary['settings']}  "
        f"values={summary['value_dtype']}  max_length={summary['max_length']}  "
        f"masking={summary['masking']}"
    )
    table = Table(title=None)
    for col in (
        "corpus",
        "sequences",
        "tokens",
        "labelled pos.",
        "B/pos (targets)",
        "B/pos (all)",
        "units",
        "skipped",
    ):
        left = col in ("corpus", "skipped")
        table.add_column(col, justify="left" if left else "right", overflow="fold")
    for c in summary["corpora"]:
        units = f"{c['units_done']}/{c['units_total']}"
        table.add_row(
            c["name"],
            f"{c['sequences']:,}",
            f"{c['tokens']:,}",
            f"{c['labelled_positions']:,}",
            f"{c['target_bytes_per_position']:.1f}",
            f"{c['position_bytes_per_position']:.1f}",
            units if c["complete"] else f"[yellow]{units}[/yellow]",
            ", ".join(f"{k}={v}" for k, v in c["skipped"].items()) or "-",
        )
    console.print(table)
    print_skip_examples(summary["corpora"], console)
    state = (
        "[green]complete[/green]"
        if summary["complete"]
        else "[yellow]incomplete: rerun precompute to finish[/yellow]"
    )
    console.print(f"status     {state}")


def print_skip_examples(corpora: list[dict[str, Any]], console: Console) -> None:
    """The first skipped or truncated lines of each corpus, as "FILE:LINE: reason"."""
    for c in corpora:
        for example in c.get("skip_examples", []):
            console.print(f"  {c['name']}: {example}", highlight=False, markup=False)

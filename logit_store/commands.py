"""`kdcache inspect` and `kdcache verify` (registered on the app in cli.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from logit_store.cli_options import StorageOption, console, print_skip_examples, storage_options
from logit_store.inspect import inspect_summary
from logit_store.store import open_store
from logit_store.verify import verify_store


def inspect(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    storage_option: StorageOption = None,
) -> None:
    """Show corpora, sizes, encoding, bytes per position, teacher, tokenizer and completeness."""
    opened = open_store(store, storage_options=storage_options(storage_option))
    summary = inspect_summary(opened)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, console)


def verify(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    storage_option: StorageOption = None,
) -> None:
    """Read every chunk (checksums) and check completeness and internal consistency."""

    def progress(line: str) -> None:
        console.print(escape(line), soft_wrap=True)  # one line each, as the faults

    faults = verify_store(store, storage_options(storage_option), progress=progress)
    if faults:
        for fault in faults:
            console.print(f"[red]FAULT[/red] {escape(fault)}", soft_wrap=True)  # one line each
        raise typer.Exit(1)
    console.print("[green]OK[/green] store is complete and consistent")


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
    for name in summary.get("lost_corpora", []):
        console.print(
            f"[red]lost[/red]       corpus {escape(repr(name))}: its group is gone (deleted?); "
            "`kdcache verify` says how to compute it again",
            soft_wrap=True,
        )
    state = (
        "[green]complete[/green]"
        if summary["complete"]
        else "[yellow]incomplete: rerun precompute to finish[/yellow]"
    )
    console.print(f"status     {state}")

"""`kdcache inspect` and `kdcache verify` (registered on the app in cli.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from logit_store.cli_options import StorageOption, console, storage_options
from logit_store.inspect import inspect_summary, print_summary
from logit_store.reader import open_store
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
    faults = verify_store(store, storage_options=storage_options(storage_option), console=console)
    if faults:
        for fault in faults:
            console.print(f"[red]FAULT[/red] {fault}")
        raise typer.Exit(1)
    console.print("[green]OK[/green] store is complete and consistent")

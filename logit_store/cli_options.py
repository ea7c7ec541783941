"""Command-line pieces every package's commands share: the console, store URL options, engines,
the printing of skipped-line examples.

Each package's `commands` module declares its own typer commands with these; `cli.py` collects
them into the one `kdcache` app.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

from logit_store.errors import UserError

console = Console()


def config_defaults(cls: type) -> dict[str, Any]:
    """field name -> default of the config dataclass `cls` (fields without one are left out):
    a command's typer options read their defaults here, so each is stated once, on its class."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def storage_options(pairs: list[str] | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--storage-option {pair!r}: expected KEY=VALUE")
        options[key] = value
    return options


StorageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="fsspec option KEY=VALUE for a store URL (repeatable), e.g. "
        "endpoint_url=http://HOST:9000, anon=true, client_kwargs.region_name=eu-west-1. "
        "Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL etc.",
    ),
]


class Engine(StrEnum):
    local = "local"
    ray = "ray"


EngineOption = Annotated[
    Engine,
    typer.Option(help="local (this process, or torchrun's) or ray (needs the ray extra)."),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(help="--engine ray: cluster to join (auto, HOST:6379); default: a local one."),
]


def print_skip_examples(corpora: list[dict[str, Any]], console: Console) -> None:
    """The first skipped or truncated lines of each corpus, as "FILE:LINE: reason"."""
    for c in corpora:
        for example in c.get("skip_examples", []):
            console.print(f"  {c['name']}: {example}", highlight=False, markup=False)

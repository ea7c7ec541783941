"""`kdcache similarity` and `kdcache similarity show` (added to the app in cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from logit_store import UserError
from logit_store.cli_options import StorageOption, config_defaults, console, storage_options
from similarity.config import CompareSettings, SimilarityConfig

SIMILARITY, COMPARE = config_defaults(SimilarityConfig), config_defaults(CompareSettings)

similarity_app = typer.Typer(
    add_completion=False,
    help="How close a task corpus is to a generic corpus (coverage, density, NN cosine, ...).",
)


@similarity_app.callback(invoke_without_command=True)
def similarity(
    ctx: typer.Context,
    generic: Annotated[str | None, typer.Option(help="Generic corpus SOURCE.")] = None,
    task: Annotated[str | None, typer.Option(help="Task corpus SOURCE.")] = None,
    out: Annotated[str | None, typer.Option(help="Report JSON path.")] = None,
    by: Annotated[
        str | None, typer.Option(help="Group the task by domain, intent, locale or split.")
    ] = SIMILARITY["by"],
    encoder: Annotated[
        str | None,
        typer.Option(help="Sentence encoder path/name or a store (its teacher); default MiniLM."),
    ] = SIMILARITY["encoder"],
    max_per_side: Annotated[
        int, typer.Option(help="Texts sampled at random per side.")
    ] = SIMILARITY["max_per_side"],
    exact_duplicates: Annotated[
        bool,
        typer.Option(
            help="Look every task text up in the whole generic corpus (normalised exact match); "
            "--no-exact-duplicates skips it (the generic pass then runs ~1.7x faster)."
        ),
    ] = SIMILARITY["exact_duplicates"],
    seed: Annotated[int, typer.Option(help="Sampling / bootstrap seed.")] = COMPARE["seed"],
    k: Annotated[int, typer.Option(help="Neighbourhood size for coverage / density.")] = COMPARE[
        "k"
    ],
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates per interval.")] = COMPARE[
        "bootstrap"
    ],
    plot: Annotated[str | None, typer.Option(help="Also write a PNG here.")] = SIMILARITY["plot"],
    storage_option: StorageOption = None,
) -> None:
    """Compare --task with --generic and write a report; `similarity show REPORT` re-prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from similarity import run_similarity
    from similarity.render import print_report

    missing = [
        name
        for name, value in (("--generic", generic), ("--task", task), ("--out", out))
        if value is None
    ]
    if missing:
        raise UserError(f"kdcache similarity: missing {', '.join(missing)} (or use `show REPORT`)")
    config = SimilarityConfig(
        generic=str(generic),
        task=str(task),
        out=str(out),
        by=by,  # type: ignore[arg-type]  # validated in SimilarityConfig
        encoder=encoder,
        max_per_side=max_per_side,
        exact_duplicates=exact_duplicates,
        plot=plot,
        settings=CompareSettings(k=k, bootstrap=bootstrap, seed=seed),
        storage_options=storage_options(storage_option),
    )
    print_report(run_similarity(config), console)


@similarity_app.command("show")
def similarity_show(
    report: Annotated[str, typer.Argument(help="A saved similarity report JSON.")],
) -> None:
    """Re-print a saved similarity report."""
    from similarity import load_report
    from similarity.render import print_report

    print_report(load_report(report), console)

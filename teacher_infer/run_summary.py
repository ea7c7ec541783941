"""What a precompute run reports: the teacher's fields, per-corpus counts read back from the
store, and the table `kdcache precompute` prints (both engines)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from logit_store import open_store
from logit_store.cli_options import print_skip_examples
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.corpora import CorpusError, no_text_read
from teacher_infer.teacher import Teacher


def teacher_fields(teacher: Teacher) -> dict[str, Any]:
    """What a run summary says of the teacher."""
    return {
        "teacher_hash": teacher.weights_hash,
        "device": str(teacher.device),
        "dtype": str(teacher.dtype).removeprefix("torch."),
        "head_at_positions": teacher.head_at_positions,
    }


def describe_run(
    teacher: dict[str, Any], config: PrecomputeConfig, computed: dict[str, int]
) -> dict[str, Any]:
    """The summary fields every engine reports: `teacher_fields`, and per-corpus counts read
    back from the store (`computed`: units computed per corpus by this run). A corpus whose
    units are all done and hold no sequence (every record skipped: empty lines, malformed
    JSON) is refused as `read_corpus` refuses it, not reported as a store of 0 sequences."""
    store = open_store(config.out, storage_options=dict(config.storage_options) or None)
    corpora = {}
    for name, source in config.corpora:
        corpus = store[name]
        info = corpus.info
        if corpus.complete and not info["counts"]["sequences"]:
            raise CorpusError(
                f"{no_text_read(source, info['skipped'], info['skip_examples'])}; fix the "
                f"corpus and write it to a new --out store (store {config.out} holds none of it)"
            )
        corpora[name] = {
            "sequences": info["counts"]["sequences"],
            "tokens": info["counts"]["tokens"],
            "positions": info["counts"]["positions"],
            "units": corpus.n_units,
            "units_done": len(corpus.done_units),
            "units_computed": computed.get(name, 0),
            "skipped": info["skipped"],
            "skip_examples": info["skip_examples"],
        }
    return {"store": config.out, **teacher, "corpora": corpora}


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """A table per corpus, then the elapsed time and throughput."""
    table = Table(title=f"precompute -> {summary['store']}")
    for col in ("corpus", "sequences", "tokens", "positions", "units (computed/total)", "skipped"):
        table.add_column(col, overflow="fold")
    for name, c in summary["corpora"].items():
        skipped = ", ".join(f"{k}={v}" for k, v in c["skipped"].items() if v) or "-"
        table.add_row(
            name,
            str(c["sequences"]),
            str(c["tokens"]),
            str(c["positions"]),
            f"{c['units_computed']}/{c['units']}",
            skipped,
        )
    console.print(table)
    print_skip_examples([{"name": n, **c} for n, c in summary["corpora"].items()], console)
    rate = summary["tokens_computed"] / max(summary["compute_s"], 1e-9)
    console.print(
        f"{summary['device']} {summary['dtype']}: {summary['tokens_computed']} tokens computed "
        f"at {rate:,.0f} tokens/s; elapsed {summary['elapsed_s']:.1f} s (incl. load and plan)"
    )

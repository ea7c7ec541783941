"""`kdcache precompute`: run the teacher once over corpora and fill a store, resumably.

    config = PrecomputeConfig(teacher="path", corpora=(("task", "demo:atis"),), out="store.zarr")
    summary = run_precompute(config)

Steps: load the teacher (hashing weights and tokenizer), read and plan every corpus (tokenize,
truncate, mask: `plan.py`), `create_store` (which refuses an existing store written with another
teacher, tokenizer or setting, naming the field), then compute every *pending* unit and hand it
to a background writer thread through a bounded queue, so the teacher never waits for storage
and memory stays flat. Resuming is rerunning the same command: done units are skipped, and
units are batched only internally, so the result equals an uninterrupted run's.

Under `torchrun` (WORLD_SIZE > 1) rank 0 creates the store, all ranks wait at a barrier, read
the pending units and meet again (so all split the same list), then rank r computes
pending[r::world] of every corpus and all ranks meet at a final barrier.

The steps are public for the Ray engine (`ray_engine.py`), which runs them in its actors:
`load_and_plan`, `open_writer`, `compute_units` (the one unit-writing path) and `describe_run`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from logit_store import StoreMeta, StoreWriter, Unit, UnitData, UserError, create_store
from logit_store.arrays import check_store_target
from logit_store.inspect import print_skip_examples
from teacher_infer.corpora import read_corpus
from teacher_infer.plan import MaskingSpec, PlannedCorpus, plan_corpus
from teacher_infer.teacher import DTYPES, Teacher, check_max_length, load_teacher
from teacher_infer.unit_targets import LaunchedUnit, TargetSpec, launch_unit

WRITE_QUEUE_DEPTH = 4  # units computed but not yet written (bounds host memory)
# On a GPU, host cores are free for compression; on a CPU every writer thread takes a core
# from the teacher, so one is enough to overlap I/O.
WRITER_THREADS = {"cuda": 3, "cpu": 1}


@dataclass(frozen=True)
class PrecomputeConfig:
    """Everything `kdcache precompute` needs; validated on construction (UserError naming the flag).

    corpora: (name, source) pairs; sources are whatever `teacher_infer.corpora.read_corpus` reads.
    token_budget: max B * Lmax per forward pass. unit_size: sequences per resumable unit.
    """

    teacher: str
    corpora: tuple[tuple[str, str], ...]
    out: str
    mode: str = "mlm"
    encoding: str = "topk"
    k: int = 32
    n_samples: int = 50
    max_length: int = 128
    mask_prob: float = 0.15
    seed: int = 0
    positions: str = "masked"
    token_budget: int = 8192
    unit_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    value_dtype: str = "q8"
    storage_options: Mapping[str, str] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        choices = {
            "mode": ("mlm", "task"),
            "encoding": ("topk", "sampled"),
            "positions": ("masked", "all"),
            "dtype": ("auto", *DTYPES),
            "value_dtype": ("q8", "fp16"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                flag = name.replace("_", "-")
                raise UserError(f"--{flag} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not self.corpora:
            raise UserError("give at least one --corpus NAME=SOURCE")
        names = [name for name, _ in self.corpora]
        if len(set(names)) != len(names):
            raise UserError(f"--corpus names must be unique, got {names}")
        if self.k < 1 or self.n_samples < 1:
            raise UserError(f"--k and --samples must be >= 1, got {self.k}, {self.n_samples}")
        if self.max_length < 3:
            raise UserError(
                f"--max-length must be >= 3 (specials + a token), got {self.max_length}"
            )
        if not 0.0 <= self.mask_prob <= 1.0:
            raise UserError(f"--mask-prob must be in [0, 1], got {self.mask_prob}")
        if self.mode == "mlm" and self.positions == "masked" and self.mask_prob == 0.0:
            raise UserError(
                "--mask-prob 0 leaves nothing masked: use --positions all or mask-prob > 0"
            )
        if self.token_budget < self.max_length:
            raise UserError(
                f"--token-budget {self.token_budget} must be >= --max-length {self.max_length}"
            )
        if self.unit_size < 1:
            raise UserError(f"--unit-size must be >= 1, got {self.unit_size}")


def build_meta(teacher: Teacher, config: PrecomputeConfig, masking: MaskingSpec) -> StoreMeta:
    tok = teacher.tokenizer
    return StoreMeta(
        teacher_id=config.teacher,
        teacher_hash=teacher.weights_hash,
        tokenizer_id=config.teacher,
        tokenizer_hash=teacher.tok_hash,
        vocab_size=teacher.vocab_size,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        mask_token_id=tok.mask_token_id,
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        mode=config.mode,
        task_kind=teacher.task_kind,
        label_names=teacher.label_names,
        encoding=config.encoding,
        k=config.k if config.encoding == "topk" else 0,
        n_samples=config.n_samples if config.encoding == "sampled" else 0,
        value_dtype=config.value_dtype,
        masking=masking.to_meta(),
        max_length=config.max_length,
        extra={
            "device": str(teacher.device),
            "dtype": str(teacher.dtype).removeprefix("torch."),
            "head_at_positions": teacher.head_at_positions,
        },
    )


class BackgroundWriter:
    """Writes units on threads fed by a bounded queue; a write error resurfaces on put/close.

    Units own disjoint shards, so several threads can write different units at once; encoding
    (numpy sorts) and compression (blosc, zstd) release the GIL for most of their time.
    """

    def __init__(self, writer: StoreWriter, threads: int, depth: int = WRITE_QUEUE_DEPTH) -> None:
        self.writer = writer
        self.queue: queue.Queue[tuple[Unit, UnitData] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._loop, name=f"kdcache-writer-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_unit(*item)
                except BaseException as err:  # re-raised on the compute thread
                    self.error = err

    def put(self, unit: Unit, data: UnitData) -> None:
        self._raise()
        self.queue.put((unit, data))

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class UnitProgress:
    """Context manager; `ticker(corpus)` returns the per-batch callback for `launch_unit`.

    Totals count only the sequences of units this process will compute (pending, its rank's).
    """

    def __init__(self, work: dict[str, list[Unit]], console: Console, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("seq"),
            TextColumn("{task.fields[rate]:>10} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}
        self.tokens: dict[str, int] = {}
        self.started: dict[str, float] = {}
        for name, units in work.items():
            total = sum(u.stop - u.start for u in units)
            self.tasks[name] = self.progress.add_task(name, total=total, rate="-")
            self.tokens[name] = 0

    def __enter__(self) -> UnitProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def ticker(self, corpus: str) -> Callable[[int, int], None]:
        task = self.tasks[corpus]
        self.started.setdefault(corpus, time.perf_counter())

        def tick(n_sequences: int, n_tokens: int) -> None:
            self.tokens[corpus] += n_tokens
            elapsed = max(time.perf_counter() - self.started[corpus], 1e-9)
            rate = f"{self.tokens[corpus] / elapsed:,.0f}"
            self.progress.update(task, advance=n_sequences, rate=rate)

        return tick


def _distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) with the process group initialised under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    rank = int(os.environ["RANK"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def plan_corpora(
    teacher: Teacher, config: PrecomputeConfig, masking: MaskingSpec
) -> list[PlannedCorpus]:
    planned = []
    for name, source in config.corpora:
        texts, report = read_corpus(source, seed=config.seed)
        planned.append(
            plan_corpus(
                name,
                texts,
                report,
                teacher.tokenizer,
                masking,
                config.max_length,
                teacher.vocab_size,
                config.unit_size,
            )
        )
    return planned


def load_and_plan(
    config: PrecomputeConfig, device: str
) -> tuple[Teacher, StoreMeta, list[PlannedCorpus]]:
    """Load the teacher on `device`, build the store metadata and plan every corpus."""
    teacher = load_teacher(config.teacher, config.mode, device, config.dtype)
    check_max_length(teacher.model, config.teacher, config.max_length)
    masking = MaskingSpec(
        config.mode, teacher.task_kind, config.mask_prob, config.seed, config.positions
    )
    return teacher, build_meta(teacher, config, masking), plan_corpora(teacher, config, masking)


def open_writer(
    config: PrecomputeConfig, meta: StoreMeta, planned: list[PlannedCorpus]
) -> StoreWriter:
    """Create the store, or reopen it after checking that it was made with these settings."""
    options = dict(config.storage_options) or None
    return create_store(config.out, meta, [p.plan for p in planned], options)


def _hand_over(launched: LaunchedUnit, background: BackgroundWriter) -> int:
    """Wait for a launched unit, queue it for writing; returns its token count."""
    data = launched.finish()
    background.put(launched.unit, data)
    return len(data.input_ids)


def compute_units(
    teacher: Teacher,
    config: PrecomputeConfig,
    work: list[tuple[PlannedCorpus, Unit]],
    writer: StoreWriter,
    ticker: Callable[[str], Callable[[int, int], None]] | None = None,
) -> int:
    """Compute and write every (corpus, unit) of `work`; returns the tokens computed.

    Unit u + 1 is launched before unit u is finished (the device stays busy) and finished units
    are written by background threads; every unit is written (done flag last) on return.
    """
    spec = TargetSpec(config.encoding, config.k, config.n_samples, config.seed)
    background = BackgroundWriter(writer, WRITER_THREADS.get(teacher.device.type, 1))
    tokens = 0
    try:
        previous: LaunchedUnit | None = None
        for corpus, unit in work:
            tick = ticker(corpus.name) if ticker is not None else None
            launched = launch_unit(teacher, corpus, unit, spec, config.token_budget, tick)
            if previous is not None:  # the device is already busy with `launched`
                tokens += _hand_over(previous, background)
            previous = launched
        if previous is not None:
            tokens += _hand_over(previous, background)
    finally:
        background.close()
    return tokens


def describe_run(
    teacher: Teacher, planned: list[PlannedCorpus], writer: StoreWriter, computed: dict[str, int]
) -> dict[str, Any]:
    """The summary fields every engine reports: teacher, device and per-corpus counts
    (`computed`: units computed per corpus)."""
    return {
        "store": writer.url,
        "teacher_hash": teacher.weights_hash,
        "device": str(teacher.device),
        "dtype": str(teacher.dtype).removeprefix("torch."),
        "head_at_positions": teacher.head_at_positions,
        "corpora": {
            p.name: {
                "sequences": p.plan.num_sequences,
                "tokens": int(p.plan.lengths.sum()),
                "positions": int(p.plan.n_positions.sum()),
                "units": len(writer.units(p.name)),
                "units_computed": computed[p.name],
                "skipped": dict(p.plan.skipped),
                "skip_examples": list(p.plan.skip_examples),
            }
            for p in planned
        },
    }


def run_precompute(config: PrecomputeConfig, console: Console | None = None) -> dict[str, Any]:
    """Fill `config.out` with teacher targets for every pending unit; returns a summary dict."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    check_store_target(config.out, dict(config.storage_options))  # before the slow steps
    rank, world, device = _distributed(config.device)
    teacher, meta, planned = load_and_plan(config, device)
    if rank == 0:
        writer = open_writer(config, meta, planned)
    _barrier(world)
    if rank != 0:
        writer = open_writer(config, meta, planned)
    pending = {p.name: writer.pending(p.name) for p in planned}
    _barrier(world)  # every rank reads the same done flags before any rank writes a unit
    work = {name: units[rank::world] for name, units in pending.items()}

    compute_started = time.perf_counter()
    with UnitProgress(work, console, enabled=config.progress and rank == 0) as progress:
        mine = [(corpus, unit) for corpus in planned for unit in work[corpus.name]]
        computed_tokens = compute_units(teacher, config, mine, writer, progress.ticker)
    compute_s = time.perf_counter() - compute_started
    _barrier(world)
    return {
        **describe_run(teacher, planned, writer, {n: len(units) for n, units in work.items()}),
        "rank": rank,
        "world_size": world,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "compute_s": round(compute_s, 3),
        "tokens_computed": computed_tokens,
    }


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

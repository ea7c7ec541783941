"""`kdcache precompute`: run the teacher once over corpora and fill a store, resumably.

    config = PrecomputeConfig(teacher="path", corpora=(("task", "demo:atis"),), out="store.zarr")
    summary = run_precompute(config)

Steps: load the teacher (hashing weights and tokenizer); index every corpus (one cheap pass by
one process, `corpus_index.py`: units of `unit_size` records; a rerun reuses the index stored
in the store after checking the files' sizes and times); `create_store`, which is create-once
and refuses an existing store written with another teacher, tokenizer, setting or source,
naming the field; then compute every *pending* unit. Worker processes read, tokenize, mask and
batch units ahead of the device (`unit_pipeline.py`, `--workers`); the device runs the teacher
and top-k / sampling (`unit_targets.py`); background writer threads encode, compress and write
each unit through a bounded queue, so the teacher never waits for storage and memory stays
flat. Resuming is rerunning the same command: done units are skipped, and units are batched
only internally, so the result equals an uninterrupted run's. At the end the done records are
consolidated into the store's summary (`logit_store/summary.py`).

Under `torchrun` (WORLD_SIZE > 1) rank 0 indexes and creates the store, all ranks wait at a
barrier, read the stored index and the pending units and meet again (so all split the same
list), then rank r prepares and computes pending[r::world] of every corpus; after a final
barrier rank 0 consolidates.

The steps are public for the Ray engine (`ray_engine.py`), which runs them in its actors:
`load_teacher_for`, `open_writer`, `compute_units` (the one unit-writing path) and
`describe_run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.table import Table

from logit_store import (
    ENCODINGS,
    StoreMeta,
    StoreWriter,
    UserError,
    check_store_target,
    consolidate_store,
    create_store,
    encoding_from_meta,
    open_store,
    print_skip_examples,
)
from teacher_infer.corpus_index import CorpusIndex
from teacher_infer.plan import MaskingSpec
from teacher_infer.progress import UnitProgress
from teacher_infer.store_corpora import corpus_spec, index_corpora
from teacher_infer.teacher import DTYPES, Teacher, check_max_length, load_teacher
from teacher_infer.unit_pipeline import UnitSource, default_workers, unit_loader
from teacher_infer.unit_targets import LaunchedUnit, TargetSpec, launch_unit
from teacher_infer.unit_writer import WRITER_THREADS, BackgroundWriter


@dataclass(frozen=True)
class PrecomputeConfig:
    """Everything `kdcache precompute` needs; validated on construction (UserError naming the flag).

    corpora: (name, source) pairs; sources are whatever `teacher_infer.corpora.read_corpus` reads.
    token_budget: max B * Lmax per forward pass. unit_size: source records per resumable unit.
    workers: host processes that read, tokenize and batch units (None: `default_workers()`).
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
    workers: int | None = None

    def __post_init__(self) -> None:
        choices = {
            "mode": ("mlm", "task"),
            "encoding": tuple(ENCODINGS),
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
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")


def build_meta(teacher: Teacher, config: PrecomputeConfig, masking: MaskingSpec) -> StoreMeta:
    tok = teacher.tokenizer
    classes = len(teacher.label_names) if config.mode == "task" else teacher.vocab_size
    # the flags under their metadata keys; the encoding overrides what it stores (k capped at
    # the class count, the keys it does not use)
    settings: dict[str, Any] = {
        "encoding": config.encoding,
        "k": config.k,
        "n_samples": config.n_samples,
        "value_dtype": config.value_dtype,
    }
    encoding = encoding_from_meta(settings)
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
        **(settings | encoding.fitted(classes).to_meta()),
        masking=masking.to_meta(),
        max_length=config.max_length,
        extra={
            "device": str(teacher.device),
            "dtype": str(teacher.dtype).removeprefix("torch."),
            "head_at_positions": teacher.head_at_positions,
        },
    )


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


def load_teacher_for(
    config: PrecomputeConfig, device: str
) -> tuple[Teacher, StoreMeta, MaskingSpec]:
    """Load the teacher on `device` and build the store metadata; refuses positions beyond the
    teacher's embeddings."""
    teacher = load_teacher(config.teacher, config.mode, device, config.dtype)
    check_max_length(teacher.model, config.teacher, config.max_length)
    masking = MaskingSpec(
        config.mode, teacher.task_kind, config.mask_prob, config.seed, config.positions
    )
    return teacher, build_meta(teacher, config, masking), masking


def corpus_indexes(config: PrecomputeConfig) -> dict[str, CorpusIndex]:
    """The index of every corpus of `config` (`store_corpora.index_corpora`: the store's own
    when its files are unchanged, else a fresh pass checked against it)."""
    options = dict(config.storage_options) or None
    return index_corpora(config.corpora, config.out, config.unit_size, config.seed, options)


def open_writer(
    config: PrecomputeConfig, meta: StoreMeta, indexes: dict[str, CorpusIndex]
) -> StoreWriter:
    """Create the store, or join it after checking that it was made with these settings."""
    options = dict(config.storage_options) or None
    specs = [corpus_spec(name, indexes[name]) for name, _ in config.corpora]
    return create_store(config.out, meta, specs, options)


def unit_source(
    teacher: Teacher,
    config: PrecomputeConfig,
    masking: MaskingSpec,
    indexes: dict[str, CorpusIndex],
) -> UnitSource:
    tok = teacher.tokenizer
    return UnitSource(
        indexes=indexes,
        tokenizer=tok,
        masking=masking,
        max_length=config.max_length,
        vocab_size=teacher.vocab_size,
        token_budget=config.token_budget,
        pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
    )


def _hand_over(launched: LaunchedUnit, background: BackgroundWriter) -> int:
    """Wait for a launched unit, queue it for writing; returns its token count."""
    data = launched.finish()
    background.put(launched.unit, data)
    return len(data.input_ids)


def compute_units(
    teacher: Teacher,
    config: PrecomputeConfig,
    source: UnitSource,
    work: list[tuple[str, int]],
    writer: StoreWriter,
    ticker: Callable[[str], Callable[[int, int], None]] | None = None,
) -> int:
    """Compute and write every (corpus, unit index) of `work`; returns the tokens computed.

    Workers prepare units ahead; unit u + 1 is launched before unit u is finished (the device
    stays busy) and finished units are written by background threads; every unit is written
    (done record last) on return.
    """
    spec = TargetSpec(writer.meta.target_encoding, config.seed)
    background = BackgroundWriter(writer, WRITER_THREADS.get(teacher.device.type, 1))
    workers = default_workers() if config.workers is None else config.workers
    tokens = 0
    try:
        previous: LaunchedUnit | None = None
        for prepared in unit_loader(source, work, workers):
            launched = launch_unit(teacher, prepared, spec)
            if previous is not None:  # the device is already busy with `launched`
                tokens += _finish(previous, background, ticker)
            previous = launched
        if previous is not None:
            tokens += _finish(previous, background, ticker)
    finally:
        background.close()
    return tokens


def _finish(
    launched: LaunchedUnit,
    background: BackgroundWriter,
    ticker: Callable[[str], Callable[[int, int], None]] | None,
) -> int:
    n_tokens = _hand_over(launched, background)
    if ticker is not None:
        ticker(launched.prepared.corpus)(launched.prepared.n_records, n_tokens)
    return n_tokens


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
    back from the store (`computed`: units computed per corpus by this run)."""
    store = open_store(config.out, storage_options=dict(config.storage_options) or None)
    corpora = {}
    for name, _ in config.corpora:
        corpus = store[name]
        info = corpus.info
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


def run_precompute(config: PrecomputeConfig, console: Console | None = None) -> dict[str, Any]:
    """Fill `config.out` with teacher targets for every pending unit; returns a summary dict."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    options = dict(config.storage_options) or None
    check_store_target(config.out, options)  # before the slow steps
    rank, world, device = _distributed(config.device)
    teacher, meta, masking = load_teacher_for(config, device)
    if rank == 0:
        indexes = corpus_indexes(config)
        writer = open_writer(config, meta, indexes)
    _barrier(world)
    if rank != 0:
        indexes = corpus_indexes(config)
        writer = open_writer(config, meta, indexes)
    pending = {name: writer.pending(name) for name, _ in config.corpora}
    _barrier(world)  # every rank reads the same done records before any rank writes a unit
    mine = {name: units[rank::world] for name, units in pending.items()}
    work = [(name, unit.index) for name, units in mine.items() for unit in units]

    compute_started = time.perf_counter()
    totals = {n: [int(indexes[n].units[u.index, 4]) for u in units] for n, units in mine.items()}
    with UnitProgress(totals, console, enabled=config.progress and rank == 0) as progress:
        source = unit_source(teacher, config, masking, indexes)
        computed_tokens = compute_units(teacher, config, source, work, writer, progress.ticker)
    compute_s = time.perf_counter() - compute_started
    _barrier(world)
    if rank == 0:
        consolidate_store(config.out, options)
    _barrier(world)
    return {
        **describe_run(
            teacher_fields(teacher), config, {n: len(units) for n, units in mine.items()}
        ),
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

"""`kdcache precompute`: run the teacher once over corpora and fill a store, resumably.

    config = PrecomputeConfig(teacher="path", corpora=(("task", "demo:atis"),), out="store.zarr")
    summary = run_precompute(config)

Steps: index every corpus (one cheap pass by one process, `corpus_index.py`: units of
`unit_size` records; a rerun reuses the index stored in the store after checking the files'
sizes and times), so a corpus error comes before the slow part; load the teacher (hashing
weights and tokenizer); `create_store`, which is create-once and refuses an existing store
written with another teacher, tokenizer, setting or source, naming the field; then compute
every *pending* unit. Worker processes read, tokenize, mask and batch units ahead of the device
(`unit_pipeline.py`, `--workers`); the device runs the teacher and top-k / sampling
(`unit_targets.py`); background writer threads encode, compress and write each unit through a
bounded queue, so the teacher never waits for storage and memory stays flat. Resuming is
rerunning the same command: done units are skipped, and units are batched only internally, so
the result equals an uninterrupted run's. At the end the done records are consolidated into the
store's summary (`logit_store/summary.py`).

Under `torchrun` (WORLD_SIZE > 1) rank 0 indexes and creates the store, all ranks wait at a
barrier, read the stored index and the pending units and meet again (so all split the same
list), then rank r prepares and computes pending[r::world] of every corpus; after a final
barrier rank 0 consolidates.

The steps are public for the Ray engine (`ray_engine.py`), which runs them in its actors:
`load_teacher_for`, `open_writer` and `compute_units` (the one unit-writing path). The settings
are `configs.PrecomputeConfig`, the torchrun helpers `distributed.py`, and what a run
reports `run_summary.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from logit_store import (
    StoreMeta,
    StoreWriter,
    check_store_target,
    consolidate_store,
    create_store,
    encoding_from_meta,
)
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.corpus_index import CorpusIndex
from teacher_infer.distributed import barrier, init_distributed
from teacher_infer.plan import MaskingSpec
from teacher_infer.progress import UnitProgress
from teacher_infer.run_summary import describe_run, teacher_fields
from teacher_infer.store_corpora import corpus_spec, index_corpora
from teacher_infer.teacher import Teacher, check_max_length, load_teacher
from teacher_infer.unit_pipeline import UnitSource, default_workers, unit_loader
from teacher_infer.unit_targets import LaunchedUnit, TargetSpec, launch_unit
from teacher_infer.unit_writer import WRITER_THREADS, BackgroundWriter


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


def run_precompute(config: PrecomputeConfig, console: Console | None = None) -> dict[str, Any]:
    """Fill `config.out` with teacher targets for every pending unit; returns a summary dict."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    options = dict(config.storage_options) or None
    check_store_target(config.out, options)  # before the slow steps
    rank, world, device = init_distributed(config.device)
    if rank == 0:  # a corpus error before the slow teacher load
        indexes = corpus_indexes(config)
    teacher, meta, masking = load_teacher_for(config, device)
    if rank == 0:
        writer = open_writer(config, meta, indexes)
    barrier(world)
    if rank != 0:
        indexes = corpus_indexes(config)
        writer = open_writer(config, meta, indexes)
    pending = {name: writer.pending(name) for name, _ in config.corpora}
    barrier(world)  # every rank reads the same done records before any rank writes a unit
    mine = {name: units[rank::world] for name, units in pending.items()}
    work = [(name, unit.index) for name, units in mine.items() for unit in units]

    compute_started = time.perf_counter()
    totals = {n: [int(indexes[n].units[u.index, 4]) for u in units] for n, units in mine.items()}
    with UnitProgress(totals, console, enabled=config.progress and rank == 0) as progress:
        source = unit_source(teacher, config, masking, indexes)
        computed_tokens = compute_units(teacher, config, source, work, writer, progress.ticker)
    compute_s = time.perf_counter() - compute_started
    barrier(world)
    if rank == 0:
        consolidate_store(config.out, options)
    barrier(world)
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

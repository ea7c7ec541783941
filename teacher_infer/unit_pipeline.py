"""The host side of precompute: units read, planned and batched in worker processes.

    loader = unit_loader(UnitSource(...), work, workers=2)
    for prepared in loader:        # PreparedUnit, in `work` order, `workers` units ahead
        ...                        # the device runs its batches (`unit_targets.launch_unit`)

Each item of `work` is (corpus, unit index). A worker reads only that unit's bytes
(`corpus_index.read_unit`, hash-checked), tokenizes and masks it (`plan.plan_texts`, keyed by
record numbers, so the result does not depend on which process planned it), encodes its
per-sequence records for the store and assembles its token-budget batches as numpy arrays. A
torch `DataLoader` runs the workers (bounded: each holds at most `PREFETCH` prepared units);
with ``workers=0`` the same code runs in the calling process.

Batches: the unit's sequences are sorted by length (stable, so ties keep record order) and cut
so that B * Lmax <= token_budget (at least one sequence); batches never cross a unit boundary,
so a resumed unit is computed from exactly the same batches, bit-identical to an uninterrupted
run's.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from logit_store import SparseTargets, UnitData
from teacher_infer.corpus_index import CorpusIndex, read_unit
from teacher_infer.plan import MaskingSpec, PlannedUnit, plan_texts

PREFETCH = 2  # prepared units queued per worker


@dataclass(frozen=True)
class HostBatch:
    """One forward pass as host arrays; `rows` (P_b,) are the targets' rows within the unit."""

    input_ids: np.ndarray  # (B, Lmax) teacher input, pad-filled
    attention_mask: np.ndarray  # (B, Lmax)
    batch_index: np.ndarray  # (P_b,)
    positions: np.ndarray  # (P_b,)
    rows: np.ndarray  # (P_b,)
    n_sequences: int
    n_tokens: int


@dataclass(frozen=True)
class PreparedUnit:
    """A unit ready for the device: its plan, its batches and its source facts."""

    corpus: str
    index: int
    plan: PlannedUnit
    batches: list[HostBatch]
    n_records: int
    skipped: dict[str, int]
    examples: list[str]

    def unit_data(self, targets: SparseTargets) -> UnitData:
        """What the store writes for this unit, once the teacher's `targets` (P rows) exist."""
        plan = self.plan
        return UnitData(
            input_ids=plan.input_ids,
            word_ids=plan.word_ids,
            lengths=plan.lengths,
            positions=plan.positions,
            masked_ids=plan.masked_ids,
            n_positions=plan.n_positions,
            targets=targets,
            records=plan.records,
            skipped=self.skipped,
            examples=self.examples,
            n_records=self.n_records,
        )


@dataclass(frozen=True)
class UnitSource:
    """What a worker needs to prepare any unit: the corpora's indexes and the plan settings."""

    indexes: dict[str, CorpusIndex]
    tokenizer: Any
    masking: MaskingSpec
    max_length: int
    vocab_size: int
    token_budget: int
    pad_id: int

    def prepare(self, corpus: str, u: int) -> PreparedUnit:
        index = self.indexes[corpus]
        texts = read_unit(index, u)
        plan = plan_texts(
            corpus,
            texts.texts,
            texts.record_ids,
            self.tokenizer,
            self.masking,
            self.max_length,
            self.vocab_size,
        )
        skipped = dict(texts.skipped)
        for reason, count in plan.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        return PreparedUnit(
            corpus=corpus,
            index=u,
            plan=plan,
            batches=unit_batches(plan, self.token_budget, self.pad_id),
            n_records=int(index.units[u, 4]),
            skipped=skipped,
            examples=(texts.examples + plan.examples)[:5],
        )


def token_budget_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Indices into `lengths`, sorted ascending by length, cut so B * Lmax <= token_budget."""
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for stop in range(1, len(order) + 1):
        if (stop - start) * int(lengths[order[stop - 1]]) > token_budget and stop - 1 > start:
            batches.append(order[start : stop - 1])
            start = stop - 1
    if start < len(order):
        batches.append(order[start:])
    return batches


def unit_batches(plan: PlannedUnit, token_budget: int, pad_id: int) -> list[HostBatch]:
    """The unit's batches in length order (vectorised: no Python loop per token)."""
    lengths, n_pos = plan.lengths, plan.n_positions
    tok_off, pos_off = plan.token_offsets, plan.position_offsets
    out = []
    for seqs in token_budget_batches(lengths, token_budget):
        lens = lengths[seqs]
        lmax = int(lens.max())
        ids = np.full((len(seqs), lmax), pad_id, dtype=np.int64)
        row_of_token = np.repeat(np.arange(len(seqs)), lens)
        col_of_token = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        flat = np.repeat(tok_off[seqs], lens) + col_of_token
        ids[row_of_token, col_of_token] = plan.input_ids[flat]
        counts = n_pos[seqs]
        rows = np.repeat(pos_off[seqs], counts) + (
            np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        )
        batch_index = np.repeat(np.arange(len(seqs)), counts)
        positions = plan.positions[rows]
        ids[batch_index, positions] = plan.masked_ids[rows]
        mask = (np.arange(lmax)[None, :] < lens[:, None]).astype(np.int64)
        out.append(HostBatch(ids, mask, batch_index, positions, rows, len(seqs), int(lens.sum())))
    return out


class _UnitDataset(Dataset[PreparedUnit]):
    def __init__(self, source: UnitSource, work: list[tuple[str, int]]) -> None:
        self.source, self.work = source, work

    def __len__(self) -> int:
        return len(self.work)

    def __getitem__(self, i: int) -> PreparedUnit:
        corpus, u = self.work[i]
        return self.source.prepare(corpus, u)


def _as_is(item: Any) -> Any:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a worker tokenizes; the teacher's threads stay the main process's
    # Ctrl-C reaches the whole process group: only the main process acts on it, and stops its
    # workers (a worker interrupted on its own would wait at exit for its unread results)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """Host workers by default: the cores this process may use (at most 8). The main process
    needs no core of its own: it mostly waits for the device, and the workers only run
    `PREFETCH` units ahead (on 2 cores, 2 workers beat 1 by 10-14%: `benchmarks/scale.py`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def unit_loader(
    source: UnitSource, work: list[tuple[str, int]], workers: int
) -> Iterator[PreparedUnit]:
    """Prepared units of `work`, in order, `workers` processes ahead (0: in this process)."""
    if workers == 0 or len(work) <= 1:
        for corpus, u in work:
            yield source.prepare(corpus, u)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers: no Rust pool
    loader = DataLoader(
        _UnitDataset(source, work),
        batch_size=None,
        num_workers=min(workers, len(work)),
        prefetch_factor=PREFETCH,
        worker_init_fn=_worker_init,
        collate_fn=_as_is,
    )
    # The heap the workers inherit (torch, transformers, the tokenizer: millions of objects) is
    # moved out of the collector's reach: no process traverses it again in a full collection,
    # nor touches its pages (which the forked workers would otherwise copy).
    gc.freeze()
    try:
        yield from loader
    finally:
        gc.unfreeze()

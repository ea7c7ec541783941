"""One unit of a planned corpus -> teacher targets (`UnitData`), batched inside the unit only.

A unit's sequences are sorted by length (stable, so ties keep plan order) and cut into
token-budget batches: a batch of B sequences padded to its longest, Lmax, satisfies
B * Lmax <= token_budget (at least one sequence). Sorting makes neighbours nearly equal in length,
so padding waste is small, and because batches never cross a unit boundary a resumed unit is
computed from exactly the same batches: its targets are bit-identical to an uninterrupted run's.

Per batch the device computes (P_b, k) targets; they are copied to (pinned) host memory without
blocking, and the host scatters them back into plan order once the unit is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from logit_store import SparseTargets, Unit, UnitData
from logit_store.sparsify import sampled_targets, topk_targets
from teacher_infer.plan import PlannedCorpus
from teacher_infer.teacher import Teacher


@dataclass(frozen=True)
class TargetSpec:
    """How logits become sparse targets: `topk` with k, or `sampled` with N draws (seeded)."""

    encoding: str
    k: int
    n_samples: int
    seed: int


@dataclass(frozen=True)
class Batch:
    """Host tensors for one forward pass; `rows` (P_b,) are the targets' rows within the unit."""

    input_ids: torch.Tensor  # (B, Lmax) teacher input, pad-filled
    attention_mask: torch.Tensor  # (B, Lmax)
    batch_index: torch.Tensor  # (P_b,)
    positions: torch.Tensor  # (P_b,)
    rows: np.ndarray  # (P_b,)
    n_sequences: int
    n_tokens: int


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


def unit_batches(
    corpus: PlannedCorpus, unit: Unit, token_budget: int, pad_id: int, pin: bool
) -> Iterator[Batch]:
    """The unit's batches, in length order, as host tensors (pinned when `pin`)."""
    lengths = corpus.plan.lengths[unit.start : unit.stop]
    pos_off = corpus.position_offsets
    for local in token_budget_batches(lengths, token_budget):
        seqs = local + unit.start
        lmax = int(lengths[local].max())
        ids = np.full((len(seqs), lmax), pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), lmax), dtype=np.int64)
        b_index, b_pos, rows = [], [], []
        for row, s in enumerate(seqs):
            seq_ids = corpus.teacher_input(int(s))
            ids[row, : len(seq_ids)] = seq_ids
            mask[row, : len(seq_ids)] = 1
            p0, p1 = int(pos_off[s]), int(pos_off[s + 1])
            b_index.append(np.full(p1 - p0, row, dtype=np.int64))
            b_pos.append(corpus.positions[p0:p1])
            rows.append(np.arange(p0, p1) - int(pos_off[unit.start]))
        ids_t, mask_t, index_t, pos_t = (
            torch.from_numpy(a)
            for a in (ids, mask, np.concatenate(b_index), np.concatenate(b_pos).astype(np.int64))
        )
        if pin:
            ids_t, mask_t, index_t, pos_t = (
                t.pin_memory() for t in (ids_t, mask_t, index_t, pos_t)
            )
        n_tokens = int(lengths[local].sum())
        yield Batch(ids_t, mask_t, index_t, pos_t, np.concatenate(rows), len(seqs), n_tokens)


def unit_generator(
    seed: int, corpus: str, unit_index: int, device: torch.device
) -> torch.Generator:
    """The sampling generator of one unit, seeded from (seed, corpus name, unit index)."""
    digest = hashlib.sha256(f"{seed}\x00{corpus}\x00{unit_index}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _to_host(targets: SparseTargets) -> SparseTargets:
    """Start copying a batch's (P_b, k) targets to pinned host memory without waiting."""

    def copy(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cuda":
            return t
        return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)

    return targets.map(copy)


@dataclass
class LaunchedUnit:
    """A unit whose teacher work is queued on the device; `finish()` waits for it alone.

    On CUDA the caller launches unit u + 1 before finishing unit u, so the GPU computes the next
    unit while the host assembles this one (and the writer threads compress the one before).
    """

    corpus: PlannedCorpus
    unit: Unit
    spec: TargetSpec
    pending: list[tuple[np.ndarray, SparseTargets]]
    done: torch.cuda.Event | None

    def finish(self) -> UnitData:
        if self.done is not None:
            self.done.synchronize()
        corpus, unit = self.corpus, self.unit
        p0, p1 = int(corpus.position_offsets[unit.start]), int(corpus.position_offsets[unit.stop])
        t0, t1 = int(corpus.token_offsets[unit.start]), int(corpus.token_offsets[unit.stop])
        return UnitData(
            input_ids=corpus.input_ids[t0:t1],
            word_ids=corpus.word_ids[t0:t1],
            positions=corpus.positions[p0:p1],
            masked_ids=corpus.masked_ids[p0:p1],
            targets=_assemble(self.pending, p1 - p0, self.spec),
            records=corpus.records[unit.start : unit.stop],
        )


def launch_unit(
    teacher: Teacher,
    corpus: PlannedCorpus,
    unit: Unit,
    spec: TargetSpec,
    token_budget: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> LaunchedUnit:
    """Queue the teacher over one unit's batches; targets land in pinned host memory.

    `on_batch(n_sequences, n_tokens)` is called after each batch is queued (progress).
    """
    dev = teacher.device
    pin = dev.type == "cuda"
    generator = unit_generator(spec.seed, corpus.name, unit.index, dev)
    pad_id = teacher.tokenizer.pad_token_id or 0
    pending: list[tuple[np.ndarray, SparseTargets]] = []
    for batch in unit_batches(corpus, unit, token_budget, pad_id, pin):
        logits = teacher.logits_at(
            batch.input_ids.to(dev, non_blocking=pin),
            batch.attention_mask.to(dev, non_blocking=pin),
            batch.batch_index.to(dev, non_blocking=pin),
            batch.positions.to(dev, non_blocking=pin),
        )
        with torch.inference_mode():
            if spec.encoding == "topk":
                out = topk_targets(logits, spec.k)
            else:
                out = sampled_targets(logits, spec.n_samples, generator)
        pending.append((batch.rows, _to_host(out)))
        if on_batch is not None:
            on_batch(batch.n_sequences, batch.n_tokens)
    done = None
    if pin:
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(dev))
    return LaunchedUnit(corpus, unit, spec, pending, done)


def _assemble(
    pending: list[tuple[np.ndarray, SparseTargets]], n_rows: int, spec: TargetSpec
) -> SparseTargets:
    """Scatter per-batch host targets into (P, width) arrays in plan order.

    Sampled batches differ in width (their most unique ids); narrower ones are padded with
    id 0, count 0.
    """
    width = max((t.width for _, t in pending), default=1)
    ids = np.zeros((n_rows, width), dtype=np.int64)
    values = np.zeros((n_rows, width), dtype=np.float32)
    tail = np.zeros(n_rows, dtype=np.float32)
    for rows, t in pending:
        ids[rows, : t.width] = t.ids.numpy()
        if spec.encoding == "topk":
            values[rows] = t.logprobs.numpy()
            tail[rows] = t.tail_logmass.numpy()
        else:
            values[rows, : t.width] = t.counts.numpy()
    if spec.encoding == "topk":
        return SparseTargets("topk", ids, logprobs=values, tail_logmass=tail)
    return SparseTargets("sampled", ids, counts=values, n_samples=spec.n_samples)

"""One prepared unit -> teacher targets (`UnitData`): the device side of precompute.

The unit's batches (`unit_pipeline.HostBatch`, built in a worker process) are copied to the
device (from pinned memory on CUDA), the teacher runs, and per batch the device computes (P_b, k)
targets; they are copied back to (pinned) host memory without blocking, and the host scatters
them into record order once the unit is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from logit_store import SparseEncoding, SparseTargets, Unit, UnitData, empty_targets
from teacher_infer.teacher import Teacher
from teacher_infer.unit_pipeline import PreparedUnit


@dataclass(frozen=True)
class TargetSpec:
    """How logits become sparse targets: the store's encoding, and the seed of its draws."""

    encoding: SparseEncoding
    seed: int


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

    prepared: PreparedUnit
    spec: TargetSpec
    pending: list[tuple[np.ndarray, SparseTargets]]
    done: torch.cuda.Event | None

    @property
    def unit(self) -> Unit:
        return Unit(self.prepared.corpus, self.prepared.index)

    def finish(self) -> UnitData:
        if self.done is not None:
            self.done.synchronize()
        n_rows = len(self.prepared.plan.positions)
        return self.prepared.unit_data(_assemble(self.pending, n_rows, self.spec))


def _to_device(array: np.ndarray, device: torch.device, pin: bool) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if pin:
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=pin)


def launch_unit(
    teacher: Teacher,
    prepared: PreparedUnit,
    spec: TargetSpec,
    on_batch: Callable[[int, int], None] | None = None,
) -> LaunchedUnit:
    """Queue the teacher over one unit's batches; targets land in pinned host memory.

    `on_batch(n_sequences, n_tokens)` is called after each batch is queued (progress).
    """
    dev = teacher.device
    pin = dev.type == "cuda"
    generator = unit_generator(spec.seed, prepared.corpus, prepared.index, dev)
    pending: list[tuple[np.ndarray, SparseTargets]] = []
    for batch in prepared.batches:
        logits = teacher.logits_at(
            _to_device(batch.input_ids, dev, pin),
            _to_device(batch.attention_mask, dev, pin),
            _to_device(batch.batch_index, dev, pin),
            _to_device(batch.positions, dev, pin),
        )
        with torch.inference_mode():
            out = spec.encoding.from_logits(logits, generator)
        pending.append((batch.rows, _to_host(out)))
        if on_batch is not None:
            on_batch(batch.n_sequences, batch.n_tokens)
    done = None
    if pin:
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(dev))
    return LaunchedUnit(prepared, spec, pending, done)


def _assemble(
    pending: list[tuple[np.ndarray, SparseTargets]], n_rows: int, spec: TargetSpec
) -> SparseTargets:
    """Scatter per-batch host targets into (P, width) arrays in plan order.

    Batches may differ in width (sampled: their most unique ids); narrower ones are padded
    with zeros (id 0, count 0: padding columns).
    """
    if not pending:
        return empty_targets(spec.encoding, 1)
    width = max(t.width for _, t in pending)
    first = pending[0][1].arrays()
    out = {
        name: np.zeros((n_rows, width) if x.ndim == 2 else (n_rows,), dtype=x.numpy().dtype)
        for name, x in first.items()
    }
    for rows, t in pending:
        for name, x in t.arrays().items():
            if x.ndim == 2:
                out[name][rows, : t.width] = x.numpy()
            else:
                out[name][rows] = x.numpy()
    return replace(pending[0][1], **out)

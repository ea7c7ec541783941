"""Where each unit's data lives, so that every unit owns whole shards.

A corpus is cut into units of `unit_size` consecutive sequences. Each unit gets a fixed-size
slot on three axes, padded only at its tail:

    sequence axis  [u * S, (u + 1) * S)   S = unit_size          per-sequence records
    token axis     [u * T, (u + 1) * T)   T = tokens of the largest unit, rounded up to chunks
    position axis  [u * P, (u + 1) * P)   P = positions of the largest unit, rounded up likewise

Shards are exactly one unit's slot, so two writers never touch one object, a rewrite of a unit
is idempotent, and a unit's data lands whole before its `done` flag (its own object) is set.
Inner chunks are smaller than a shard so partial reads stay cheap. Every object of a written
unit is stored, empty ones included (a few bytes each), so a deleted object is detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logit_store.meta import CorpusPlan

TOKEN_CHUNK = 16384
POSITION_CHUNK = 4096


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclass(frozen=True)
class Unit:
    """Sequences [start, stop) of one corpus, written and flagged done as a whole."""

    corpus: str
    index: int
    start: int
    stop: int


@dataclass(frozen=True)
class UnitLayout:
    """Slot sizes of a corpus's units and the address of every sequence inside them."""

    unit_size: int
    token_slot: int
    position_slot: int
    token_chunk: int
    position_chunk: int
    n_units: int

    @classmethod
    def from_plan(cls, plan: CorpusPlan) -> UnitLayout:
        n_units = -(-plan.num_sequences // plan.unit_size)
        bounds = np.arange(0, n_units * plan.unit_size, plan.unit_size)
        max_tokens = int(np.add.reduceat(plan.lengths, bounds).max())
        max_positions = int(np.add.reduceat(plan.n_positions, bounds).max())
        token_chunk = min(TOKEN_CHUNK, _round_up(max_tokens, 256))
        position_chunk = min(POSITION_CHUNK, _round_up(max(max_positions, 1), 64))
        return cls(
            unit_size=plan.unit_size,
            token_slot=_round_up(max_tokens, token_chunk),
            position_slot=_round_up(max(max_positions, 1), position_chunk),
            token_chunk=token_chunk,
            position_chunk=position_chunk,
            n_units=n_units,
        )

    def units(self, corpus: str, num_sequences: int) -> list[Unit]:
        return [
            Unit(corpus, u, u * self.unit_size, min((u + 1) * self.unit_size, num_sequences))
            for u in range(self.n_units)
        ]


@dataclass(frozen=True)
class SequenceAddresses:
    """Global token and position offsets of every sequence (in the padded axes)."""

    token_start: np.ndarray
    position_start: np.ndarray
    lengths: np.ndarray
    n_positions: np.ndarray

    @classmethod
    def compute(
        cls, layout: UnitLayout, lengths: np.ndarray, n_positions: np.ndarray
    ) -> SequenceAddresses:
        unit = np.arange(len(lengths)) // layout.unit_size
        return cls(
            token_start=_starts_within_units(lengths, unit) + unit * layout.token_slot,
            position_start=_starts_within_units(n_positions, unit) + unit * layout.position_slot,
            lengths=lengths,
            n_positions=n_positions,
        )


def _starts_within_units(sizes: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of `sizes` that restarts at every unit boundary."""
    total = np.cumsum(sizes) - sizes
    first_of_unit = np.r_[True, unit[1:] != unit[:-1]]
    unit_base = np.maximum.accumulate(np.where(first_of_unit, total, 0))
    return total - unit_base

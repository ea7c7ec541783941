"""Where each unit's data lives: a fixed slot per unit on every axis, so units are independent.

A corpus is cut into units of at most `unit_size` source records (teacher_infer's corpus index);
a unit holds at most `unit_size` sequences (records that were skipped hold none). Every unit gets
a slot of a size fixed by the store's settings alone, never by other units:

    sequence axis  [u * S, (u + 1) * S)   S = unit_size                 per-sequence arrays
    token axis     [u * T, (u + 1) * T)   T = unit_size * max_length    rounded up to chunks
    position axis  [u * P, (u + 1) * P)   P = T, or S for a sequence-classification teacher

so a rank can write unit u knowing only u. Sharded arrays have one shard per unit slot; a unit
writes only the inner chunks it uses (the rest of its shard is absent and costs no bytes), and
every object a unit writes is listed, with its size and checksum, in the unit's done record.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKEN_CHUNK = 16384
POSITION_CHUNK = 4096


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclass(frozen=True)
class Unit:
    """Unit `index` of one corpus: written and flagged done as a whole."""

    corpus: str
    index: int


@dataclass(frozen=True)
class UnitLayout:
    """Slot sizes of a corpus's units (the same for every unit) and their chunking."""

    unit_size: int
    token_slot: int
    position_slot: int
    token_chunk: int
    position_chunk: int
    n_units: int

    @classmethod
    def create(
        cls, unit_size: int, max_length: int, n_units: int, one_position_per_sequence: bool
    ) -> UnitLayout:
        tokens = unit_size * max_length
        positions = unit_size if one_position_per_sequence else tokens
        token_chunk = min(TOKEN_CHUNK, round_up(tokens, 256))
        position_chunk = min(POSITION_CHUNK, round_up(positions, 64))
        return cls(
            unit_size=unit_size,
            token_slot=round_up(tokens, token_chunk),
            position_slot=round_up(positions, position_chunk),
            token_chunk=token_chunk,
            position_chunk=position_chunk,
            n_units=n_units,
        )

    def slot(self, axis: str) -> int:
        """Slot size of one unit on `axis`: "sequence", "token" or "position"."""
        return {
            "sequence": self.unit_size,
            "token": self.token_slot,
            "position": self.position_slot,
        }[axis]

    def to_dict(self) -> dict[str, int]:
        return {
            "unit_size": self.unit_size,
            "token_slot": self.token_slot,
            "position_slot": self.position_slot,
            "token_chunk": self.token_chunk,
            "position_chunk": self.position_chunk,
            "n_units": self.n_units,
        }

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> UnitLayout:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})

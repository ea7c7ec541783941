"""Where each unit's data lives: a fixed slot per unit on every axis, so units are independent.

A corpus is cut into units of at most `unit_size` source records (teacher_infer's corpus index);
a unit holds at most `unit_size` sequences (records that were skipped hold none). Every unit gets
a slot of a size fixed by the store's settings alone, never by other units:

    sequence axis  [u * S, (u + 1) * S)   S = unit_size                 per-sequence arrays
    token axis     [u * T, (u + 1) * T)   T = unit_size * max_length    rounded up to chunks
    position axis  [u * P, (u + 1) * P)   P = T, or S for a sequence-classification teacher
    table axis     [u * Q, (u + 1) * Q)   Q = min(classes, P * W)       the unit's id table,
                                                                        in whole chunks past one

so a rank can write unit u knowing only u. Sharded arrays have one shard per unit slot; a unit
writes only the inner chunks it uses (the rest of its shard is absent and costs no bytes), and
every object a unit writes is listed, with its size and checksum, in the unit's done record.
`UnitLayout` is the one place these addresses are computed: the writer, readers and verify ask
it for a unit's rows (`rows`) on an axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOKEN_CHUNK = 16384
POSITION_CHUNK = 4096
TABLE_CHUNK = 4096


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclass(frozen=True)
class Unit:
    """Unit `index` of one corpus: written and flagged done as a whole."""

    corpus: str
    index: int


@dataclass(frozen=True)
class UnitLayout:
    """Slot sizes of a corpus's units (the same for every unit) and their chunking.

    Axes: "sequence", "token", "position" (also "position2": per-position arrays with a second
    axis of `width` columns) and "table"."""

    unit_size: int
    token_slot: int
    position_slot: int
    token_chunk: int
    position_chunk: int
    n_units: int
    table_slot: int

    @classmethod
    def create(
        cls,
        unit_size: int,
        max_length: int,
        n_units: int,
        one_position_per_sequence: bool,
        n_classes: int,
        width: int,
    ) -> UnitLayout:
        tokens = unit_size * max_length
        positions = unit_size if one_position_per_sequence else tokens
        token_chunk = min(TOKEN_CHUNK, round_up(tokens, 256))
        position_chunk = min(POSITION_CHUNK, round_up(positions, 64))
        position_slot = round_up(positions, position_chunk)
        # the id table: every class at most, one id per stored entry at most, in whole chunks
        table = min(n_classes, position_slot * width)
        return cls(
            unit_size=unit_size,
            token_slot=round_up(tokens, token_chunk),
            position_slot=position_slot,
            token_chunk=token_chunk,
            position_chunk=position_chunk,
            n_units=n_units,
            table_slot=round_up(table, TABLE_CHUNK) if table > TABLE_CHUNK else table,
        )

    def slot(self, axis: str) -> int:
        """Slot size of one unit on `axis`."""
        return {
            "sequence": self.unit_size,
            "token": self.token_slot,
            "position": self.position_slot,
            "position2": self.position_slot,
            "table": self.table_slot,
        }[axis]

    def chunk(self, axis: str) -> int:
        """Rows per inner chunk on `axis`: what a unit writes is rounded up to these."""
        return {
            "sequence": self.unit_size,
            "token": self.token_chunk,
            "position": self.position_chunk,
            "position2": self.position_chunk,
            "table": min(TABLE_CHUNK, self.table_slot),
        }[axis]

    def start(self, axis: str, unit: Any) -> Any:
        """First row of the slot of `unit` (an index, or an array of them) on `axis`."""
        return unit * self.slot(axis)

    def rows(self, axis: str, unit: int, n: int | None = None) -> slice:
        """Rows of unit `unit`'s slot on `axis`: its first `n`, or the whole slot."""
        start = self.start(axis, unit)
        return slice(start, start + (self.slot(axis) if n is None else n))

    def to_attrs(self) -> dict[str, Any]:
        """The corpus attributes that record the layout (docs/FORMAT.md: `layout`, `table_slot`)."""
        sizes = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "table_slot"}
        return {"layout": sizes, "table_slot": self.table_slot}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> UnitLayout:
        sizes = {k: int(v) for k, v in attrs["layout"].items() if k in cls.__dataclass_fields__}
        return cls(**sizes, table_slot=int(attrs["table_slot"]))

"""The consolidated summary of a corpus's done units: open a 10^5-unit corpus in a few reads.

Every unit's facts live in its own done record (one object per unit, see `writer.py`), which a
reader would otherwise fetch one by one. At the end of a run the writer consolidates them
(`consolidate`): three arrays hold, for the units done so far,

    summary_units   (n_units, 4) int64   [consolidated, sequences, tokens, positions] per unit
    summary_lengths (N,) int32           tokens per sequence, dense over consolidated units
    summary_split   (N,) uint8           split code per sequence (index into attrs["splits"])

and ``summary_units``' attributes hold the aggregated skips, skip examples, label and split
names. The summary is derived data: a reader uses it for the units it covers (after checking
that its per-sequence arrays add up to its per-unit counts) and reads the done records of units
written since; a stale, missing or damaged summary (an unreadable chunk, lengths that do not add
up to the units' token counts, a split code out of range) only costs reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from logit_store.arrays import DESCRIPTIONS, SUMMARY_CHUNK, numeric_codecs

MAX_EXAMPLES = 5
ARRAYS = ("summary_units", "summary_lengths", "summary_split")
_FIELDS = ("consolidated", "n_sequences", "n_tokens", "n_positions")


@dataclass
class UnitTable:
    """Counts of the done units (aligned with `done_units`) and their aggregated facts."""

    n_sequences: np.ndarray
    n_tokens: np.ndarray
    n_positions: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    splits: list[str] = field(default_factory=list)
    bytes: dict[str, int] = field(default_factory=dict)  # stored bytes per array


def aggregate(records: Iterable[dict[str, Any]], into: UnitTable) -> None:
    """Add the skips, examples, labels, splits and object bytes of done records (or of a
    summary's attributes, which have the same keys) to `into`."""
    skipped: Counter[str] = Counter(into.skipped)
    stored: Counter[str] = Counter(into.bytes)
    labels = {k: set(v) for k, v in into.labels.items()}
    splits = set(into.splits)
    for record in records:
        skipped.update(record.get("skipped", {}))
        room = MAX_EXAMPLES - len(into.examples)
        into.examples.extend(record.get("examples", [])[: max(room, 0)])
        for key, names in record.get("labels", {}).items():
            labels.setdefault(key, set()).update(names)
        splits.update(record.get("splits", []))
        stored.update(record.get("bytes", {}))
        stored.update({name: obj[1] for name, obj in record.get("objects", {}).items()})
    into.bytes = dict(sorted(stored.items()))
    into.skipped = dict(sorted(skipped.items()))
    into.labels = {k: sorted(v) for k, v in sorted(labels.items())}
    into.splits = sorted(splits)


@dataclass
class Summary:
    """A corpus's consolidated summary as read (empty when none was written)."""

    group: zarr.Group
    table: np.ndarray  # (n_units, 4)
    attrs: dict[str, Any]

    def covers(self, units: np.ndarray) -> np.ndarray:
        return self.table[units, 0] == 1

    def merged(self, done_units: np.ndarray, records: dict[int, dict[str, Any]]) -> UnitTable:
        """Counts per done unit: from the summary where it covers the unit, else its record."""
        table = self.table[done_units]
        for i, u in enumerate(done_units.tolist()):
            if u in records:
                r = records[u]
                table[i, 1:] = (r["n_sequences"], r["n_tokens"], r["n_positions"])
        out = UnitTable(table[:, 1].copy(), table[:, 2].copy(), table[:, 3].copy())
        aggregate([self.attrs], out)
        aggregate((records[u] for u in done_units.tolist() if u in records), out)
        return out

    def per_sequence(
        self, array: str, done_units: np.ndarray, n_sequences: np.ndarray, codes: bool = False
    ) -> list[np.ndarray | None]:
        """`lengths` or `split` of each done unit's sequences where the summary has them (one
        part per done unit, None where it does not); `codes`: split codes, not names."""
        covered = self.covers(done_units)
        parts: list[np.ndarray | None] = [None] * len(done_units)
        if not covered.any():
            return parts
        consolidated = np.flatnonzero(self.table[:, 0] == 1)
        values = self._values(array, codes, consolidated)
        if values is None:  # damaged: the units' own chunks hold the same values
            return parts
        if covered.all() and np.array_equal(consolidated, done_units):
            return self._split_dense(values, n_sequences)
        sizes = self.table[consolidated, 1]
        starts = dict(zip(consolidated.tolist(), (np.cumsum(sizes) - sizes).tolist(), strict=True))
        for i, u in enumerate(done_units.tolist()):
            if covered[i]:
                a = starts[u]
                parts[i] = values[a : a + int(n_sequences[i])]
        return parts

    @property
    def split_names(self) -> list[str]:
        """Names of split codes 1, 2, ... (code 0: none)."""
        return list(self.attrs.get("splits", []))

    def _values(self, array: str, codes: bool, consolidated: np.ndarray) -> np.ndarray | None:
        """The dense per-sequence array, or None when it cannot be read or contradicts the
        per-unit counts (a deleted chunk reads as fill values: lengths 0, split code 0)."""
        try:
            stored = self.group[f"summary_{array}"]
            assert isinstance(stored, zarr.Array)
            values = np.asarray(stored[...])
        except (ValueError, KeyError, IndexError, OSError):  # checksum, missing metadata
            return None
        sizes = self.table[consolidated, 1]
        if len(values) != int(sizes.sum()):
            return None
        if array == "lengths":
            starts = (np.cumsum(sizes) - sizes)[sizes > 0]
            sums = np.add.reduceat(values.astype(np.int64), starts) if len(starts) else values[:0]
            if len(values) and values.min() < 1:
                return None
            if not np.array_equal(sums, self.table[consolidated, 2][sizes > 0]):
                return None
        elif len(values) and (values.min() < 1 or values.max() > len(self.split_names)):
            return None
        if array == "split" and not codes:
            values = np.array(["", *self.split_names])[values]
        return values

    @staticmethod
    def _split_dense(values: np.ndarray, n_sequences: np.ndarray) -> list[np.ndarray | None]:
        """The dense array as per-unit views (no copies)."""
        return list(np.split(values, np.cumsum(n_sequences)[:-1]))


def read_summary(group: zarr.Group, n_units: int) -> Summary:
    """The summary if one was written and is consistent, else an empty one."""
    empty = Summary(group, np.zeros((n_units, 4), dtype=np.int64), {})
    if "summary_units" not in group:
        return empty
    units = group["summary_units"]
    assert isinstance(units, zarr.Array)
    try:
        table = np.asarray(units[...], dtype=np.int64)
    except ValueError:  # its chunk failed its checksum: the done records hold the same counts
        return empty
    lengths = group["summary_lengths"]
    assert isinstance(lengths, zarr.Array)
    covered = table[:, 0] == 1
    if table.shape != (n_units, 4) or lengths.shape[0] != int(table[covered, 1].sum()):
        return empty  # written by an interrupted or racing consolidation: ignore it
    return Summary(group, table, dict(units.attrs))


def consolidate(
    group: zarr.Group,
    summary: Summary,
    fresh: dict[int, tuple[dict[str, Any], np.ndarray, np.ndarray]],
) -> None:
    """Write a new summary: the old one plus `fresh` units (u -> (done record, lengths, splits)).

    Per-sequence arrays are rewritten dense in unit order; written by one process at the end of
    a run (rank 0, the Ray driver).
    """
    if not fresh:
        return
    table = summary.table.copy()
    old = np.flatnonzero(table[:, 0] == 1)
    lengths = summary.per_sequence("lengths", old, table[old, 1])
    splits = summary.per_sequence("split", old, table[old, 1])
    by_unit = {
        int(u): (lengths[i], splits[i])
        for i, u in enumerate(old.tolist())
        if lengths[i] is not None and splits[i] is not None  # else damaged: see below
    }
    for u, (record, seq_lengths, seq_splits) in fresh.items():
        table[u] = (1, record["n_sequences"], record["n_tokens"], record["n_positions"])
        by_unit[u] = (seq_lengths, seq_splits)
    merged = UnitTable(table[:, 1], table[:, 2], table[:, 3])
    aggregate([summary.attrs], merged)
    aggregate((r for r, _, _ in fresh.values()), merged)
    # A damaged old summary leaves its units out of by_unit while `table` still claims them:
    # the new summary's per-sequence arrays are then shorter than claimed and `read_summary`
    # ignores it (readers use the done records; nothing is counted twice).
    order = sorted(by_unit)
    all_lengths = np.concatenate([by_unit[u][0] for u in order]).astype(np.int32)
    all_splits = np.concatenate([by_unit[u][1] for u in order]).astype(str)
    codes = np.searchsorted(np.array(merged.splits), all_splits).astype(np.uint8) + 1
    for name, values in (("summary_lengths", all_lengths), ("summary_split", codes)):
        group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=(min(SUMMARY_CHUNK, max(len(values), 1)),),
            compressors=numeric_codecs(),
            fill_value=0,
            overwrite=True,
            attributes={"about": DESCRIPTIONS[name]},
        )[...] = values
    arr = group.create_array(
        "summary_units",
        shape=table.shape,
        dtype="int64",
        chunks=table.shape,
        compressors=numeric_codecs(),
        fill_value=0,
        overwrite=True,
        attributes={
            "about": DESCRIPTIONS["summary_units"],
            "fields": list(_FIELDS),
            "skipped": merged.skipped,
            "examples": merged.examples,
            "labels": merged.labels,
            "splits": merged.splits,
            "bytes": merged.bytes,
        },
    )
    arr[...] = table

"""Read a corpus of a store (`store.Store`): only completed units visible, batches straight into
torch.

    store = open_store("cache.zarr", expected={"tokenizer_hash": ...})
    c = store["task"]; r = c[0]; b = c.batch([0, 5, 7])

Sequences are numbered 0..len(c)-1 over the completed units, in unit order. Which units are
complete is one listing of the done records; their counts come from the consolidated summary
(`summary.py`, one object) or, for units written since, from their done records. A corpus keeps
a few decoded units in memory (LRU), so block-shuffled access (indices grouped by
`unit_ranges()`) decodes every unit once; memory is bounded by that cache, not the store size.
Before a unit is decoded, the sizes of its objects are compared with its done record, so a
truncated, emptied or deleted object is a `StoreCorruptError`, never fill values.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from logit_store.arrays import (
    CORPORA_GROUP,
    CORPUS_KEY,
    METADATA_DAMAGE,
    StoreDamage,
    attrs_dict,
    child_array,
    listed_done_units,
    read,
    read_target_ids,
)
from logit_store.batch import (
    SequenceRecord,
    SparseBatch,
    UnitBlock,
    assemble_batch,
    ragged_index,
)
from logit_store.errors import StoreCorruptError
from logit_store.layout import UnitLayout
from logit_store.objects import object_sizes
from logit_store.sequence_info import FIELDS, SequenceInfo
from logit_store.summary import read_summary

if TYPE_CHECKING:
    from logit_store.store import Store

UNIT_CACHE = 4


class Corpus:
    """The completed units of one corpus, addressed by dense sequence index."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self._open()

    def _corpus_group(self) -> zarr.Group:
        try:
            group = self.store.root[f"{CORPORA_GROUP}/{self.name}"]
        except METADATA_DAMAGE as err:
            raise StoreDamage(f"its group's metadata is missing or unreadable ({err})") from err
        if not isinstance(group, zarr.Group):
            raise StoreDamage("its group is an array")
        return group

    def _damaged(self, where: str, err: Exception | str) -> StoreCorruptError:
        return StoreCorruptError(
            f"store {self.store.url}, corpus {self.name!r}{where}: {err}. "
            "Run `kdcache verify` to list every damaged array."
        )

    def _open(self) -> None:
        try:
            self._open_group()
        except StoreDamage as err:
            raise self._damaged("", err) from err

    def _open_group(self) -> None:
        self.group = group = self._corpus_group()
        self._pid = os.getpid()
        self._arrays: dict[str, zarr.Array] = {}
        self._cache: OrderedDict[int, UnitBlock] = OrderedDict()
        self._done_records: dict[int, dict[str, Any]] = {}
        try:  # attributes a writer set: parsed from stored JSON
            self.attrs: dict[str, Any] = attrs_dict(group, CORPUS_KEY)
            self.layout = UnitLayout.from_attrs(self.attrs)
        except (KeyError, ValueError, TypeError) as err:
            raise StoreDamage(f"its attributes are missing or malformed ({err!r})") from err
        self.n_units = self.layout.n_units
        self.done_units = listed_done_units(self.array("done"))
        try:
            self.summary = read_summary(group, self.n_units)
        except ValueError as err:  # a summary chunk failed its checksum (see `read`)
            raise StoreDamage(f"its summary cannot be read ({err})") from err
        fresh = self.done_units[~self.summary.covers(self.done_units)]
        for u, record in zip(fresh.tolist(), self._read_done_records(fresh), strict=True):
            self._done_records[u] = record
        self.units = self.summary.merged(self.done_units, self._done_records)
        sizes = self.units.n_sequences
        self._unit_first = np.cumsum(sizes) - sizes  # dense index of each done unit's first seq.
        self._len = int(sizes.sum())

    def _read_done_records(self, units: np.ndarray) -> list[dict[str, Any]]:
        if not len(units):
            return []
        raw = read(self.array("done"), units, "coordinate").astype(object)
        out = []
        for u, text in zip(units.tolist(), raw.tolist(), strict=True):
            try:
                record = json.loads(str(text))
                if not isinstance(record, dict) or "objects" not in record:
                    raise ValueError("not a done record")
            except ValueError as err:
                raise self._damaged(
                    f", unit {u}", f"its done record cannot be read ({err})"
                ) from err
            if record.get("store_id") != self.store.meta.store_id:
                raise self._damaged(
                    f", unit {u}",
                    f"written by another store (store id {record.get('store_id')!r}, this store "
                    f"is {self.store.meta.store_id!r})",
                )
            if record.get("teacher_hash") != self.store.meta.teacher_hash:
                raise self._damaged(
                    f", unit {u}",
                    f"written by another teacher (teacher hash {record.get('teacher_hash')!r}, "
                    f"this store's is {self.store.meta.teacher_hash!r})",
                )
            out.append(record)
        return out

    def index_hashes(self) -> np.ndarray | None:
        """(n_units, 32) content hashes of the units' source, when the index recorded them."""
        if "index_hashes" not in self.group:
            return None
        return read(self.array("index_hashes"), ...)

    def done_record(self, u: int) -> dict[str, Any]:
        """Unit u's done record (its counts, skips, labels and object manifest)."""
        if u not in self._done_records:
            (self._done_records[u],) = self._read_done_records(np.array([u]))
        return self._done_records[u]

    @property
    def info(self) -> dict[str, Any]:
        """What the corpus holds over its completed units: source, counts, skips, labels."""
        index = self.attrs.get("index", {})
        skipped = dict(index.get("skipped", {}))
        for reason, count in self.units.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        return {
            "source": self.attrs.get("source", ""),
            "source_hash": self.attrs.get("source_hash", ""),
            "counts": {
                "sequences": self._len,
                "tokens": int(self.units.n_tokens.sum()),
                "positions": int(self.units.n_positions.sum()),
            },
            "skipped": dict(sorted(skipped.items())),
            "skip_examples": (list(index.get("examples", [])) + self.units.examples)[:5],
            "label_names": self.units.labels,
            "bytes": self.units.bytes,
        }

    def array(self, name: str) -> zarr.Array:
        """The corpus's zarr array `name` (opened once: each open reads its metadata)."""
        if self._pid != os.getpid():  # forked (DataLoader worker): reopen, see `Store.root`
            self.group, self._arrays, self._pid = self._corpus_group(), {}, os.getpid()
        if name not in self._arrays:
            try:
                self._arrays[name] = child_array(self.group, name)
            except METADATA_DAMAGE as err:  # deleted or unreadable zarr.json
                raise StoreDamage(
                    f"array {name!r}: its metadata is missing or unreadable ({err})"
                ) from err
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.store, self.name = state["store"], state["name"]
        self._open()

    def __len__(self) -> int:
        return self._len

    @property
    def complete(self) -> bool:
        return len(self.done_units) == self.n_units

    def unit_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) dense sequence ranges, one per completed unit (block-shuffled reads)."""
        stops = np.r_[self._unit_first[1:], self._len]
        return [(int(a), int(b)) for a, b in zip(self._unit_first, stops, strict=True)]

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(indices) and (indices.min() < 0 or indices.max() >= self._len):
            raise IndexError(f"corpus {self.name!r} has {self._len} sequences, got {indices}")
        slot = np.searchsorted(self._unit_first, indices, side="right") - 1
        return self.done_units[slot], indices - self._unit_first[slot]

    def _check_objects(self, u: int) -> None:
        """Every object unit u wrote must exist with the size its done record lists."""
        listed = self.done_record(u)["objects"]
        store, keys = self.store.listed_objects(listed)
        for (name, (_, size, _)), found in zip(
            listed.items(), object_sizes(store, keys), strict=True
        ):
            if found is None:
                raise StoreDamage(f"the stored object of array {name!r} is missing (deleted?)")
            if found != size:
                raise StoreDamage(
                    f"the stored object of array {name!r} has {found} bytes, its done record "
                    f"says {size} (truncated or replaced?)"
                )

    def _unit(self, u: int) -> UnitBlock:
        if u in self._cache:
            self._cache.move_to_end(u)
            return self._cache[u]
        try:
            self._check_objects(u)
            block = self._read_unit(u)
        except StoreDamage as err:
            raise self._damaged(f", unit {u}", err) from err
        self._cache[u] = block
        if len(self._cache) > UNIT_CACHE:
            self._cache.popitem(last=False)
        return block

    def _read_unit(self, u: int) -> UnitBlock:
        g, layout, record = self.array, self.layout, self.done_record(u)
        sequences = layout.rows("sequence", u, int(record["n_sequences"]))
        lengths = read(g("lengths"), sequences).astype(np.int64)
        n_positions = read(g("n_positions"), sequences).astype(np.int64)
        n_tok, n_pos = int(lengths.sum()), int(n_positions.sum())
        if n_tok != record["n_tokens"] or n_pos != record["n_positions"]:
            raise StoreDamage("its lengths do not add up to the counts of its done record")
        tokens, positions = layout.rows("token", u, n_tok), layout.rows("position", u, n_pos)
        return UnitBlock(
            lengths=lengths,
            n_positions=n_positions,
            token_start=np.cumsum(lengths) - lengths,
            position_start=np.cumsum(n_positions) - n_positions,
            input_ids=read(g("input_ids"), tokens).astype(np.int64),
            word_ids=read(g("word_ids"), tokens).astype(np.int64),
            positions=read(g("positions"), positions).astype(np.int64),
            masked_ids=read(g("masked_ids"), positions).astype(np.int64),
            target_ids=read_target_ids(g, layout, u, n_pos),
            target_arrays={
                name: read(g(name), positions)
                for name in self.store.meta.target_encoding.stored_arrays()
            },
        )

    def _records(self, units: np.ndarray, local: np.ndarray) -> list[SequenceInfo]:
        rows = self.layout.start("sequence", units) + local
        try:
            texts = read(self.array("records"), rows, "coordinate").tolist()
        except StoreDamage as err:
            raise self._damaged("", err) from err
        return self._decode_records(texts)

    def _decode_records(self, texts: Any) -> list[SequenceInfo]:
        try:
            return [SequenceInfo.from_json(str(text)) for text in texts]
        except ValueError as err:  # not a record: replaced or garbled
            raise self._damaged(", array 'records'", err) from err

    def __getitem__(self, index: int) -> SequenceRecord:
        (u,), (i,) = self._locate(np.array([index], dtype=np.int64))
        blk = self._unit(int(u))
        t0, n = int(blk.token_start[i]), int(blk.lengths[i])
        p0, m = int(blk.position_start[i]), int(blk.n_positions[i])
        targets = self.store.meta.target_encoding.decode(
            blk.target_ids[p0 : p0 + m], {k: a[p0 : p0 + m] for k, a in blk.target_arrays.items()}
        )
        (info,) = self._records(np.array([u]), np.array([i]))
        return SequenceRecord(
            input_ids=blk.input_ids[t0 : t0 + n],
            word_ids=blk.word_ids[t0 : t0 + n],
            positions=blk.positions[p0 : p0 + m],
            masked_ids=blk.masked_ids[p0 : p0 + m],
            targets=targets,
            info=info,
        )

    def lengths(self) -> np.ndarray:
        """Tokens per sequence over the completed units (dense index order)."""
        return self._per_sequence("lengths").astype(np.int64)

    def split_array(self) -> np.ndarray:
        """Per-sequence split names (a numpy string array; no Python object per sequence)."""
        return self._per_sequence("split")

    def column(self, name: str) -> list[Any]:
        """Per-sequence field `name` of the records (a field of `SequenceInfo`)."""
        assert name in FIELDS, f"{name!r} is not a field of the stored records"
        if name == "split":
            return list(self.split_array())
        infos = self._decode_records(self._sequence_column("records"))
        return [getattr(info, name) for info in infos]

    def split_mask(self, splits: tuple[str, ...] | list[str]) -> np.ndarray:
        """Per-sequence: is its split one of `splits` (compared as codes where the summary has
        them, so no string per sequence is built)."""
        names = self.summary.split_names
        allowed = np.array([i + 1 for i, n in enumerate(names) if n in splits], dtype=np.uint8)
        parts = self.summary.per_sequence(
            "split", self.done_units, self.units.n_sequences, codes=True
        )
        own = self.unit_columns([i for i, part in enumerate(parts) if part is None], "split")
        masks = [
            np.isin(part, allowed) if part is not None else np.isin(own[i], list(splits))
            for i, part in enumerate(parts)
        ]
        return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)

    def unit_columns(self, which: list[int], array: str) -> dict[int, np.ndarray]:
        """`lengths` or `split` of the done units at positions `which` of `done_units`, read
        from the units' own chunks in one batch of requests."""
        if not which:
            return {}
        units, sizes = self.done_units[which], self.units.n_sequences[which]
        rows = ragged_index(self.layout.start("sequence", units), sizes)
        try:
            values = read(self.array(array), rows, "orthogonal")
        except StoreDamage as err:
            raise self._damaged("", err) from err
        values = values.astype(object).astype("U") if array == "split" else values.astype(np.int64)
        return dict(zip(which, np.split(values, np.cumsum(sizes)[:-1]), strict=True))

    def _per_sequence(self, array: str) -> np.ndarray:
        """`lengths` or `split` of every sequence: the summary's copy for consolidated units,
        the unit's own chunk for the others."""
        parts = self.summary.per_sequence(array, self.done_units, self.units.n_sequences)
        own = self.unit_columns([i for i, part in enumerate(parts) if part is None], array)
        filled = [part if part is not None else own[i] for i, part in enumerate(parts)]
        if not filled:
            return np.zeros(0, dtype=str if array == "split" else np.int64)
        return np.concatenate(filled)

    def _sequence_column(self, array: str) -> np.ndarray:
        try:
            arr = self.array(array)
            parts = [
                read(arr, self.layout.rows("sequence", int(u), int(n))).astype(object)
                for u, n in zip(self.done_units, self.units.n_sequences, strict=True)
            ]
        except StoreDamage as err:
            raise self._damaged("", err) from err
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
        if (values == "").any():  # written sequences always have a value
            raise self._damaged(
                f", array {array!r}", "entries of written sequences are empty (deleted object?)"
            )
        return values

    def batch(self, indices: Any) -> SparseBatch:
        """Many sequences decoded into padded torch tensors (see SparseBatch)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        units, local = self._locate(idx)
        return assemble_batch(self.store.meta, idx, units, local, self._unit)

"""Create a store and fill it unit by unit: create-once, resumable, idempotent, many writers.

    writer = create_store(url, meta, specs)       # create, or join after checking settings
    for unit in writer.pending("task"):           # units without a done record
        writer.write_unit(unit, UnitData(...))    # the unit's objects, then its done record

Creation is create-once: the store's metadata (with a fresh `store_id`) and each corpus's
identity are objects written only if absent (`objects.create_once`), so of two writers started
together with different settings one creates the store and the other is refused, naming the
field; a writer also re-reads the store's identity before every unit, so a store replaced under
it is never mixed into. Each corpus, once its group is whole, also leaves a create-once record in
the root (`arrays.corpus_record_key`), so a corpus group deleted later is a named loss. A crash
(even SIGKILL) before the done record leaves the unit pending; rerunning writes it again, so the
result equals an uninterrupted run's. Different processes may write different units at the same
time: each unit owns its slots (see `layout.py`).

The done record of a unit is its own object (JSON): the writer's store id and teacher hash, the
unit's source hash, its counts and skips, the label and split names it holds, and the manifest
(key, size, crc32) of every object it wrote.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync
from zarr.storage import StorePath

from logit_store import target_codec
from logit_store.arrays import (
    CORPORA_GROUP,
    CORPUS_KEY,
    META_KEY,
    attrs_dict,
    check_store_target,
    child_array,
    corpus_record_key,
    create_corpus_arrays,
    listed_done_units,
    open_root,
    unit_arrays,
)
from logit_store.encodings import SparseTargets
from logit_store.errors import StoreCorruptError, StoreMismatchError, UserError
from logit_store.layout import Unit, UnitLayout, round_up
from logit_store.meta import CorpusSpec, StoreMeta
from logit_store.objects import (
    ObjectRef,
    WrittenObjects,
    create_once,
    object_key,
    read_object,
)
from logit_store.sequence_info import SequenceInfo, label_names
from logit_store.store import open_store
from logit_store.summary import consolidate

STORE_ID_KEY = "kdcache.json"
CORPUS_ID_KEY = "kdcache_identity.json"
CORPUS_ID_FIELDS = ("source_hash", "unit_size", "n_units")  # the keys of `CorpusSpec.identity`


@dataclass(frozen=True)
class UnitData:
    """Everything one unit stores, sequences in record order, concatenated per axis.

    input_ids (T,) original token ids; word_ids (T,) token -> word index (-1: special token);
    lengths (N,) tokens per sequence; positions (P,) labelled positions within their sequence;
    masked_ids (P,) the id the teacher saw there; n_positions (N,) labelled positions per
    sequence; targets: SparseTargets with P rows; records: one `SequenceInfo` per sequence, or
    those already encoded (`EncodedRecords`); skipped / examples: the unit's skips;
    n_records: source records the unit covered (sequences + skipped records).
    """

    input_ids: np.ndarray
    word_ids: np.ndarray
    lengths: np.ndarray
    positions: np.ndarray
    masked_ids: np.ndarray
    n_positions: np.ndarray
    targets: SparseTargets
    records: list[SequenceInfo] | EncodedRecords
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    n_records: int | None = None


def _identity_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def identity_remedy(url: str, key: str) -> str:
    """What to do about a missing, unreadable or contradicting identity object `key`: restore
    it, or recreate it from the metadata that holds the same fields (written from it at
    creation, so the store id and settings are the ones every writer checked)."""
    if key == STORE_ID_KEY:
        source = f"the attribute {META_KEY!r} of {url}/zarr.json (the store metadata and id)"
    else:
        fields = ", ".join(CORPUS_ID_FIELDS)
        corpus = key.removesuffix(f"/{CORPUS_ID_KEY}")
        source = f"{fields} of the attribute {CORPUS_KEY!r} of {url}/{corpus}/zarr.json"
    return (
        f"restore {key} from a copy of the store, or recreate it from the store's metadata: "
        f"write {source} as one JSON object to {url}/{key}"
    )


def _read_identity(url: str, key: str, options: dict[str, Any] | None) -> dict[str, Any]:
    return _identity(url, key, read_object(url, key, options))


def _identity(url: str, key: str, raw: bytes | None) -> dict[str, Any]:
    """The identity object `key` of the store at `url` from its bytes (None: it is missing)."""
    if raw is None:
        raise StoreCorruptError(f"store {url}: {key} is missing; {identity_remedy(url, key)}")
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("not an object")
    except ValueError as err:
        raise StoreCorruptError(
            f"store {url}: {key} cannot be read ({err}); {identity_remedy(url, key)}"
        ) from err
    return value


def _claim_store(url: str, meta: StoreMeta, options: dict[str, Any] | None) -> StoreMeta:
    """Create the store's identity once; a later writer must match it. Returns the stored meta.

    Nothing is written before the claim: a writer that is refused leaves the store as it was."""
    if _root_exists(url, options):
        root = open_root(url, "r", options)
        if META_KEY in root.attrs:  # refuses an older format, or other settings, first
            StoreMeta.from_dict(attrs_dict(root, META_KEY), url).check(meta, where=f"store {url}")
    wanted = {**meta.to_dict(), "store_id": uuid.uuid4().hex}
    if not create_once(url, STORE_ID_KEY, _identity_json(wanted), options):
        stored = StoreMeta.from_dict(_read_identity(url, STORE_ID_KEY, options), url)
        stored.check(meta, where=f"store {url}")
        return stored
    return StoreMeta.from_dict(wanted, url)


def _root_exists(url: str, options: dict[str, Any] | None) -> bool:
    return read_object(url, "zarr.json", options) is not None


def _claim_corpus(url: str, spec: CorpusSpec, options: dict[str, Any] | None) -> None:
    key = f"{CORPORA_GROUP}/{spec.name}/{CORPUS_ID_KEY}"
    if not create_once(url, key, _identity_json(spec.identity()), options):
        stored = _read_identity(url, key, options)
        diffs = [
            (f"{spec.name}.{name}", stored.get(name), want)
            for name, want in spec.identity().items()
            if stored.get(name) != want
        ]
        if diffs:
            raise StoreMismatchError(f"corpus {spec.name!r} in store {url}", diffs)


def _record_corpus(url: str, spec: CorpusSpec, options: dict[str, Any] | None) -> None:
    """Leave the root's create-once record of corpus `spec.name` (its name and source, outside
    its group), once the group is whole, so a deleted group is a loss readers and `verify` name.
    One object per corpus: creators of different corpora never contend; a later claim (a
    rerun, or a store written before these records) writes it if absent."""
    record = {"name": spec.name, "source": spec.source}
    create_once(url, corpus_record_key(spec.name), _identity_json(record), options)


def create_store(
    url: str,
    meta: StoreMeta,
    specs: list[CorpusSpec],
    storage_options: dict[str, Any] | None = None,
) -> StoreWriter:
    """Create the store (or join it, refusing different settings) and return a writer.

    New corpora may be added to an existing store with the same StoreMeta; missing arrays of a
    known corpus (a deleted ``done`` array, say) are recreated. A path holding anything else (a
    file, other files, another zarr group) is refused.
    """
    check_store_target(url, storage_options)
    stored = _claim_store(url, meta, storage_options)
    root = open_root(url, "a", storage_options, attributes={META_KEY: stored.to_dict()})
    # the root through the writer's store (its reads are ranged: creating an array reads its
    # parents' metadata; the units' writes are noted for their manifests)
    root = zarr.Group(AsyncGroup(root.metadata, StorePath(WrittenObjects(root.store))))
    if META_KEY not in root.attrs:  # a root group created by an interrupted older attempt
        root.attrs[META_KEY] = stored.to_dict()
    layouts: dict[str, UnitLayout] = {}
    for spec in specs:
        _claim_corpus(url, spec, storage_options)
        group = _require_group(root, f"{CORPORA_GROUP}/{spec.name}")
        layouts[spec.name] = create_corpus_arrays(group, stored, spec)
        if CORPUS_KEY not in group.attrs:
            group.attrs[CORPUS_KEY] = {
                **spec.identity(),
                "source": spec.source,
                "index": spec.index,
                **layouts[spec.name].to_attrs(),
            }
        _record_corpus(url, spec, storage_options)
    return StoreWriter(url, root, stored, {s.name: s for s in specs}, layouts, storage_options)


def _require_group(root: zarr.Group, path: str) -> zarr.Group:
    try:
        return root.require_group(path)
    except zarr.errors.ContainsGroupError:  # another process created it meanwhile
        group = root[path]
        assert isinstance(group, zarr.Group)
        return group


@dataclass(frozen=True)
class EncodedRecords:
    """A unit's per-sequence records as stored: JSON and split strings (object arrays), and the
    label and split names they hold. Encoding them is a cost per sequence, so a host worker can
    do it ahead of the writer (`UnitData.records` takes either form)."""

    json: np.ndarray
    splits: np.ndarray
    labels: dict[str, list[str]]
    split_names: list[str]

    def __len__(self) -> int:
        return len(self.json)

    @classmethod
    def of(cls, records: list[SequenceInfo] | EncodedRecords) -> EncodedRecords:
        if isinstance(records, EncodedRecords):
            return records
        splits = [r.split for r in records]
        return cls(
            json=np.array([r.to_json() for r in records], dtype=object),
            splits=np.array(splits, dtype=object),
            labels=label_names(records),
            split_names=sorted(set(splits)),
        )


class StoreWriter:
    """Writes whole units of the corpora it was created with."""

    def __init__(
        self,
        url: str,
        root: zarr.Group,
        meta: StoreMeta,
        specs: dict[str, CorpusSpec],
        layouts: dict[str, UnitLayout],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        assert isinstance(root.store, WrittenObjects), "a writer's root is create_store's"
        self.url, self.root, self.meta, self.store = url, root, meta, root.store
        self.specs, self.layouts = specs, layouts
        self.storage_options = storage_options
        self._arrays: dict[tuple[str, str], zarr.Array] = {}

    def _array(self, corpus: str, name: str) -> zarr.Array:
        """A corpus array, opened once: each open reads metadata objects, which on object
        storage is a request per level (most of a unit's requests without this cache).
        Chunks of fill values are written too, so every object a unit lists exists."""
        key = (corpus, name)
        if key not in self._arrays:
            array = child_array(self.root, f"{CORPORA_GROUP}/{corpus}/{name}")
            self._arrays[key] = array.with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def units(self, corpus: str) -> list[Unit]:
        return [Unit(corpus, u) for u in range(self.layouts[corpus].n_units)]

    def pending(self, corpus: str) -> list[Unit]:
        """Units without a done record (one listing of the done array's objects)."""
        done = set(listed_done_units(self._array(corpus, "done")).tolist())
        return [u for u in self.units(corpus) if u.index not in done]

    def _check_identity(self, raw: bytes | None) -> None:
        """Refuse to write into a store that was deleted and created anew under this writer
        (`raw`: the store's identity object as just read)."""
        stored = _identity(self.url, STORE_ID_KEY, raw)
        if stored.get("store_id") != self.meta.store_id:
            raise UserError(
                f"store {self.url} was replaced by another writer (store id "
                f"{stored.get('store_id')}, this writer joined {self.meta.store_id}); stopping"
            )

    def write_unit(self, unit: Unit, data: UnitData) -> None:
        """Write all of a unit's objects, then its done record (readers never see half a unit).

        One round of zarr requests: the store's identity is checked, the arrays are written
        concurrently, then the done record, whose manifest lists the size and crc32 of each
        object as it was written."""
        layout, meta = self.layouts[unit.corpus], self.meta
        _check_unit(unit, data, layout, meta)
        records = EncodedRecords.of(data.records)
        u, arrays = unit.index, unit_arrays(meta)
        refs: list[ObjectRef] = []
        writes: list[tuple[zarr.Array, slice, np.ndarray]] = []

        def put(name: str, values: np.ndarray) -> None:
            arr = self._array(unit.corpus, name)
            axis, used = arrays[name][0], len(values)
            slot = layout.slot(axis)
            if axis == "sequence":
                rows = slot
            elif used == 0:
                return
            else:
                rows = min(slot, round_up(used, layout.chunk(axis)))
            if arr.dtype.kind in "OTU":
                full = np.full((rows,), "", dtype=object)
            else:
                full = np.zeros((rows, *arr.shape[1:]), dtype=arr.dtype)
            full[:used] = values
            writes.append((arr, layout.rows(axis, u, rows), full))
            refs.append((name, object_key(arr, (u,) + (0,) * (arr.ndim - 1))))

        put("lengths", data.lengths.astype(np.int32))
        put("n_positions", data.n_positions.astype(np.int32))
        put("records", records.json)
        put("split", records.splits)
        put("input_ids", data.input_ids)
        put("word_ids", data.word_ids)
        put("positions", data.positions)
        put("masked_ids", data.masked_ids)
        for name, values in target_codec.encode(meta, data.targets).items():
            put(name, values)

        spec = self.specs[unit.corpus]
        done = {
            "store_id": meta.store_id,
            "teacher_hash": meta.teacher_hash,
            "unit_hash": spec.unit_hash(u),
            "n_records": int(data.n_records if data.n_records is not None else len(records)),
            "n_sequences": len(records),
            "n_tokens": len(data.input_ids),
            "n_positions": len(data.positions),
            "skipped": {k: int(v) for k, v in sorted(data.skipped.items()) if v},
            "examples": list(data.examples),
            "labels": records.labels,
            "splits": records.split_names,
        }
        done_array = self._array(unit.corpus, "done").async_array

        keys = [key for _, key in refs]

        async def write_all() -> None:
            identity = await self.store.get(STORE_ID_KEY, default_buffer_prototype())
            self._check_identity(None if identity is None else identity.to_bytes())
            # the unit owns its objects: each is written whole, not merged with a leftover
            self.store.writing.update(keys)
            try:
                await asyncio.gather(*(a.async_array.setitem(rows, v) for a, rows, v in writes))
                done["objects"] = await self.store.manifest(refs)
            finally:
                self.store.forget(keys)
            # the done record: one object of its own, written last
            await done_array.setitem(slice(u, u + 1), np.array([json.dumps(done)], dtype=object))

        sync(write_all())


def _check_unit(unit: Unit, data: UnitData, layout: UnitLayout, meta: StoreMeta) -> None:
    """The unit data must be consistent and fit its slots (internal invariant: asserts)."""
    n_seq = len(data.records)
    assert n_seq <= layout.unit_size, f"unit {unit}: {n_seq} sequences > unit size"
    assert len(data.lengths) == len(data.n_positions) == n_seq, f"unit {unit}: sequence counts"
    assert len(data.input_ids) == len(data.word_ids) == int(data.lengths.sum()), (
        f"unit {unit}: token count"
    )
    assert len(data.input_ids) <= layout.token_slot, f"unit {unit}: tokens exceed the slot"
    assert len(data.positions) == len(data.masked_ids) == int(data.n_positions.sum()), (
        f"unit {unit}: positions"
    )
    assert len(data.positions) <= layout.position_slot, f"unit {unit}: positions exceed the slot"
    assert data.targets.num_positions == len(data.positions), f"unit {unit}: target rows"
    if len(data.positions):
        seq_len = np.repeat(data.lengths, data.n_positions)
        assert ((data.positions >= 0) & (data.positions < seq_len)).all(), (
            f"unit {unit}: position range"
        )
    if len(data.input_ids):
        assert data.input_ids.min() >= 0 and data.input_ids.max() < meta.vocab_size, (
            "token id range"
        )


def consolidate_store(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fold the done records written since the last summary into it, for every corpus
    (`summary.py`); one process calls this at the end of a run."""
    store = open_store(url, storage_options=storage_options)
    root = open_root(url, "a", storage_options)
    for name in store.corpora:
        corpus = store[name]
        which = np.flatnonzero(~corpus.summary.covers(corpus.done_units)).tolist()
        lengths, splits = corpus.unit_columns(which, "lengths"), corpus.unit_columns(which, "split")
        fresh = {}
        for i in which:
            u = int(corpus.done_units[i])
            fresh[u] = (corpus.done_record(u), lengths[i], splits[i])
        group = root[f"{CORPORA_GROUP}/{name}"]
        assert isinstance(group, zarr.Group)
        consolidate(group, corpus.summary, fresh)

"""Create a store and fill it unit by unit: resumable, idempotent, safe for many writers.

    writer = create_store(url, meta, plans)       # create, or reopen after checking settings
    for unit in writer.pending("task"):           # units whose done flag is not set
        writer.write_unit(unit, UnitData(...))    # all shards of the unit, then its done flag

A crash (even SIGKILL) between the two leaves the unit un-flagged; rerunning writes it again
from scratch, so the result equals an uninterrupted run's. Different processes may write
different units at the same time: each unit owns its shards (see `layout.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from logit_store import target_codec
from logit_store.arrays import (
    CORPORA_GROUP,
    CORPUS_KEY,
    META_KEY,
    attrs_dict,
    check_store_target,
    child_array,
    create_corpus_arrays,
    layout_attrs,
    open_root,
    table_slot,
)
from logit_store.errors import StoreMismatchError
from logit_store.layout import Unit, UnitLayout
from logit_store.meta import CorpusPlan, StoreMeta
from logit_store.records import SparseTargets

RECORD_FIELDS = ("id", "line", "split", "domain", "intent", "locale", "tags", "text")


@dataclass(frozen=True)
class UnitData:
    """Everything one unit stores, sequences in plan order, concatenated per axis.

    input_ids (T,) original token ids; word_ids (T,) token -> word index (-1: special token);
    positions (P,) labelled positions within their sequence; masked_ids (P,) the id the teacher
    saw there; targets: SparseTargets with P rows; records: one dict per sequence with the keys
    of RECORD_FIELDS (missing keys are stored as null).
    """

    input_ids: np.ndarray
    word_ids: np.ndarray
    positions: np.ndarray
    masked_ids: np.ndarray
    targets: SparseTargets
    records: list[dict[str, Any]]


def _plan_diffs(group: zarr.Group, plan: CorpusPlan) -> list[tuple[str, object, object]]:
    stored = attrs_dict(group, CORPUS_KEY)
    wanted = plan.attrs()
    diffs: list[tuple[str, object, object]] = [
        (f"{plan.name}.{key}", stored.get(key), wanted[key])
        for key in ("source_hash", "unit_size", "counts", "label_names")
        if stored.get(key) != wanted[key]
    ]
    if not diffs:
        for name, values in (("plan_lengths", plan.lengths), ("plan_positions", plan.n_positions)):
            if not np.array_equal(child_array(group, name)[:], values):
                diffs.append((f"{plan.name}.{name}", "stored plan", "a different plan"))
    return diffs


def create_store(
    url: str,
    meta: StoreMeta,
    plans: list[CorpusPlan],
    storage_options: dict[str, Any] | None = None,
) -> StoreWriter:
    """Create the store (or reopen it, refusing different settings) and return a writer.

    New corpora may be added to an existing store with the same StoreMeta. With several
    processes, let one call this first; the others then reopen (their call only validates).
    A path holding anything else (a file, other files, another zarr group) is refused.
    """
    check_store_target(url, storage_options)
    root = open_root(url, "a", storage_options)
    if META_KEY in root.attrs:
        StoreMeta.from_dict(attrs_dict(root, META_KEY)).check(meta, where=f"store {url}")
    layouts: dict[str, UnitLayout] = {}
    for plan in plans:
        path = f"{CORPORA_GROUP}/{plan.name}"
        layout = UnitLayout.from_plan(plan)
        layouts[plan.name] = layout
        existing = root.get(path)
        if isinstance(existing, zarr.Group) and CORPUS_KEY in existing.attrs:
            diffs = _plan_diffs(existing, plan)
            if diffs:
                raise StoreMismatchError(f"corpus {plan.name!r} in store {url}", diffs)
            continue
        group = root.require_group(path)
        create_corpus_arrays(group, meta, plan, layout)
        group.attrs[CORPUS_KEY] = {**plan.attrs(), "layout": layout_attrs(meta, layout)}
    if META_KEY not in root.attrs:
        root.attrs[META_KEY] = meta.to_dict()
    return StoreWriter(url, root, meta, {p.name: p for p in plans}, layouts)


class StoreWriter:
    """Writes whole units of the corpora it was created with."""

    def __init__(
        self,
        url: str,
        root: zarr.Group,
        meta: StoreMeta,
        plans: dict[str, CorpusPlan],
        layouts: dict[str, UnitLayout],
    ) -> None:
        self.url, self.root, self.meta = url, root, meta
        self.plans, self.layouts = plans, layouts
        self._arrays: dict[tuple[str, str], zarr.Array] = {}

    def _array(self, corpus: str, name: str) -> zarr.Array:
        """A corpus array, opened once: each open reads metadata objects, which on object
        storage is a request per level (most of a unit's requests without this cache).
        Empty chunks are written too, so every object of a done unit exists and a deleted one
        is detected (`arrays.missing_unit_objects`) instead of read back as zeros."""
        key = (corpus, name)
        if key not in self._arrays:
            array = child_array(self.root, f"{CORPORA_GROUP}/{corpus}/{name}")
            self._arrays[key] = array.with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def units(self, corpus: str) -> list[Unit]:
        return self.layouts[corpus].units(corpus, self.plans[corpus].num_sequences)

    def pending(self, corpus: str) -> list[Unit]:
        done = np.asarray(self._array(corpus, "done")[:])
        return [u for u in self.units(corpus) if not done[u.index]]

    def write_unit(self, unit: Unit, data: UnitData) -> None:
        """Write all of a unit's shards, then its done flag (so readers never see half a unit)."""
        plan, layout = self.plans[unit.corpus], self.layouts[unit.corpus]
        lengths = plan.lengths[unit.start : unit.stop]
        n_positions = plan.n_positions[unit.start : unit.stop]
        n_tokens, n_labelled = int(lengths.sum()), int(n_positions.sum())
        _check_unit(unit, data, lengths, n_positions, self.meta)
        encoded = target_codec.encode(self.meta, data.targets)
        u, s, t, p = unit.index, layout.unit_size, layout.token_slot, layout.position_slot

        def put(name: str, values: np.ndarray, slot: int, used: int) -> None:
            arr = self._array(unit.corpus, name)
            full = np.zeros((slot, *arr.shape[1:]), dtype=arr.dtype)
            full[:used] = values
            arr[u * slot : (u + 1) * slot] = full

        put("input_ids", data.input_ids, t, n_tokens)
        put("word_ids", data.word_ids, t, n_tokens)
        put("positions", data.positions, p, n_labelled)
        put("masked_ids", data.masked_ids, p, n_labelled)
        put("target_ids", encoded["ids"], p, n_labelled)
        put("target_values", encoded["values"], p, n_labelled)
        put("id_table", encoded["table"], table_slot(self.meta, layout), len(encoded["table"]))
        if "tail" in encoded:
            put("tail_logmass", encoded["tail"], p, n_labelled)
        records = np.full(s, "", dtype=object)
        splits = np.full(s, "", dtype=object)
        for i, rec in enumerate(data.records):
            records[i] = json.dumps(
                {key: rec.get(key) for key in RECORD_FIELDS}, ensure_ascii=False
            )
            splits[i] = str(rec.get("split") or "train")
        self._array(unit.corpus, "records")[u * s : (u + 1) * s] = records
        self._array(unit.corpus, "split")[u * s : (u + 1) * s] = splits
        # a whole-chunk slice, so zarr writes the flag without first reading the old one
        self._array(unit.corpus, "done")[u : u + 1] = np.ones(1, dtype=np.uint8)


def _check_unit(
    unit: Unit, data: UnitData, lengths: np.ndarray, n_positions: np.ndarray, meta: StoreMeta
) -> None:
    """The unit data must match the plan it was cut from (internal invariant: asserts)."""
    n_seq = unit.stop - unit.start
    assert len(data.records) == n_seq, (
        f"unit {unit}: {len(data.records)} records for {n_seq} sequences"
    )
    assert len(data.input_ids) == len(data.word_ids) == int(lengths.sum()), (
        f"unit {unit}: token count"
    )
    assert len(data.positions) == len(data.masked_ids) == int(n_positions.sum()), (
        f"unit {unit}: positions"
    )
    assert data.targets.num_positions == len(data.positions), f"unit {unit}: target rows"
    if len(data.positions):
        seq_len = np.repeat(lengths, n_positions)
        assert ((data.positions >= 0) & (data.positions < seq_len)).all(), (
            f"unit {unit}: position range"
        )
    if len(data.input_ids):
        assert data.input_ids.min() >= 0 and data.input_ids.max() < meta.vocab_size, (
            "token id range"
        )

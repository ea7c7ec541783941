"""`kdcache verify`: read every chunk of a store and check it is complete and consistent.

Each fault is one line naming the corpus, array and unit, so a user knows exactly which part to
recompute (delete no unit by hand: a rerun of precompute rewrites units whose flag is unset).
Derived data has its own lines: the consolidated summary and the stored source index (the line
says which arrays to delete so that a rerun writes them anew), and the create-once identity
objects (the line says how to recreate one from the metadata beside it). A corpus the root
records (`arrays.corpus_record_key`) whose group is gone is a fault too, naming the corpus and
its source to compute it again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from logit_store.arrays import (
    CORPORA_GROUP,
    METADATA_DAMAGE,
    StoreDamage,
    child_array,
    corpus_record_key,
    read,
    unit_arrays,
)
from logit_store.errors import StoreCorruptError, UserError
from logit_store.meta import StoreMeta
from logit_store.objects import object_bytes, read_object
from logit_store.reader import Corpus
from logit_store.sequence_info import SequenceInfo
from logit_store.source_index import index_problem
from logit_store.store import Store, open_store
from logit_store.summary import ARRAYS as SUMMARY_ARRAYS
from logit_store.summary import UnitTable, aggregate
from logit_store.writer import CORPUS_ID_FIELDS, CORPUS_ID_KEY, STORE_ID_KEY, identity_remedy

MAX_LISTED = 10


def _expected_objects(corpus: Corpus, record: dict[str, Any]) -> list[str]:
    """Arrays a unit with these counts must have written."""
    used = {"sequence": True, "token": record["n_tokens"] > 0}
    used |= {"position": record["n_positions"] > 0, "position2": record["n_positions"] > 0}
    used["table"] = record["n_positions"] > 0
    return [n for n, (axis, _) in unit_arrays(corpus.store.meta).items() if used[axis]]


def _check_objects(corpus: Corpus, record: dict[str, Any], where: str) -> list[str]:
    """Every object of the unit exists with the size and crc32 its done record lists."""
    listed = record["objects"]
    faults = [
        f"{where}: array {name!r} is missing from its done record"
        for name in _expected_objects(corpus, record)
        if name not in listed
    ]
    store, keys = corpus.store.listed_objects(listed)
    for (name, (_, size, crc)), data in zip(listed.items(), object_bytes(store, keys), strict=True):
        if data is None:
            faults.append(f"{where}: array {name!r} has no stored object (deleted?)")
        elif len(data) != size:
            faults.append(
                f"{where}: array {name!r}: its object has {len(data)} bytes, the done record "
                f"says {size} (truncated or replaced)"
            )
        elif zlib.crc32(data) != crc:
            faults.append(f"{where}: array {name!r}: its object's checksum differs (replaced?)")
    return faults


def _check_identity(
    corpus: Corpus, u: int, record: dict[str, Any], where: str, hashes: np.ndarray | None
) -> list[str]:
    """Unit u was computed from the indexed source (`done_record` already refused a record of
    another store or teacher)."""
    if hashes is not None and record.get("unit_hash") != bytes(hashes[u]).hex():
        return [f"{where}: computed from other source content than the store's index"]
    return []


def _check_unit(corpus: Corpus, u: int, hashes: np.ndarray | None) -> list[str]:
    meta, layout = corpus.store.meta, corpus.layout
    n_classes, vocab = meta.num_classes, meta.vocab_size
    where = f"corpus {corpus.name!r} unit {u}"
    try:
        record = corpus.done_record(u)
    except StoreCorruptError as err:
        return [str(err)]
    faults = _check_identity(corpus, u, record, where, hashes)
    faults += _check_objects(corpus, record, where)
    if faults:
        return faults
    n_seq = int(record["n_sequences"])
    try:  # ids past the unit's id table are damage too (`read_target_ids`)
        block = corpus._read_unit(u)
        records = read(corpus.array("records"), layout.rows("sequence", u)).astype(object)
    except StoreDamage as err:
        return [f"{where}: {err}"]
    if (records[:n_seq] == "").any() or (records[n_seq:] != "").any():
        faults.append(f"{where}: array 'records' does not hold exactly {n_seq} records")
    else:
        for i, rec in enumerate(records[:n_seq]):
            try:
                SequenceInfo.from_json(str(rec))
            except ValueError:
                row = layout.start("sequence", u) + i
                faults.append(f"{where}: record {row} is not a valid record (JSON)")
                break
    ids = block.input_ids
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
        faults.append(f"{where}: array 'input_ids' has ids outside [0, {vocab})")
    positions = block.positions
    if (
        len(positions)
        and ((positions < 0) | (positions >= np.repeat(block.lengths, block.n_positions))).any()
    ):
        faults.append(f"{where}: array 'positions' points outside its sequence")
    masked = block.masked_ids
    if len(masked) and (masked.min() < 0 or masked.max() >= vocab):
        faults.append(f"{where}: array 'masked_ids' has ids outside [0, {vocab})")
    encoding = meta.target_encoding
    targets = encoding.decode(block.target_ids, block.target_arrays)
    if len(targets.ids) and (targets.ids.max() >= n_classes):
        faults.append(f"{where}: array 'target_ids' decodes to ids outside [0, {n_classes})")
    faults.extend(f"{where}: {fault}" for fault in encoding.faults(targets))
    return faults


def _identity_object(
    store: Store,
    key: str,
    want: dict[str, Any],
    parse: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> list[str]:
    """The create-once identity object `key` exists and holds the fields `want` (the metadata
    written from it at creation) once parsed (`parse`: defaults of fields added later)."""
    url, options = store.url, store.storage_options
    remedy = identity_remedy(url, key)
    raw = read_object(url, key, options)
    if raw is None:
        return [f"store {url}: {key} is missing; {remedy}"]
    try:
        stored = json.loads(raw)
        if not isinstance(stored, dict):
            raise ValueError("not an object")
        stored = parse(stored)
    except (ValueError, UserError) as err:
        return [f"store {url}: {key} cannot be read ({err}); {remedy}"]
    differ = [name for name, value in want.items() if stored.get(name) != value]
    if not differ:
        return []
    return [
        f"store {url}: {key} disagrees with the metadata in zarr.json on "
        f"{', '.join(differ)} (one of them was replaced); {remedy}"
    ]


def _check_index(corpus: Corpus) -> tuple[list[str], np.ndarray | None]:
    """Faults of the corpus's stored source index (checked against the corpus's identity as a
    rerun checks it, `source_index.stored_corpus_index`), and its unit hashes when intact."""
    index = dict(corpus.attrs.get("index", {}))
    if not index and "index_hashes" not in corpus.group:
        return [], None
    problem: str | None = None
    hashes: np.ndarray | None = None
    try:
        hashes = corpus.index_hashes()
        units = read(child_array(corpus.group, "index_units"), ...)
    except StoreDamage as err:
        problem = str(err)
    except METADATA_DAMAGE as err:
        problem = f"an array's metadata is missing or unreadable: {err}"
    else:
        arrays = {"units": units} if hashes is None else {"units": units, "hashes": hashes}
        problem = index_problem(corpus.attrs, index, arrays) if index else None
    if not problem:
        return [], hashes
    name = corpus.name
    return [
        f"corpus {name!r}: its stored source index is damaged ({problem}); a rerun of the "
        "precompute command indexes the source again instead; to repair the store, delete "
        f"corpora/{name}/index_units and corpora/{name}/index_hashes and rerun it: it rewrites "
        "them from that index"
    ], None


def _check_summary(corpus: Corpus) -> list[str]:
    """The consolidated summary, if any, must equal what the done units' own data says."""
    group, name = corpus.group, corpus.name
    where = f"corpus {name!r}: its summary"
    remedy = (
        "it is derived from the done units, which are intact where no unit fault is listed: "
        f"delete corpora/{name}/summary_units and rerun the precompute command, whose final "
        "consolidation rewrites the summary from them"
    )
    try:
        if not any(key in group for key in SUMMARY_ARRAYS):
            return []
        stored = {key: child_array(group, key) for key in SUMMARY_ARRAYS}
        table, lengths, codes = (read(arr, ...).astype(np.int64) for arr in stored.values())
    except StoreDamage as err:
        return [f"{where} is damaged ({err}); {remedy}"]
    except METADATA_DAMAGE as err:
        return [
            f"{where} is damaged (an array's metadata is missing or unreadable: {err}); {remedy}"
        ]
    problem = _summary_problem(corpus, table, lengths, codes, dict(stored["summary_units"].attrs))
    return [f"{where} is stale or damaged ({problem}); {remedy}"] if problem else []


def _summary_problem(
    corpus: Corpus,
    table: np.ndarray,
    lengths: np.ndarray,
    codes: np.ndarray,
    attrs: dict[str, Any],
) -> str | None:
    """What in the summary contradicts the done units (those verify could read), or None."""
    if table.shape != (corpus.n_units, 4) or not np.isin(table[:, 0], (0, 1)).all():
        return f"array 'summary_units' has shape {table.shape} or flags no consolidation writes"
    consolidated = np.flatnonzero(table[:, 0] == 1)
    sizes = table[consolidated, 1]
    for key, values in (("summary_lengths", lengths), ("summary_split", codes)):
        if len(values) != int(sizes.sum()):
            return f"array {key!r} holds {len(values)} sequences, its units {int(sizes.sum())}"
    splits = ["", *attrs.get("splits", [])]
    if len(codes) and (codes.min() < 1 or codes.max() >= len(splits)):
        return "array 'summary_split' holds split codes outside its split names"
    first = dict(zip(consolidated.tolist(), (np.cumsum(sizes) - sizes).tolist(), strict=True))
    done = {u: i for i, u in enumerate(corpus.done_units.tolist())}
    records: dict[int, dict[str, Any]] = {}
    for u in consolidated.tolist():
        try:
            records[u] = corpus.done_record(u) if u in done else {}
        except StoreCorruptError:  # a fault of the unit (`_check_unit`)
            records[u] = {}
        r = records[u]
        counts = [r.get(k) for k in ("n_sequences", "n_tokens", "n_positions")] if r else None
        if counts is not None and table[u, 1:].tolist() != counts:
            return (
                f"unit {u}: sequences, tokens, positions {table[u, 1:].tolist()}, its done "
                f"record {counts}"
            )
    which = [done[u] for u, r in records.items() if r]
    try:
        own = {key: corpus.unit_columns(which, key) for key in ("lengths", "split")}
    except StoreCorruptError:  # the units' own faults
        return None
    for i in which:
        u = int(corpus.done_units[i])
        rows = slice(first[u], first[u] + int(table[u, 1]))
        if not np.array_equal(lengths[rows], own["lengths"][i]):
            return f"unit {u}: array 'summary_lengths' differs from the unit's lengths"
        if [splits[c] for c in codes[rows]] != own["split"][i].tolist():
            return f"unit {u}: array 'summary_split' differs from the unit's splits"
    if len(which) == len(consolidated):  # every consolidated unit is done: compare aggregates
        want = UnitTable(sizes, table[consolidated, 2], table[consolidated, 3])
        aggregate(records.values(), want)
        for key in ("skipped", "labels", "splits", "bytes"):
            if attrs.get(key, {}) != getattr(want, key):
                return f"the attribute {key!r} of 'summary_units' differs from the done records'"
    return None


def verify_store(
    url: str,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[str], object] | None = None,
) -> list[str]:
    """Every fault found, as one line each; an empty list means complete and consistent.

    A URL that holds no store at all (or cannot be reached) is a UserError, not a fault.
    """
    try:
        store = open_store(url, storage_options=storage_options)
    except StoreCorruptError as err:
        return [str(err)]
    meta = store.meta.to_dict()
    faults = _identity_object(
        store, STORE_ID_KEY, meta, lambda d: StoreMeta.from_dict(d, url).to_dict()
    )
    try:
        names = store.corpora
    except StoreCorruptError as err:
        return [*faults, str(err)]
    recorded = store.recorded_corpora
    faults += [store.lost_message(name) for name in recorded if name not in names]
    if not names and not recorded:
        faults.append(f"store {url} holds no corpora")
    unrecorded = [name for name in names if name not in recorded]
    if unrecorded and progress is not None:  # written before the root recorded its corpora
        progress(
            f"note: the root of {url} records no {', '.join(map(repr, unrecorded))} "
            f"({corpus_record_key(unrecorded[0])}, ...: written by an older kdcache), so a "
            "deleted corpus group cannot be noticed; a rerun of the precompute command records "
            "the corpora it names"
        )
    for name in names:
        try:
            corpus = store[name]
        except StoreCorruptError as err:
            faults.append(str(err))
            continue
        missing = sorted(set(range(corpus.n_units)) - set(corpus.done_units.tolist()))
        if missing:
            listed = ", ".join(map(str, missing[:MAX_LISTED])) + (
                " ..." if len(missing) > MAX_LISTED else ""
            )
            faults.append(
                f"corpus {name!r}: {len(missing)} of {corpus.n_units} units not written "
                f"(units {listed}); rerun the precompute command to finish them"
            )
        key = f"{CORPORA_GROUP}/{name}/{CORPUS_ID_KEY}"
        faults += _identity_object(store, key, {k: corpus.attrs.get(k) for k in CORPUS_ID_FIELDS})
        index_faults, hashes = _check_index(corpus)
        faults += index_faults
        for u in corpus.done_units.tolist():
            faults.extend(_check_unit(corpus, u, hashes))
        faults += _check_summary(corpus)
        if progress is not None:
            progress(f"checked corpus {name!r}: {len(corpus.done_units)} units")
    return faults

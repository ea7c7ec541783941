"""`kdcache verify`: read every chunk of a store and check it is complete and consistent.

Each fault is one line naming the corpus, array and unit, so a user knows exactly which part to
recompute (delete nothing by hand: a rerun of precompute rewrites units whose flag is unset).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from logit_store.arrays import StoreDamage, read, unit_arrays
from logit_store.errors import StoreCorruptError
from logit_store.objects import object_bytes
from logit_store.reader import Corpus
from logit_store.sequence_info import SequenceInfo
from logit_store.store import open_store

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


def _check_identity(corpus: Corpus, u: int, record: dict[str, Any], where: str) -> list[str]:
    faults = []
    meta = corpus.store.meta
    if record.get("teacher_hash") != meta.teacher_hash:
        faults.append(f"{where}: written by another teacher ({record.get('teacher_hash')!r})")
    hashes = corpus.index_hashes()
    if hashes is not None and record.get("unit_hash") != bytes(hashes[u]).hex():
        faults.append(f"{where}: computed from other source content than the store's index")
    return faults


def _check_unit(corpus: Corpus, u: int, n_classes: int, vocab: int) -> list[str]:
    meta, layout = corpus.store.meta, corpus.layout
    where = f"corpus {corpus.name!r} unit {u}"
    try:
        record = corpus.done_record(u)
    except StoreCorruptError as err:
        return [str(err)]
    faults = _check_identity(corpus, u, record, where)
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
    faults: list[str] = []
    try:
        names = store.corpora
    except StoreCorruptError as err:
        return [str(err)]
    if not names:
        faults.append(f"store {url} holds no corpora")
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
        for u in corpus.done_units.tolist():
            faults.extend(_check_unit(corpus, u, store.meta.num_classes, store.meta.vocab_size))
        if progress is not None:
            progress(f"checked corpus {name!r}: {len(corpus.done_units)} units")
    return faults

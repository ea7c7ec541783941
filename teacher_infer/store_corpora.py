"""Which units a store's corpora have: the source index, the store's own or a fresh one.

A store keeps the index it was created from, so every rank, Ray actor and rerun reads it
instead of re-reading the sources: only when a file's size or time changed (or the source was
moved) is it indexed anew, and then its content must be the store's, unit for unit. A damaged
stored index (a deleted or corrupt `index_units` / `index_hashes` chunk) is replaced by a fresh
one when the source still hashes to the store's source hash.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logit_store import CorpusSpec, DamagedIndexError, stored_corpus_index
from teacher_infer.corpus_index import CorpusIndex, index_source
from teacher_infer.corpus_records import CorpusError, printable_name


def _first_change(old: CorpusIndex, new: CorpusIndex) -> CorpusError:
    n = min(old.n_units, new.n_units)
    differ = np.flatnonzero((old.hashes[:n] != new.hashes[:n]).any(axis=1))
    u = int(differ[0]) if len(differ) else n
    if u >= new.n_units:
        u = new.n_units - 1
    f = new.files[int(new.units[u, 0])]
    return CorpusError(
        f"{f.path}:{int(new.units[u, 3])}: the source changed since the store was written (unit "
        f"{u} differs: {old.n_units} units then, {new.n_units} now); restore it, or write the "
        "changed corpus to a new --out store"
    )


def index_corpora(
    corpora: tuple[tuple[str, str], ...],
    out: str,
    unit_size: int,
    seed: int,
    storage_options: dict[str, Any] | None,
) -> dict[str, CorpusIndex]:
    """The index of every corpus: the store's own when it has the corpus and the files are
    unchanged (sizes and times), else a fresh indexing pass, refused when the store has the
    corpus and its content differs (naming the first changed unit's file and line)."""
    indexes = {}
    for name, source in corpora:
        try:
            stored = stored_corpus_index(out, name, storage_options)
        except DamagedIndexError as err:  # the source itself must be the store's, unit for unit
            indexes[name] = _reindexed(source, unit_size, seed, err)
            continue
        old = None
        if stored is not None and stored[0]:
            attrs, arrays = stored
            old = CorpusIndex.from_attrs(attrs, arrays["units"], arrays["hashes"])
            same = old.source == source and old.seed == seed and old.unit_size == unit_size
            if same and not old.changed_files():
                indexes[name] = old
                continue
        new = index_source(source, unit_size, seed=seed)
        if old is not None and old.unit_size == unit_size and old.source_hash != new.source_hash:
            raise _first_change(old, new)
        indexes[name] = new
    return indexes


def _reindexed(source: str, unit_size: int, seed: int, err: DamagedIndexError) -> CorpusIndex:
    """A fresh index standing in for a damaged stored one: it is the same index when the source
    still hashes to the store's source hash (indexing is deterministic)."""
    new = index_source(source, unit_size, seed=seed)
    if new.source_hash != err.source_hash:
        raise CorpusError(
            f"{err}, and {source} no longer hashes to the source the store was written from "
            "(it changed); restore it, or write the corpus to a new --out store"
        )
    return new


def corpus_spec(name: str, index: CorpusIndex) -> CorpusSpec:
    return CorpusSpec(
        name=name,
        n_units=index.n_units,
        unit_size=index.unit_size,
        source=printable_name(index.source),  # the index keeps a non-UTF-8 name's bytes
        source_hash=index.source_hash,
        index=index.attrs(),
        index_arrays={"units": index.units, "hashes": index.hashes},
        unit_hashes=index.hashes,
    )

"""`kdcache verify`: read every chunk of a store and check it is complete and consistent.

Each fault is one line naming the corpus, array and unit, so a user knows exactly which part to
recompute (delete nothing by hand: a rerun of precompute rewrites units whose flag is unset).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rich.console import Console

from logit_store import target_codec
from logit_store.arrays import PLAN_ARRAYS, missing_unit_objects, unit_arrays
from logit_store.errors import StoreCorruptError
from logit_store.reader import DAMAGE, Corpus, open_store

MAX_LISTED = 10


def _read_slot(corpus: Corpus, array: str, start: int, stop: int) -> np.ndarray:
    return np.asarray(corpus.array(array)[start:stop])


def _check_unit(corpus: Corpus, u: int, n_classes: int, vocab: int) -> list[str]:
    meta, s = corpus.store.meta, corpus.unit_size
    where = f"corpus {corpus.name!r} unit {u}"
    total = int(corpus.info["counts"]["sequences"])
    n_seq = min(s, total - u * s)
    arrays: dict[str, np.ndarray] = {}
    names = unit_arrays(meta)
    sizes = {"records": s, "split": s, "id_table": corpus.table_slot}
    sizes |= {"input_ids": corpus.token_slot, "word_ids": corpus.token_slot}
    slots = {name: (u * s, u * s + n_seq) for name in PLAN_ARRAYS}
    for name in names[len(PLAN_ARRAYS) :]:
        size = sizes.get(name, corpus.position_slot)
        slots[name] = (u * size, (u + 1) * size)
    try:
        absent = missing_unit_objects(corpus.array, names, u, range(u * s, u * s + n_seq))
    except DAMAGE as err:
        return [f"{where}: {err}"]
    faults = [f"{where}: array {name!r} has no stored object (deleted?)" for name in absent]
    for name, (a, b) in slots.items():
        try:
            arrays[name] = _read_slot(corpus, name, a, b)
        except DAMAGE as err:  # a failed checksum, a truncated object or bad metadata
            faults.append(f"{where}: array {name!r} cannot be read ({type(err).__name__}: {err})")
    if faults:
        return faults
    lengths, n_pos = (
        arrays["plan_lengths"].astype(np.int64),
        arrays["plan_positions"].astype(np.int64),
    )
    n_tok, n_lab = int(lengths.sum()), int(n_pos.sum())
    records = arrays["records"]
    if (records[:n_seq] == "").any() or (records[n_seq:] != "").any():
        faults.append(f"{where}: array 'records' does not hold exactly {n_seq} records")
    else:
        for i, rec in enumerate(records[:n_seq]):
            try:
                json.loads(str(rec))
            except json.JSONDecodeError:
                faults.append(f"{where}: record {u * s + i} is not valid JSON")
                break
    ids = arrays["input_ids"][:n_tok]
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
        faults.append(f"{where}: array 'input_ids' has ids outside [0, {vocab})")
    positions = arrays["positions"][:n_lab]
    if len(positions) and ((positions < 0) | (positions >= np.repeat(lengths, n_pos))).any():
        faults.append(f"{where}: array 'positions' points outside its sequence")
    masked = arrays["masked_ids"][:n_lab]
    if len(masked) and (masked.min() < 0 or masked.max() >= vocab):
        faults.append(f"{where}: array 'masked_ids' has ids outside [0, {vocab})")
    tail = arrays.get("tail_logmass")
    gaps = arrays["target_ids"][:n_lab]
    ranks = np.cumsum(gaps, axis=1, dtype=np.int64)
    if ranks.size and ranks.max() >= corpus.table_slot:
        return [*faults, f"{where}: array 'target_ids' points past the unit's id table"]
    targets = target_codec.decode(
        meta,
        target_codec.ids_from_gaps(gaps, arrays["id_table"]),
        arrays["target_values"][:n_lab],
        None if tail is None else tail[:n_lab],
    )
    if len(targets.ids) and (targets.ids.max() >= n_classes):
        faults.append(f"{where}: array 'target_ids' decodes to ids outside [0, {n_classes})")
    if meta.encoding == "topk":
        if (targets.logprobs > 0).any() or np.isnan(targets.logprobs).any():
            faults.append(f"{where}: array 'target_values' has log-probs > 0 or NaN")
        if (targets.tail_logmass > 0).any() or np.isnan(targets.tail_logmass).any():
            faults.append(f"{where}: array 'tail_logmass' has values > 0 or NaN")
    elif len(targets.counts) and (targets.counts.sum(axis=1) != meta.n_samples).any():
        faults.append(
            f"{where}: array 'target_values' has counts that do not sum to N = {meta.n_samples}"
        )
    return faults


def verify_store(
    url: str, storage_options: dict[str, Any] | None = None, console: Console | None = None
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
        if console is not None:
            console.print(f"checked corpus {name!r}: {len(corpus.done_units)} units")
    return faults

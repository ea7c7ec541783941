"""Exact duplicates: task texts that occur in the *whole* generic corpus (contamination).

`duplicates.near_duplicates` compares the task sample with the generic sample in embedding
space; this check compares every task text with every generic text, in the one streaming pass
over the generic corpus that also draws its sample:

* key: `lexical.normalise_text` (NFKC, case-folded, punctuation and spacing dropped) hashed to
  an 8-byte blake2b digest; a text whose key is empty (punctuation only) is never a duplicate;
* the task side is held as one digest, record number and label code per text (`TaskKeys`, ~40
  bytes a text); each generic unit is looked up in the sorted unique task digests
  (`GenericMatches`), so memory does not grow with the generic corpus;
* two different texts share a 64-bit digest with probability 2^-64: about
  n_generic · n_task / 2^64 false matches in all (5e-6 at 10^9 × 10^5).

Reported (`exact_duplicates`): per split (test first: contamination there inflates evaluation)
and per group, how many task texts occur in the generic corpus, with examples read back by
record number (test first, groups taking turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

from similarity.config import GROUP_FIELDS, GroupField
from similarity.lexical import normalise_text
from teacher_infer.corpus_index import CorpusIndex, UnitTexts
from teacher_infer.corpus_records import CorpusText
from teacher_infer.corpus_sample import read_records

MAX_ITEMS = 20
"""Exact duplicates listed in the report (all are counted)."""

NORMALISATION = "lexical.normalise_text (NFKC, casefold, punctuation/spacing dropped), blake2b-64"
_EMPTY = np.frombuffer(blake2b(b"", digest_size=8).digest(), dtype="<u8")[0]


def text_digests(texts: Sequence[CorpusText]) -> np.ndarray:
    """(n,) uint64 blake2b-64 digests of the normalised texts of `CorpusText`s."""
    joined = b"".join(
        blake2b(normalise_text(t.text).encode(), digest_size=8).digest() for t in texts
    )
    return np.frombuffer(joined, dtype="<u8").astype(np.uint64)


class TaskKeys:
    """Digest, record number and label codes (-1: none) of every task text, unit by unit."""

    def __init__(self) -> None:
        self._digests: list[np.ndarray] = []
        self._records: list[np.ndarray] = []
        self._codes: dict[GroupField, list[np.ndarray]] = {name: [] for name in GROUP_FIELDS}
        self.names: dict[GroupField, dict[str, int]] = {name: {} for name in GROUP_FIELDS}

    def add(self, unit: UnitTexts) -> None:
        self._digests.append(text_digests(unit.texts))
        self._records.append(unit.record_ids)
        for name in GROUP_FIELDS:
            vocab = self.names[name]
            values = (getattr(t, name) for t in unit.texts)
            self._codes[name].append(
                np.fromiter(
                    (-1 if v is None else vocab.setdefault(str(v), len(vocab)) for v in values),
                    np.int32,
                    len(unit.texts),
                )
            )

    @property
    def digests(self) -> np.ndarray:
        return np.concatenate(self._digests) if self._digests else np.zeros(0, np.uint64)

    @property
    def records(self) -> np.ndarray:
        return np.concatenate(self._records) if self._records else np.zeros(0, np.int64)

    def labels(self, name: GroupField) -> tuple[np.ndarray, list[str]]:
        """((n,) codes, names by code) of one label field."""
        codes = self._codes[name]
        return np.concatenate(codes) if codes else np.zeros(0, np.int32), list(self.names[name])


class GenericMatches:
    """Generic units looked up in the task digests: the first generic record of every match."""

    def __init__(self, task: TaskKeys) -> None:
        digests = task.digests
        self._lookup = np.unique(digests[digests != _EMPTY])
        self.first: dict[int, int] = {}  # task digest -> first generic record with that key
        self.n_scanned = 0
        self.n_matching = 0  # generic texts equal to some task text

    def add(self, unit: UnitTexts) -> None:
        self.n_scanned += len(unit.texts)
        if not len(self._lookup) or not unit.texts:
            return
        digests = text_digests(unit.texts)
        at = np.minimum(np.searchsorted(self._lookup, digests), len(self._lookup) - 1)
        hit = np.flatnonzero(self._lookup[at] == digests)
        self.n_matching += len(hit)
        for digest, record in zip(
            digests[hit].tolist(), unit.record_ids[hit].tolist(), strict=True
        ):
            self.first.setdefault(digest, record)


def _split_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: (name != "test", name == "train", name))


def _counts(found: np.ndarray, splits: np.ndarray, split_names: list[str]) -> dict[str, Any]:
    by_split = {}
    for name in _split_order(split_names):
        members = splits == split_names.index(name)
        if members.any():
            n, hits = int(members.sum()), int(found[members].sum())
            by_split[name] = {"texts": n, "found": hits, "share": round(hits / n, 4)}
    return {"texts": len(found), "found": int(found.sum()), "by_split": by_split}


def exact_duplicates(
    task: TaskKeys,
    matches: GenericMatches,
    by: GroupField | None,
    task_index: CorpusIndex,
    generic_index: CorpusIndex,
) -> dict[str, Any]:
    """The report's ``exact_duplicates`` section (see the module docstring)."""
    digests, records = task.digests, task.records
    matched = np.fromiter(matches.first, np.uint64, len(matches.first))
    found = np.isin(digests, matched)
    splits, split_names = task.labels("split")
    groups, group_names = task.labels(by) if by is not None else (np.zeros(0, np.int32), [])
    sizes = np.bincount(groups[groups >= 0], minlength=len(group_names))
    group_rows = []
    for code in sorted(range(len(group_names)), key=lambda c: (-sizes[c], c)):
        members = groups == code
        counts = _counts(found[members], splits[members], split_names)
        group_rows.append({"name": group_names[code], **counts})

    rows = np.flatnonzero(found)
    group_of = groups[rows] if by is not None else np.zeros(len(rows), np.int32)
    later = splits[rows] != (split_names.index("test") if "test" in split_names else -1)
    turn = np.zeros(len(rows), np.int64)  # rank of a row among its (test or not, group) peers
    for not_test, group in set(zip(later.tolist(), group_of.tolist(), strict=True)):
        members = np.flatnonzero((later == not_test) & (group_of == group))
        turn[members] = np.arange(len(members))
    listed = rows[np.lexsort((records[rows], group_of, turn, later))[:MAX_ITEMS]]
    task_texts = read_records(task_index, records[listed].tolist())
    partner = {int(r): matches.first[int(digests[r])] for r in listed}
    generic_texts = read_records(generic_index, partner.values())
    items = []
    for r in listed.tolist():
        text, generic = task_texts[int(records[r])], generic_texts[partner[r]]
        items.append(
            {
                "task_id": text.id,
                "task_text": text.text,
                "split": text.split,
                "group": None if by is None else getattr(text, by),
                "generic_id": generic.id,
                "generic_text": generic.text,
            }
        )
    return {
        "normalisation": NORMALISATION,
        "generic_scanned": matches.n_scanned,
        "generic_matching": matches.n_matching,
        **_counts(found, splits, split_names),
        "groups": group_rows,
        "items": items,
    }

"""Seeded samples of a streamed corpus, and reading texts back by record number.

    sample = TextSample(size=10_000, seed=0)
    for unit in stream_corpus(source).units():
        sample.offer(unit.texts, unit.record_ids)
    texts, records = sample.texts()            # in corpus order

`TextSample` is bottom-k sampling: every text offered draws a seeded uniform key and the
``size`` texts with the smallest keys are kept, so the result is a uniform random sample without
replacement of everything offered (a reservoir), memory O(size + one unit), and the texts with
the ``m < size`` smallest keys are themselves a uniform sample of size m (`texts(limit=m)`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from teacher_infer.corpus_index import CorpusIndex, read_unit
from teacher_infer.corpus_records import CorpusText


class TextSample:
    """A seeded uniform sample of at most ``size`` of the texts offered (see module docstring)."""

    def __init__(self, size: int, seed: int) -> None:
        assert size >= 1, size
        self.size = size
        self.n_seen = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0, dtype=np.float64)
        self._records = np.empty(0, dtype=np.int64)
        self._texts: list[CorpusText] = []

    def offer(self, texts: Sequence[CorpusText], records: np.ndarray) -> None:
        """Offer texts with their (distinct) record numbers in the corpus."""
        assert len(texts) == len(records), (len(texts), len(records))
        keys = self._rng.random(len(texts))  # drawn for every text: the sample is seed-stable
        self.n_seen += len(texts)
        if len(self._keys) == self.size:
            new = np.flatnonzero(keys < self._keys.max())
        else:
            new = np.arange(len(texts))
        if not len(new):
            return
        all_keys = np.concatenate([self._keys, keys[new]])
        keep = np.argsort(all_keys, kind="stable")[: self.size]
        candidates = self._texts + [texts[i] for i in new.tolist()]
        records = np.concatenate([self._records, np.asarray(records, dtype=np.int64)[new]])
        self._keys, self._records = all_keys[keep], records[keep]
        self._texts = [candidates[i] for i in keep]

    def texts(self, limit: int | None = None) -> tuple[list[CorpusText], np.ndarray]:
        """(texts, (n,) record numbers) of the ``limit`` (default all) smallest keys, in corpus
        order."""
        chosen = np.argsort(self._keys, kind="stable")[:limit]
        order = chosen[np.argsort(self._records[chosen], kind="stable")]
        return [self._texts[i] for i in order], self._records[order]


def read_records(index: CorpusIndex, records: Iterable[int]) -> dict[int, CorpusText]:
    """The texts at the given record numbers (reading only the units that hold them); a record
    that is a skipped line is absent from the result."""
    wanted = np.unique(np.fromiter(records, dtype=np.int64))
    units = np.searchsorted(index.record_start, wanted, side="right") - 1
    found: dict[int, CorpusText] = {}
    for u in np.unique(units).tolist():
        unit = read_unit(index, u)
        hit = np.isin(unit.record_ids, wanted[units == u])
        found.update(
            (int(r), unit.texts[i])
            for i, r in zip(np.flatnonzero(hit), unit.record_ids[hit], strict=True)
        )
    return found

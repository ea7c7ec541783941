"""Read a corpus SOURCE into `CorpusText`s plus a `ReadReport` (DESIGN §4, input).

SOURCE is one of:

* a file: ``.txt`` (one text per line), ``.jsonl`` (field ``text``; optional ``id, split,
  domain, intent, locale, tags``), ``.csv`` / ``.tsv`` (header with a ``text`` column, same
  optional columns), ``.parquet`` (same columns). ``tags`` are word-level BIO tags for
  ``text.split()``, a list or a space-separated string. A file in the MASSIVE format (``utt``,
  ``annot_utt``, ``scenario``, ``intent``, ``partition``, ``locale``) is recognised by its
  fields and read natively (see `teacher_infer.massive`).
* a folder: every file with one of those suffixes below it, in sorted order of relative path.
* ``hf:NAME[:CONFIG][:SPLIT]``: ``datasets.load_dataset(NAME, CONFIG, split=SPLIT)`` — a hub
  name (needs the hub or its cache) or a local dataset folder. For the packaged builders
  ``json, csv, parquet, text, arrow`` the second part is the data file path:
  ``hf:json:PATH[:SPLIT]``, i.e. ``load_dataset("json", data_files=PATH)``, split "train"
  unless given. Without SPLIT every split of the dataset is read, and a row's ``split`` is its
  dataset split (unless it has a ``split`` column). ClassLabel columns become their names.
* ``demo:wikipedia``, ``demo:atis``, ``demo:bbc``: the packaged demo corpora
  (`teacher_infer.demo_corpora`), checksum-verified.

Bad input policy — never a silent drop, never a raw traceback:

* skipped and counted in ``ReadReport.skipped`` (first few in ``examples`` as
  "FILE:LINE: reason: detail"): "empty_line" (empty or whitespace-only line), "invalid_utf8"
  (the line), "malformed_json", "not_an_object", "malformed_row" (CSV field count), and per row
  "missing_text" / "empty_text" (row without a text value), "bad_field" (wrong type),
  "bad_split", "tag_count_mismatch" (BIO tags ≠ words), "unknown_tag" (not O / B-x / I-x),
  "bad_annotation" / "annotation_mismatch" (MASSIVE markup); in a folder, "unsupported_file"
  (a file with another suffix), "hidden_file" (a file or folder whose name starts with '.',
  e.g. .ipynb_checkpoints copies) and "empty_file".
* stops with `CorpusError` ("FILE:LINE: what is wrong"): a path that does not exist, a FIFO,
  device or socket, a UTF-16/32 file (byte-order mark), a file with
  an unsupported suffix, a structured file whose header / first row has no ``text`` field (nor
  the MASSIVE fields), a CSV quote that never closes, an unreadable Parquet file, an ``hf:``
  dataset that cannot be loaded or has no text column, a missing or altered demo package, and a
  source that yields no text.

``seed`` fixes the hashed train/test splits of the demo corpora; other sources keep the
split they state (default "train").

Every reader is built on `teacher_infer.corpus_index` (one indexing pass, then unit by unit), so
`stream_corpus` holds one unit at a time; `read_corpus` returns every text (small corpora only).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from teacher_infer.corpus_index import CorpusIndex, UnitTexts, index_source, read_unit
from teacher_infer.corpus_records import MAX_EXAMPLES, CorpusError, CorpusText, ReadReport

__all__ = [
    "CorpusError",
    "CorpusStream",
    "CorpusText",
    "ReadReport",
    "no_text_read",
    "read_corpus",
    "stream_corpus",
]

STREAM_UNIT = 4096  # records per unit when a corpus is only streamed (not stored)


@dataclass
class CorpusStream:
    """The texts of a source, one unit in memory at a time; `report()` once iterated."""

    index: CorpusIndex
    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    n_read: int = 0

    def __post_init__(self) -> None:
        self.counts.update(self.index.skipped)
        self.examples.extend(self.index.examples)

    def units(self) -> Iterator[UnitTexts]:
        """Unit by unit, in order: texts with their record numbers (skips counted as read)."""
        for u in range(self.index.n_units):
            unit = read_unit(self.index, u)
            self.counts.update(unit.skipped)
            self.examples.extend(unit.examples[: max(0, MAX_EXAMPLES - len(self.examples))])
            self.n_read += len(unit.texts)
            yield unit

    def __iter__(self) -> Iterator[CorpusText]:
        for unit in self.units():
            yield from unit.texts

    def report(self) -> ReadReport:
        return ReadReport(
            self.index.source,
            self.index.source_hash,
            self.n_read,
            dict(sorted(self.counts.items())),
            list(self.examples),
        )


def stream_corpus(source: str, *, seed: int = 0) -> CorpusStream:
    """Index ``source`` (one pass) and stream its texts unit by unit."""
    return CorpusStream(index_source(source, STREAM_UNIT, seed=seed))


def read_corpus(source: str, *, seed: int = 0) -> tuple[list[CorpusText], ReadReport]:
    """Every text of ``source`` (see the module docstring for the forms and the policy)."""
    stream = stream_corpus(source, seed=seed)
    texts = list(stream)
    report = stream.report()
    if not texts:
        raise no_text_read(source, report.skipped, report.examples)
    return texts, report


def no_text_read(source: str, skipped: dict[str, int], examples: list[str]) -> CorpusError:
    """The error for a source that yielded no text, naming its skips and a first example."""
    reasons = ", ".join(f"{reason}: {count}" for reason, count in skipped.items())
    return CorpusError(
        f"{source}: no text could be read"
        + (f" (skipped {reasons}; e.g. {examples[0]})" if reasons else "")
    )


def write_sample(source: str, per_split: dict[str, int], path: Path, seed: int = 0) -> str:
    """A seeded sample of `source` (at most per_split[split] texts per split) as JSONL at path.

    Kept when it already exists, so a rerun reuses the same sample.
    """
    if not path.is_file():
        texts, _ = read_corpus(source)
        rng, rows = random.Random(seed), []
        for split, limit in per_split.items():
            pool = [t for t in texts if t.split == split]
            rows += rng.sample(pool, min(limit, len(pool)))
        fields = ("id", "text", "split", "domain", "intent", "tags")
        lines = [
            json.dumps({f: getattr(t, f) for f in fields if getattr(t, f) is not None})
            for t in rows
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return str(path)

"""Cut a corpus SOURCE into units without holding it: one cheap indexing pass, then any unit alone.

    index = index_source("corpus/", unit_size=1024)     # one pass, by one process
    texts = read_unit(index, u)                          # any process, only unit u's bytes

A unit is `unit_size` consecutive *records* of one file (lines of ``.txt`` / ``.jsonl``, rows of
``.csv`` / ``.tsv`` / ``.parquet``), or of one split of a `datasets` dataset or a demo corpus; a
file's last unit may be shorter. Units never cross files, so a unit's bytes are one range
``[start, stop)`` of one file and its records are numbered ``record_start[u] + i``.

`CorpusIndex.units` is an ``(n_units, 5)`` int64 array ``[file, start, stop, first_line,
n_records]`` (byte offsets for line files and CSV; row offsets for Parquet, `datasets` and demo
sources) and `CorpusIndex.hashes` an ``(n_units, 32)`` uint8 array: the sha256 of each unit's
bytes (line files, CSV) or of its rows' canonical JSON (the others). `read_unit` checks the hash,
so a source that changed after indexing is refused naming the unit and its first line, and no
process re-reads a whole file to know that its own units are unchanged.

Skips follow the reader policy of `teacher_infer.corpora` (counted per unit, first few kept as
examples); the indexing pass itself counts the hidden, unsupported and empty files of a folder.
File formats are checked in `corpus_checks.py`, cut in `corpus_files.py` and read in
`corpus_lines.py`; demo and `hf:` rows in `corpus_datasets.py`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teacher_infer.corpus_datasets import demo_texts, hf_splits, row_source, rows_slice
from teacher_infer.corpus_files import (
    SourceFile,
    folder_corpus_files,
    parquet_row_blocks,
    path_index,
    row_units,
    rows_digest,
)
from teacher_infer.corpus_lines import read_csv_unit, read_line_unit
from teacher_infer.corpus_records import (
    CorpusError,
    CorpusText,
    RowProblem,
    SkipLog,
    named,
    printable_name,
    real_name,
    row_to_text,
)
from teacher_infer.massive import massive_row

UNIT_COLUMNS = ("file", "start", "stop", "first_line", "n_records")


@dataclass(frozen=True)
class CorpusIndex:
    """Where every unit of a source lies (see the module docstring)."""

    source: str
    unit_size: int
    files: tuple[SourceFile, ...]
    units: np.ndarray  # (n_units, 5) int64, UNIT_COLUMNS
    hashes: np.ndarray  # (n_units, 32) uint8
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def record_start(self) -> np.ndarray:
        """(n_units,) number of the first record of each unit in the whole corpus."""
        n = self.units[:, 4]
        return np.cumsum(n) - n

    @property
    def source_hash(self) -> str:
        """sha256 over the unit hashes: the identity of the whole source."""
        return hashlib.sha256(np.ascontiguousarray(self.hashes).tobytes()).hexdigest()

    def attrs(self) -> dict[str, Any]:
        """The index as store attributes: valid UTF-8 (`printable_name`), with the bytes of a
        source name that is not UTF-8 as hex under ``source_bytes`` so it opens again."""
        return {
            **named("source", self.source),
            "unit_size": self.unit_size,
            "seed": self.seed,
            "files": [f.to_dict() for f in self.files],
            "skipped": dict(self.skipped),
            "examples": list(self.examples),
        }

    @classmethod
    def from_attrs(
        cls, attrs: Mapping[str, Any], units: np.ndarray, hashes: np.ndarray
    ) -> CorpusIndex:
        return cls(
            source=real_name(attrs, "source"),
            unit_size=int(attrs["unit_size"]),
            files=tuple(SourceFile.from_dict(f) for f in attrs["files"]),
            units=np.asarray(units, dtype=np.int64).reshape(-1, len(UNIT_COLUMNS)),
            hashes=np.asarray(hashes, dtype=np.uint8).reshape(-1, 32),
            skipped=dict(attrs.get("skipped", {})),
            examples=list(attrs.get("examples", [])),
            seed=int(attrs.get("seed", 0)),
        )

    def changed_files(self) -> list[str]:
        """Files of a path source whose size or modification time differ from the index, and
        for a folder source the files added to or removed from it since."""
        changed = []
        if not self.source.startswith(("demo:", "hf:")) and Path(self.source).is_dir():
            now = set(folder_corpus_files(Path(self.source)))
            then = {f.path for f in self.files}
            changed.extend(sorted(now ^ then))
        for f in self.files:
            if f.kind in ("hf", "demo"):
                continue
            try:
                st = os.stat(f.path)
            except OSError:
                changed.append(f.path)
                continue
            if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
                changed.append(f.path)
        return changed


@dataclass(frozen=True)
class UnitTexts:
    """The texts of one unit, each with its record number in the corpus, and the unit's skips."""

    texts: list[CorpusText]
    record_ids: np.ndarray  # (len(texts),) int64
    skipped: dict[str, int]
    examples: list[str]


def index_source(source: str, unit_size: int, *, seed: int = 0) -> CorpusIndex:
    """Index `source` (a path, ``hf:...`` or ``demo:NAME``) into units of `unit_size` records."""
    if unit_size < 1:
        raise CorpusError(f"unit size must be >= 1, got {unit_size}")
    log = SkipLog()
    if source.startswith(("demo:", "hf:")):
        units, hashes, files = [], [], []
        for i, (name, rows) in enumerate(row_source(source, seed, log)):
            units.append(row_units(i, len(rows), unit_size))
            hashes.append(
                np.stack(
                    [rows_digest(rows_slice(rows, a, b)) for _, a, b, _, _ in units[-1]]
                    or [np.zeros(32, np.uint8)]
                )[: len(units[-1])]
            )
            kind = "demo" if source.startswith("demo:") else "hf"
            files.append(SourceFile(name, kind, rows=getattr(rows, "rows_kind", "text")))
    else:
        units, hashes, files = path_index(Path(source), unit_size, log)
    report = log.report(source, "", 0)
    index = CorpusIndex(
        source=source,
        unit_size=unit_size,
        files=tuple(files),
        units=np.concatenate(units) if units else np.zeros((0, 5), dtype=np.int64),
        hashes=np.concatenate(hashes) if hashes else np.zeros((0, 32), dtype=np.uint8),
        skipped=report.skipped,
        examples=report.examples,
        seed=seed,
    )
    if not index.units[:, 4].sum():
        reasons = ", ".join(f"{k}: {v}" for k, v in index.skipped.items())
        raise CorpusError(
            f"{source}: no text could be read" + (f" (skipped {reasons})" if reasons else "")
        )
    return index


def _changed(index: CorpusIndex, u: int, first_line: int) -> CorpusError:
    f = index.files[int(index.units[u, 0])]
    return CorpusError(
        f"{f.path}:{first_line}: the source changed since it was indexed (unit {u}, records from "
        f"line {first_line}); restore it, or write the changed corpus to a new --out store"
    )


def read_unit(index: CorpusIndex, u: int) -> UnitTexts:
    """The texts of unit u (only its own bytes or rows are read); skips counted per unit."""
    file_i, start, stop, first_line, _ = (int(x) for x in index.units[u])
    f = index.files[file_i]
    name = printable_name(f.path)  # in record ids and examples; the file opens by f.path
    log = SkipLog()
    texts: list[CorpusText] = []
    records: list[int] = []
    base = int(index.record_start[u])

    def take(k: int, convert: Any, row: Mapping[str, Any], line: int) -> None:
        try:
            texts.append(convert(row, name, line, "train"))
            records.append(base + k)
        except RowProblem as problem:
            log.skip(f.path, line, problem.reason, problem.detail)

    if f.kind == "demo":
        texts_all = demo_texts(index.source.removeprefix("demo:"), index.seed)[0]
        if not np.array_equal(rows_digest(rows_slice(texts_all, start, stop)), index.hashes[u]):
            raise _changed(index, u, first_line)
        texts = list(texts_all[start:stop])
        return _unit_texts(texts, list(range(base, base + len(texts))), log)
    if f.kind == "hf":
        rows = dict(hf_splits(index.source))[f.path].slice(start, stop)
        if not np.array_equal(rows_digest(rows), index.hashes[u]):
            raise _changed(index, u, first_line)
        split = f.path.rpartition("[")[2].rstrip("]")
        convert = massive_row if f.rows == "massive" else row_to_text
        for k, row in enumerate(rows):
            take(k, lambda r, file, line, _s: convert(r, file, line, split), row, start + k + 1)
        return _unit_texts(texts, records, log)
    if f.kind == "parquet":
        rows = next(parquet_row_blocks(Path(f.path), stop - start, start, stop), [])
        if not np.array_equal(rows_digest(rows), index.hashes[u]):
            raise _changed(index, u, first_line)
        convert = massive_row if f.rows == "massive" else row_to_text
        for k, row in enumerate(rows):
            take(k, convert, row, start + k + 1)
        return _unit_texts(texts, records, log)
    try:
        with open(f.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(stop - start)
    except OSError as error:
        raise CorpusError(f"{f.path}: cannot be read ({error.strerror})") from error
    if hashlib.sha256(data).digest() != index.hashes[u].tobytes():
        raise _changed(index, u, first_line)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if f.kind in ("csv", "tsv"):
        read_csv_unit(f, lines, first_line, log, take)
    else:
        read_line_unit(f, lines, first_line, log, take)
    return _unit_texts(texts, records, log)


def _unit_texts(texts: list[CorpusText], records: list[int], log: SkipLog) -> UnitTexts:
    report = log.report("", "", len(texts))
    return UnitTexts(texts, np.asarray(records, dtype=np.int64), report.skipped, report.examples)

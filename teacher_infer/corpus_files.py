"""Corpus files cut into units: the indexing pass over a path (a unit's lines are read by
`corpus_lines.py`; what a file must be is checked by `corpus_checks.py`).

* ``.txt`` / ``.jsonl``: one vectorised newline scan per file (`SCAN_BLOCK` bytes at a time)
  keeps one byte offset and one sha256 per unit, never one per line.
* ``.csv`` / ``.tsv``: the csv module finds where (possibly multi-line, quoted) rows end.
* ``.parquet``: row ranges; a unit's hash is over its rows' canonical JSON.

Refused here (`CorpusError`): an unreadable Parquet file, a CSV quote that never closes, a file
with no text field.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teacher_infer.corpus_checks import check_encoding, check_regular
from teacher_infer.corpus_formats import FILE_SUFFIXES, csv_rows, delimiter_hint, row_converter
from teacher_infer.corpus_records import CorpusError, SkipLog, named, real_name
from teacher_infer.massive import massive_row

SCAN_BLOCK = 1 << 26  # bytes read at once by the newline scan (64 MiB)


@dataclass(frozen=True)
class SourceFile:
    """One file (or dataset split) of a source. kind: txt, jsonl, csv, tsv, parquet, hf, demo.
    rows: "text" or "massive" (which converter its rows take); header: CSV column names."""

    path: str
    kind: str
    size: int = 0
    mtime_ns: int = 0
    rows: str = "text"
    header: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **named("path", self.path),
            "kind": self.kind,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "rows": self.rows,
            "header": list(self.header),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceFile:
        fields = {k: v for k, v in data.items() if k != "path_bytes"}
        return cls(
            **{**fields, "path": real_name(data, "path"), "header": tuple(fields.get("header", ()))}
        )


def _scan_lines(path: Path, unit_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One pass over a line file: (unit cut offsets incl. the file size, unit sha256s, lines).

    A vectorised newline scan per block; memory holds one block and one offset per unit, never
    one per line."""
    cuts, hashes = [0], []
    hasher = hashlib.sha256()
    offset = lines = 0
    last = b""
    with path.open("rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            starts = np.arange(lines + 1, lines + len(nl) + 1)  # line number after each newline
            prev = 0
            for cut in (nl[starts % unit_size == 0] + 1).tolist():
                hasher.update(block[prev:cut])
                hashes.append(hasher.digest())
                hasher, prev = hashlib.sha256(), cut
                cuts.append(offset + cut)
            hasher.update(block[prev:])
            offset += len(block)
            lines += len(nl)
            last = block[-1:]
    if last not in (b"\n", b""):
        lines += 1  # a last line without a newline
    if cuts[-1] < offset:
        hashes.append(hasher.digest())
        cuts.append(offset)
    digests = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 32)
    return np.asarray(cuts, dtype=np.int64), digests, lines


def _hash_ranges(path: Path, cuts: np.ndarray) -> np.ndarray:
    """sha256 of bytes [cuts[i], cuts[i + 1]) of a file, for every i."""
    out = np.zeros((max(len(cuts) - 1, 0), 32), dtype=np.uint8)
    with path.open("rb") as handle:
        for i in range(len(cuts) - 1):
            handle.seek(int(cuts[i]))
            digest = hashlib.sha256(handle.read(int(cuts[i + 1] - cuts[i]))).digest()
            out[i] = np.frombuffer(digest, dtype=np.uint8)
    return out


def _line_units(
    path: Path, file_index: int, unit_size: int, kind: str
) -> tuple[np.ndarray, np.ndarray, SourceFile]:
    st = path.stat()
    cuts, hashes, n_lines = _scan_lines(path, unit_size)
    first = np.arange(0, n_lines, unit_size)
    units = np.stack(
        [
            np.full(len(first), file_index),
            cuts[:-1],
            cuts[1:],
            first + 1,
            np.minimum(unit_size, n_lines - first),
        ],
        axis=1,
    ).astype(np.int64)
    assert len(units) == len(hashes), (path, len(units), len(hashes))
    rows = _jsonl_row_kind(path) if kind == "jsonl" else "text"
    return (
        units.reshape(-1, 5),
        hashes,
        SourceFile(str(path), kind, st.st_size, st.st_mtime_ns, rows),
    )


def _jsonl_row_kind(path: Path) -> str:
    """ "text" or "massive", decided by the first JSON object of the file (as the reader does)."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                row = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue
            if isinstance(row, dict):
                converter = row_converter(row.keys(), f"{path}:{lineno}")
                return "massive" if converter is massive_row else "text"
    return "text"


def _csv_units(
    path: Path, file_index: int, unit_size: int
) -> tuple[np.ndarray, np.ndarray, SourceFile]:
    """Rows of a CSV/TSV file cut into units: the csv module finds where quoted rows end."""
    st = path.stat()
    file = str(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    consumed: list[int] = []  # line numbers fed to the csv reader since the last row
    offsets = [0]  # byte offset after each line fed since line `base` (offsets[0]: after it)
    base = 0

    def lines() -> Iterator[str]:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                offsets.append(offsets[-1] + len(raw))
                consumed.append(lineno)
                line = raw.decode("utf-8", errors="replace")
                yield (line.removeprefix("\ufeff") if lineno == 1 else line).rstrip("\r\n") + "\n"

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    picks: list[tuple[int, int]] = []  # (byte offset, first line) of every unit's first row
    n_rows = 0
    for fields in csv_rows(reader, file, consumed, SkipLog()):
        first_line = consumed[0]
        consumed.clear()
        start = offsets[first_line - 1 - base]
        base += len(offsets) - 1  # the last line fed: the next row starts after it
        del offsets[:-1]  # so memory holds the current row's lines, never the file's
        if header is None:
            if not any(value.strip() for value in fields):
                continue
            header = [name.strip() for name in fields]
            hint = "" if len(header) > 1 else delimiter_hint(header[0], path.suffix.lower())
            converter = row_converter(header, f"{file}:{first_line}{hint}")
            continue
        if n_rows % unit_size == 0:
            picks.append((start, first_line))
        n_rows += 1
    if header is None:
        raise CorpusError(f"{file}: no header row with a 'text' column (the file is empty)")
    end = offsets[-1]
    cuts = np.array([s for s, _ in picks] + [end], dtype=np.int64)
    units = np.array(
        [
            [file_index, cuts[i], cuts[i + 1], picks[i][1], min(unit_size, n_rows - i * unit_size)]
            for i in range(len(picks))
        ],
        dtype=np.int64,
    ).reshape(-1, 5)
    rows = "massive" if converter is massive_row else "text"
    kind = "tsv" if delimiter == "\t" else "csv"
    return (
        units,
        _hash_ranges(path, cuts),
        SourceFile(file, kind, st.st_size, st.st_mtime_ns, rows, tuple(header)),
    )


def row_units(file_index: int, n_rows: int, unit_size: int) -> np.ndarray:
    first = np.arange(0, n_rows, unit_size)
    return (
        np.stack(
            [
                np.full(len(first), file_index),
                first,
                np.minimum(first + unit_size, n_rows),
                first + 1,
                np.minimum(unit_size, n_rows - first),
            ],
            axis=1,
        )
        .astype(np.int64)
        .reshape(-1, 5)
    )


def _parquet_units(
    path: Path, file_index: int, unit_size: int
) -> tuple[np.ndarray, np.ndarray, SourceFile]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    st = path.stat()
    try:
        parquet = pq.ParquetFile(path)
        columns = parquet.schema_arrow.names
        n_rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        raise CorpusError(f"{path}: not a readable Parquet file ({error})") from error
    converter = row_converter(columns, str(path))
    hashes = np.zeros((-(-n_rows // unit_size), 32), dtype=np.uint8)
    for i, rows in enumerate(parquet_row_blocks(path, unit_size)):
        hashes[i] = rows_digest(rows)
    rows_kind = "massive" if converter is massive_row else "text"
    return (
        row_units(file_index, n_rows, unit_size),
        hashes,
        SourceFile(str(path), "parquet", st.st_size, st.st_mtime_ns, rows_kind, tuple(columns)),
    )


def parquet_row_blocks(
    path: Path, unit_size: int, start: int = 0, stop: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Rows [start, stop) of a Parquet file, in lists of unit_size, reading batch by batch."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    stop = meta.num_rows if stop is None else stop
    sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], np.int64)
    ends = np.cumsum(sizes)
    # Only the row groups that hold rows [start, stop): a unit late in a big file is read
    # without decoding every batch before it (which made reading all units quadratic).
    groups = np.flatnonzero((ends > start) & (ends - sizes < stop)).tolist()
    if not groups:
        return
    pending: list[dict[str, Any]] = []
    seen = int(ends[groups[0]] - sizes[groups[0]])
    for batch in parquet.iter_batches(batch_size=max(unit_size, 1024), row_groups=groups):
        lo, hi = seen, seen + batch.num_rows
        seen = hi
        if hi <= start:
            continue
        if lo >= stop:
            break
        pending.extend(batch.slice(max(start - lo, 0), min(stop, hi) - max(start, lo)).to_pylist())
        while len(pending) >= unit_size:
            yield pending[:unit_size]
            pending = pending[unit_size:]
    if pending:
        yield pending


def rows_digest(rows: list[dict[str, Any]]) -> np.ndarray:
    blob = json.dumps(rows, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha256(blob).digest(), dtype=np.uint8)


def _not_read(folder: Path, file: Path) -> str | None:
    """Why a file of a corpus folder is not read (a skip reason), or None."""
    if any(part.startswith(".") for part in file.relative_to(folder).parts):
        return "hidden_file"
    if file.suffix.lower() not in FILE_SUFFIXES:
        return "unsupported_file"
    return None


def folder_corpus_files(folder: Path) -> list[str]:
    """The non-empty files of a corpus folder that indexing reads (the paths it records)."""
    out = []
    for file in folder.rglob("*"):
        try:
            if _not_read(folder, file) is None and file.is_file() and file.stat().st_size:
                out.append(str(file))
        except OSError:
            out.append(str(file))  # unreadable now: indexing it again says why
    return sorted(out)


def path_index(path: Path, unit_size: int, log: SkipLog) -> tuple[list, list, list[SourceFile]]:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    check_regular(path)
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise CorpusError(
                f"{path}: unsupported file type {path.suffix!r}; "
                f"use one of {', '.join(FILE_SUFFIXES)}"
            )
        files = [path]
    else:
        listed = sorted(
            (p for p in path.rglob("*") if not p.is_dir()),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        files = []
        for file in listed:
            reason = _not_read(path, file)
            if reason == "hidden_file":
                log.skip(str(file), 1, "hidden_file", "names starting with '.' are not read")
            elif reason == "unsupported_file":
                log.skip(str(file), 1, "unsupported_file", f"suffix {file.suffix!r}")
            else:
                check_regular(file)
                files.append(file)
        if not files:
            raise CorpusError(f"{path}: no {', '.join(FILE_SUFFIXES)} files in this folder")
    units: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    described: list[SourceFile] = []
    for file in files:
        suffix = file.suffix.lower()
        if file.stat().st_size == 0:
            log.skip(str(file), 1, "empty_file")
            continue
        with file.open("rb") as handle:
            check_encoding(file, handle.read(4096))
        i = len(described)
        if suffix in (".txt", ".jsonl"):
            u, h, f = _line_units(file, i, unit_size, suffix[1:])
        elif suffix in (".csv", ".tsv"):
            u, h, f = _csv_units(file, i, unit_size)
        else:
            u, h, f = _parquet_units(file, i, unit_size)
        units.append(u)
        hashes.append(h)
        described.append(f)
    return units, hashes, described

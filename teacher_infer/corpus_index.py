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
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from teacher_infer.corpus_formats import FILE_SUFFIXES, csv_rows, delimiter_hint, row_converter
from teacher_infer.corpus_records import CorpusError, CorpusText, RowProblem, SkipLog, row_to_text
from teacher_infer.demo_corpora import read_demo
from teacher_infer.massive import massive_row

HF_FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
SCAN_BLOCK = 1 << 26  # bytes read at once by the newline scan (64 MiB)
_BOMS = (  # (mark, encoding); longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)
UNIT_COLUMNS = ("file", "start", "stop", "first_line", "n_records")


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
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "rows": self.rows,
            "header": list(self.header),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceFile:
        return cls(**{**data, "header": tuple(data.get("header", ()))})


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
        return {
            "source": self.source,
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
            source=str(attrs["source"]),
            unit_size=int(attrs["unit_size"]),
            files=tuple(SourceFile.from_dict(f) for f in attrs["files"]),
            units=np.asarray(units, dtype=np.int64).reshape(-1, len(UNIT_COLUMNS)),
            hashes=np.asarray(hashes, dtype=np.uint8).reshape(-1, 32),
            skipped=dict(attrs.get("skipped", {})),
            examples=list(attrs.get("examples", [])),
            seed=int(attrs.get("seed", 0)),
        )

    def changed_files(self) -> list[str]:
        """Files of a path source whose size or modification time differ from the index."""
        changed = []
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


# ---------------------------------------------------------------- indexing


def _check_regular(path: Path) -> os.stat_result:
    st = path.stat()
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return st
    what = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(st.st_mode)
        else "a character device"
        if stat.S_ISCHR(st.st_mode)
        else "a block device"
        if stat.S_ISBLK(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "not a regular file"
    )
    raise CorpusError(
        f"{path}: is {what}, not a corpus file; corpora are read twice (index, then units): "
        "write the text to a regular file first"
    )


def _check_encoding(path: Path, head: bytes) -> None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise CorpusError(
                f"{path}: is {name} text (byte-order mark {bom.hex(' ')}); kdcache reads UTF-8: "
                f"convert it first, e.g. iconv -f {name} -t UTF-8 FILE > FILE.utf8"
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
    offsets = [0]  # byte offset after each line fed

    def lines() -> Iterator[str]:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                offsets.append(offsets[-1] + len(raw))
                consumed.append(lineno)
                line = raw.decode("utf-8", errors="replace")
                yield (line.removeprefix("\ufeff") if lineno == 1 else line).rstrip("\r\n") + "\n"

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    row_starts: list[tuple[int, int]] = []  # (byte offset, first line) of every data row
    for fields in csv_rows(reader, file, consumed, SkipLog()):
        first_line = consumed[0]
        consumed.clear()
        start = offsets[first_line - 1]
        if header is None:
            if not any(value.strip() for value in fields):
                continue
            header = [name.strip() for name in fields]
            hint = "" if len(header) > 1 else delimiter_hint(header[0], path.suffix.lower())
            converter = row_converter(header, f"{file}:{first_line}{hint}")
            continue
        row_starts.append((start, first_line))
    if header is None:
        raise CorpusError(f"{file}: no header row with a 'text' column (the file is empty)")
    end = offsets[-1]
    picks = row_starts[::unit_size]
    cuts = np.array([s for s, _ in picks] + [end], dtype=np.int64)
    n_rows = len(row_starts)
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


def _row_units(file_index: int, n_rows: int, unit_size: int) -> np.ndarray:
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
    for i, rows in enumerate(_parquet_row_blocks(path, unit_size)):
        hashes[i] = _rows_digest(rows)
    rows_kind = "massive" if converter is massive_row else "text"
    return (
        _row_units(file_index, n_rows, unit_size),
        hashes,
        SourceFile(str(path), "parquet", st.st_size, st.st_mtime_ns, rows_kind, tuple(columns)),
    )


def _parquet_row_blocks(
    path: Path, unit_size: int, start: int = 0, stop: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Rows [start, stop) of a Parquet file, in lists of unit_size, reading batch by batch."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    stop = parquet.metadata.num_rows if stop is None else stop
    pending: list[dict[str, Any]] = []
    seen = 0
    for batch in parquet.iter_batches(batch_size=max(unit_size, 1024)):
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


def _rows_digest(rows: list[dict[str, Any]]) -> np.ndarray:
    blob = json.dumps(rows, sort_keys=True, default=str).encode()
    return np.frombuffer(hashlib.sha256(blob).digest(), dtype=np.uint8)


def _path_index(path: Path, unit_size: int, log: SkipLog) -> tuple[list, list, list[SourceFile]]:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    _check_regular(path)
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
            if any(part.startswith(".") for part in file.relative_to(path).parts):
                log.skip(str(file), 1, "hidden_file", "names starting with '.' are not read")
            elif file.suffix.lower() not in FILE_SUFFIXES:
                log.skip(str(file), 1, "unsupported_file", f"suffix {file.suffix!r}")
            else:
                _check_regular(file)
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
            _check_encoding(file, handle.read(4))
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


def index_source(source: str, unit_size: int, *, seed: int = 0) -> CorpusIndex:
    """Index `source` (a path, ``hf:...`` or ``demo:NAME``) into units of `unit_size` records."""
    if unit_size < 1:
        raise CorpusError(f"unit size must be >= 1, got {unit_size}")
    log = SkipLog()
    if source.startswith(("demo:", "hf:")):
        units, hashes, files = [], [], []
        for i, (name, rows) in enumerate(_row_source(source, seed, log)):
            units.append(_row_units(i, len(rows), unit_size))
            hashes.append(
                np.stack(
                    [_rows_digest(_rows(rows, a, b)) for _, a, b, _, _ in units[-1]]
                    or [np.zeros(32, np.uint8)]
                )[: len(units[-1])]
            )
            kind = "demo" if source.startswith("demo:") else "hf"
            files.append(SourceFile(name, kind, rows=getattr(rows, "rows_kind", "text")))
    else:
        units, hashes, files = _path_index(Path(source), unit_size, log)
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


# ---------------------------------------------------------------- rows of demo and hf sources


def _rows(rows: Any, start: int, stop: int) -> list[Any]:
    """Rows [start, stop) of a demo split (CorpusTexts as records) or an hf split (dicts)."""
    if isinstance(rows, _LabelledRows):
        return rows.slice(start, stop)
    return [r.to_record() for r in rows[start:stop]]


@lru_cache(maxsize=4)
def _demo(name: str, seed: int) -> tuple[tuple[CorpusText, ...], SkipLog]:
    """A packaged demo corpus (small, checksum-verified), read once per process."""
    log = SkipLog()
    texts, _ = read_demo(name, seed, log)
    return tuple(texts), log


def _row_source(source: str, seed: int, log: SkipLog) -> list[tuple[str, Any]]:
    """(file name, rows) per split of a demo or hf source."""
    if source.startswith("demo:"):
        texts, demo_log = _demo(source.removeprefix("demo:"), seed)
        log.counts.update(demo_log.counts)
        log.examples.extend(demo_log.examples)
        return [(source, texts)]
    return list(_hf_splits(source))


@lru_cache(maxsize=4)
def _hf_splits(spec: str) -> tuple[tuple[str, Any], ...]:
    import datasets

    path, kwargs, split = parse_hf(spec)
    try:
        loaded = datasets.load_dataset(path, split=split, **kwargs)
    except Exception as error:  # any loader failure is the user's dataset spec: report it
        raise CorpusError(
            f"{spec}: datasets.load_dataset failed: {type(error).__name__}: {error}"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        parts = sorted(loaded.items())
    elif isinstance(loaded, datasets.Dataset):
        parts = [(split or "train", loaded)]
    else:
        raise CorpusError(
            f"{spec}: streaming datasets are not supported; give a non-streaming dataset"
        )
    out = []
    for split_name, dataset in parts:
        labels = {c: f for c, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)}
        convert = row_converter(dataset.column_names, f"{spec}[{split_name}]")
        kind = "massive" if convert is massive_row else "text"
        out.append((f"{spec}[{split_name}]", _LabelledRows(dataset, labels, kind)))
    return tuple(out)


class _LabelledRows:
    """A `datasets.Dataset` as a sequence of row dicts, ClassLabel columns as their names."""

    def __init__(self, dataset: Any, labels: dict[str, Any], rows_kind: str) -> None:
        self.dataset, self.labels, self.rows_kind = dataset, labels, rows_kind

    def __len__(self) -> int:
        return len(self.dataset)

    def slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        block = self.dataset[start:stop]
        rows = [
            dict(zip(block, values, strict=True)) for values in zip(*block.values(), strict=True)
        ]
        for row in rows:
            for column, feature in self.labels.items():
                if isinstance(row.get(column), int) and row[column] >= 0:
                    row[column] = feature.int2str(row[column])
        return rows


def parse_hf(spec: str) -> tuple[str, dict[str, Any], str | None]:
    """``hf:...`` -> (path argument, other load_dataset kwargs, split or None)."""
    parts = spec.removeprefix("hf:").split(":")
    if not parts[0]:
        raise CorpusError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT] or hf:json:PATH[:SPLIT]")
    if parts[0] in HF_FILE_BUILDERS:
        rest = ":".join(parts[1:])
        split: str | None = "train"
        if not Path(rest).exists() and ":" in rest and Path(rest.rpartition(":")[0]).exists():
            rest, _, split = rest.rpartition(":")
        if not Path(rest).exists():
            raise CorpusError(f"{spec}: data file {rest!r} does not exist")
        return parts[0], {"data_files": rest}, split
    if len(parts) > 3:
        raise CorpusError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = [*parts, None, None][:3]
    assert name is not None
    return name, {"name": config or None}, split or None


# ---------------------------------------------------------------- reading one unit


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
    log = SkipLog()
    texts: list[CorpusText] = []
    records: list[int] = []
    base = int(index.record_start[u])

    def take(k: int, convert: Any, row: Mapping[str, Any], line: int) -> None:
        try:
            texts.append(convert(row, f.path, line, "train"))
            records.append(base + k)
        except RowProblem as problem:
            log.skip(f.path, line, problem.reason, problem.detail)

    if f.kind == "demo":
        texts_all = _demo(index.source.removeprefix("demo:"), index.seed)[0]
        if not np.array_equal(_rows_digest(_rows(texts_all, start, stop)), index.hashes[u]):
            raise _changed(index, u, first_line)
        texts = list(texts_all[start:stop])
        return _unit_texts(texts, list(range(base, base + len(texts))), log)
    if f.kind == "hf":
        rows = dict(_hf_splits(index.source))[f.path].slice(start, stop)
        if not np.array_equal(_rows_digest(rows), index.hashes[u]):
            raise _changed(index, u, first_line)
        split = f.path.rpartition("[")[2].rstrip("]")
        convert = massive_row if f.rows == "massive" else row_to_text
        for k, row in enumerate(rows):
            take(k, lambda r, file, line, _s: convert(r, file, line, split), row, start + k + 1)
        return _unit_texts(texts, records, log)
    if f.kind == "parquet":
        rows = next(_parquet_row_blocks(Path(f.path), stop - start, start, stop), [])
        if not np.array_equal(_rows_digest(rows), index.hashes[u]):
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
        _read_csv_unit(f, lines, first_line, log, take)
    else:
        _read_line_unit(f, lines, first_line, log, take)
    return _unit_texts(texts, records, log)


def _decode(raw: bytes, file: str, lineno: int, log: SkipLog) -> str | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        log.skip(
            file,
            lineno,
            "invalid_utf8",
            f"byte {error.start}: {raw[error.start : error.start + 1]!r}",
        )
        return None
    if lineno == 1:
        line = line.removeprefix("\ufeff")
    return line.rstrip("\r")


def _read_line_unit(
    f: SourceFile, lines: list[bytes], first_line: int, log: SkipLog, take: Any
) -> None:
    convert = massive_row if f.rows == "massive" else row_to_text
    for k, raw in enumerate(lines):
        lineno = first_line + k
        line = _decode(raw, f.path, lineno, log)
        if line is None:
            continue
        if not line.strip():
            log.skip(f.path, lineno, "empty_line")
            continue
        if f.kind == "txt":
            take(k, _txt_row, {"text": line}, lineno)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            log.skip(f.path, lineno, "malformed_json", error.msg)
            continue
        except RecursionError:
            log.skip(f.path, lineno, "malformed_json", "nested too deeply")
            continue
        if not isinstance(row, dict):
            log.skip(f.path, lineno, "not_an_object", f"got a JSON {type(row).__name__}")
            continue
        take(k, convert, row, lineno)


def _txt_row(row: Mapping[str, Any], file: str, line: int, split: str) -> CorpusText:
    return CorpusText(text=row["text"].strip(), id=f"{file}:{line}", file=file, line=line)


def _read_csv_unit(
    f: SourceFile, lines: list[bytes], first_line: int, log: SkipLog, take: Any
) -> None:
    consumed: list[int] = []
    header = list(f.header)
    convert = massive_row if f.rows == "massive" else row_to_text

    def feed() -> Iterator[str]:
        for k, raw in enumerate(lines):
            lineno = first_line + k
            line = _decode(raw, f.path, lineno, log)
            if line is None:
                continue
            consumed.append(lineno)
            yield line + "\n"

    reader = csv.reader(feed(), delimiter="\t" if f.kind == "tsv" else ",", strict=True)
    for k, fields in enumerate(csv_rows(reader, f.path, consumed, log)):
        lineno = consumed[0]
        consumed.clear()
        if not any(value.strip() for value in fields):
            log.skip(f.path, lineno, "empty_line")
        elif len(fields) != len(header):
            log.skip(
                f.path, lineno, "malformed_row", f"{len(fields)} fields, header has {len(header)}"
            )
        else:
            take(k, convert, dict(zip(header, fields, strict=True)), lineno)


def _unit_texts(texts: list[CorpusText], records: list[int], log: SkipLog) -> UnitTexts:
    report = log.report("", "", len(texts))
    return UnitTexts(texts, np.asarray(records, dtype=np.int64), report.skipped, report.examples)


def iter_texts(index: CorpusIndex, units: Any = None) -> Iterator[CorpusText]:
    """Every text of the given units (default: all, in order), one unit in memory at a time."""
    for u in range(index.n_units) if units is None else units:
        yield from read_unit(index, int(u)).texts

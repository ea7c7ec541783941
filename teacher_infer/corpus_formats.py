"""Readers for one corpus file: ``.txt``, ``.jsonl``, ``.csv`` / ``.tsv``, ``.parquet``.

Each reader feeds the file's bytes to the source hash as it reads, converts rows with
`row_to_text` (rows with a ``text`` field) or `massive_row` (MASSIVE rows: ``utt`` and
``annot_utt``, no ``text``), and counts every dropped line in the `SkipLog`:

* ``.txt``: one text per line.
* ``.jsonl``: one JSON object per line; the first object decides the row kind.
* ``.csv`` / ``.tsv``: a header row, then one row per text (quoted fields may span lines; a
  row's line is its first line); the header decides the row kind.
* ``.parquet``: one row per text; the schema decides the row kind; line = 1-based row.

Skipped and counted: "empty_line", "invalid_utf8" (the line is not UTF-8), "malformed_json",
"not_an_object", "malformed_row" (CSV field count differs from the header), and the row
problems of `row_to_text` / `massive_row`. Stops with `CorpusError`: a header or first object
with neither ``text`` nor the MASSIVE fields (with a hint when the header looks split by another
delimiter), a CSV quote that never closes, an unreadable Parquet file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from teacher_infer.corpus_records import CorpusError, CorpusText, RowProblem, SkipLog, row_to_text
from teacher_infer.massive import MASSIVE_FIELDS, massive_row

RowConverter = Callable[[Mapping[str, Any], str, int, str], CorpusText]
"""(row, file, line, default split) -> CorpusText; raises `RowProblem` for a bad row."""
FILE_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")


def row_converter(columns: Collection[str], where: str) -> RowConverter:
    """Pick the converter for rows with these columns, or stop: the file has no text field."""
    if "text" in columns:
        return row_to_text
    if all(name in columns for name in MASSIVE_FIELDS):
        return massive_row
    raise CorpusError(
        f"{where}: no 'text' field (found: {', '.join(map(str, columns)) or 'none'}); give every "
        "row a 'text' field, or use the MASSIVE fields 'utt' and 'annot_utt'"
    )


def _hashed_lines(path: Path, hasher: Any) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            hasher.update(raw)
            yield lineno, raw


def _decoded_lines(path: Path, file: str, hasher: Any, log: SkipLog) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) for each UTF-8 line; others are counted."""
    for lineno, raw in _hashed_lines(path, hasher):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            log.skip(
                file,
                lineno,
                "invalid_utf8",
                f"byte {error.start}: {raw[error.start : error.start + 1]!r}",
            )
            continue
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        yield lineno, line.rstrip("\r\n")


def _convert(
    convert: RowConverter,
    row: Mapping[str, Any],
    file: str,
    line: int,
    log: SkipLog,
    out: list[CorpusText],
) -> None:
    try:
        out.append(convert(row, file, line, "train"))
    except RowProblem as problem:
        log.skip(file, line, problem.reason, problem.detail)


def read_txt(path: Path, file: str, hasher: Any, log: SkipLog) -> list[CorpusText]:
    out = []
    for lineno, line in _decoded_lines(path, file, hasher, log):
        text = line.strip()
        if not text:
            log.skip(file, lineno, "empty_line")
            continue
        out.append(CorpusText(text=text, id=f"{file}:{lineno}", file=file, line=lineno))
    return out


def read_jsonl(path: Path, file: str, hasher: Any, log: SkipLog) -> list[CorpusText]:
    out: list[CorpusText] = []
    convert: RowConverter | None = None
    for lineno, line in _decoded_lines(path, file, hasher, log):
        if not line.strip():
            log.skip(file, lineno, "empty_line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            log.skip(file, lineno, "malformed_json", error.msg)
            continue
        if not isinstance(row, dict):
            log.skip(file, lineno, "not_an_object", f"got a JSON {type(row).__name__}")
            continue
        if convert is None:
            convert = row_converter(row.keys(), f"{file}:{lineno}")
        _convert(convert, row, file, lineno, log, out)
    return out


def read_csv(path: Path, file: str, hasher: Any, log: SkipLog) -> list[CorpusText]:
    """CSV (or TSV for a ``.tsv`` suffix) with a header row."""
    consumed: list[int] = []

    def lines() -> Iterator[str]:
        for lineno, line in _decoded_lines(path, file, hasher, log):
            consumed.append(lineno)
            yield line + "\n"

    # strict: a quote that never closes is an error at the end of the file, not one text that
    # silently swallows every line after it
    reader = csv.reader(lines(), delimiter="\t" if path.suffix == ".tsv" else ",", strict=True)
    out: list[CorpusText] = []
    header: list[str] | None = None
    convert: RowConverter | None = None
    for fields in _csv_rows(reader, file, consumed, log):
        lineno = consumed[0]
        consumed.clear()
        if not any(value.strip() for value in fields):
            log.skip(file, lineno, "empty_line")
            continue
        if header is None:
            header = [name.strip() for name in fields]
            hint = "" if len(header) > 1 else _delimiter_hint(header[0], path.suffix)
            convert = row_converter(header, f"{file}:{lineno}{hint}")
            continue
        if len(fields) != len(header):
            log.skip(
                file, lineno, "malformed_row", f"{len(fields)} fields, header has {len(header)}"
            )
            continue
        assert convert is not None
        _convert(convert, dict(zip(header, fields, strict=True)), file, lineno, log, out)
    return out


def _delimiter_hint(header: str, suffix: str) -> str:
    """A note for a one-column header that looks split by another delimiter."""
    for other in (";", "\t", ",", "|"):
        if other in header:
            wanted = "tab" if suffix == ".tsv" else "','"
            return f" (the header looks {other!r}-separated; {suffix} files are {wanted}-separated)"
    return ""


def _csv_rows(
    reader: Iterator[list[str]], file: str, consumed: list[int], log: SkipLog
) -> Iterator[list[str]]:
    """The reader's rows; a row the csv module rejects is counted as "malformed_row"."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            first = consumed[0] if consumed else 1
            if "unexpected end of data" in str(error):
                raise CorpusError(
                    f"{file}:{first}: a quoted field opened here never closes, so every later "
                    "line would become one text; fix the quote"
                ) from error
            log.skip(file, first, "malformed_row", str(error))
            consumed.clear()


def read_parquet(path: Path, file: str, hasher: Any, log: SkipLog) -> list[CorpusText]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise CorpusError(f"{file}: not a readable Parquet file ({error})") from error
    convert = row_converter(table.column_names, file)
    out: list[CorpusText] = []
    for row_index, row in enumerate(table.to_pylist(), start=1):
        _convert(convert, row, file, row_index, log, out)
    return out


READERS: dict[str, Callable[[Path, str, Any, SkipLog], list[CorpusText]]] = {
    ".txt": read_txt,
    ".jsonl": read_jsonl,
    ".csv": read_csv,
    ".tsv": read_csv,
    ".parquet": read_parquet,
}
assert tuple(READERS) == FILE_SUFFIXES

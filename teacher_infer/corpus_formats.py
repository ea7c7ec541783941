"""What the rows of a corpus file are: ``.txt``, ``.jsonl``, ``.csv`` / ``.tsv``, ``.parquet``.

* ``.txt``: one text per line.
* ``.jsonl``: one JSON object per line; the first object decides the row kind.
* ``.csv`` / ``.tsv``: a header row, then one row per text (quoted fields may span lines; a
  row's line is its first line); the header decides the row kind.
* ``.parquet``: one row per text; the schema decides the row kind; line = 1-based row.

Rows with a ``text`` field are converted by `row_to_text`, MASSIVE rows (``utt`` and
``annot_utt``, no ``text``) by `massive_row`; `teacher_infer.corpus_index` reads the files.
Skipped and counted there: "empty_line", "invalid_utf8" (the line is not UTF-8),
"malformed_json" (also JSON nested too deeply), "not_an_object", "malformed_row" (CSV field
count differs from the header), and the row problems of the converters. Stops with
`CorpusError`: a header or first object with neither ``text`` nor the MASSIVE fields (with a
hint when the header looks split by another delimiter), a CSV quote that never closes, an
unreadable Parquet file, a UTF-16/32 file (byte-order mark), a FIFO or device.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from teacher_infer.corpus_records import CorpusError, CorpusText, SkipLog, row_to_text
from teacher_infer.massive import MASSIVE_FIELDS, massive_row

RowConverter = Callable[[Mapping[str, Any], str, int, str], CorpusText]
"""(row, file, line, default split) -> CorpusText; raises `RowProblem` for a bad row."""
FILE_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".parquet")
# The csv module refuses fields over 128 KiB by default; a long text in a CSV cell is kept (and
# truncated to --max-length) like a long line of a .txt file. Memory per field stays bounded.
CSV_FIELD_LIMIT = 1 << 26
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))


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


def delimiter_hint(header: str, suffix: str) -> str:
    """A note for a one-column header that looks split by another delimiter."""
    for other in (";", "\t", ",", "|"):
        if other in header:
            wanted = "tab" if suffix == ".tsv" else "','"
            return f" (the header looks {other!r}-separated; {suffix} files are {wanted}-separated)"
    return ""


def csv_rows(
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

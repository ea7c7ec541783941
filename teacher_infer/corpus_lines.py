"""Reading one unit's lines of a text, JSONL, CSV or TSV file into texts (`corpus_index.read_unit`
hands over the unit's hash-checked bytes, split into lines); every bad line is counted in the
unit's `SkipLog` under its reason, "FILE:LINE: reason: detail" for the first few."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from teacher_infer.corpus_files import SourceFile
from teacher_infer.corpus_formats import csv_rows
from teacher_infer.corpus_records import CorpusText, SkipLog, row_to_text
from teacher_infer.massive import massive_row

_SURROGATE = re.compile("[\ud800-\udfff]")


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


def read_line_unit(
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
        try:
            lone = "\\u" in line and _has_lone_surrogate(row)
        except RecursionError:
            log.skip(f.path, lineno, "malformed_json", "nested too deeply")
            continue
        if lone:
            log.skip(f.path, lineno, "invalid_utf8", "a \\uD800-\\uDFFF escape without its pair")
            continue
        take(k, convert, row, lineno)


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string with a lone surrogate (JSON's "\\ud800"
    escape: valid JSON, but no UTF-8 text; the tokenizer and the store cannot take it)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _txt_row(row: Mapping[str, Any], file: str, line: int, split: str) -> CorpusText:
    return CorpusText(text=row["text"].strip(), id=f"{file}:{line}", file=file, line=line)


def read_csv_unit(
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

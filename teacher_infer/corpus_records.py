"""What a corpus reader hands on: one `CorpusText` per text, a `ReadReport` per source.

Readers of every format (`corpus_formats`, `massive`, `demo_corpora`, `corpora`) share three
pieces defined here so that skips are counted the same way everywhere:

* `RowProblem`: raised by a row converter for a bad row; the file loop catches it and the
  `SkipLog` counts it under its reason ("FILE:LINE: reason: detail" for the first few).
* `CorpusError`: a problem that stops the read (file-level), message "FILE:LINE: what is wrong".
* `row_to_text`: the one converter from a mapping with a ``text`` field (JSONL object, CSV row,
  Parquet row, `datasets` row) to a `CorpusText`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logit_store import SequenceInfo, UserError

MAX_EXAMPLES = 5
"""How many "FILE:LINE: reason" examples a `ReadReport` keeps."""

_BIO_TAG = re.compile(r"O|[BI]-\S+")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def printable_name(text: str) -> str:
    """`text` (a path, or a record id made of one) as valid UTF-8, for whatever is stored or
    written: a file name that is not UTF-8 reaches Python with lone surrogates
    (`os.fsdecode`), which a UTF-8 file, store or terminal cannot hold; its bytes are written as
    ``\\xNN`` escapes instead (``caf\\xe9.txt:1``), the way shells show them. Any other lone
    surrogate becomes ``\\uXXXX``. Valid text is returned as it is. Open files by the real
    name, never by this one."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate os.fsdecode does not make (JSON "\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def named(key: str, name: str) -> dict[str, str]:
    """``{key: name}`` for stored attributes, valid UTF-8 (`printable_name`); a name that is not
    UTF-8 also keeps its bytes, hex, under ``KEY_bytes`` (`real_name` reads it back)."""
    shown = printable_name(name)
    return {key: shown} if shown == name else {key: shown, f"{key}_bytes": os.fsencode(name).hex()}


def real_name(attrs: Mapping[str, Any], key: str) -> str:
    """The name `named` stored under `key`: from its bytes when it kept them."""
    raw = attrs.get(f"{key}_bytes")
    return os.fsdecode(bytes.fromhex(raw)) if isinstance(raw, str) else str(attrs[key])


class CorpusError(UserError):
    """A corpus cannot be read: the message names FILE:LINE (or the source) and what to do."""


class RowProblem(Exception):
    """One row is unusable; `reason` is the counter key, `detail` says what was seen."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CorpusText:
    """One text of a corpus with its labels.

    ``words``/``tags`` are word-level (whitespace words, BIO tags, same length); when ``words`` is
    set, ``text == " ".join(words)`` so a tokenizer's word ids line up with the tags.
    ``line`` is the 1-based line of the text in ``file`` (for Parquet and `datasets` sources: the
    1-based row; for the Wikipedia demo: the 1-based sentence number).
    """

    text: str
    id: str
    file: str
    line: int
    split: str = "train"
    domain: str | None = None
    intent: str | None = None
    locale: str | None = None
    words: list[str] | None = None
    tags: list[str] | None = None

    def __post_init__(self) -> None:
        assert self.text and self.text == self.text.strip(), f"{self.id}: text must be stripped"
        assert self.line >= 1 and _SPLIT_NAME.fullmatch(self.split), (self.line, self.split)
        assert (self.tags is None) or (self.words is not None and len(self.words) == len(self.tags))
        assert self.words is None or self.text == " ".join(self.words)

    def to_record(self) -> SequenceInfo:
        """The per-sequence record the store keeps of this text (`UnitData.records`)."""
        return SequenceInfo(
            id=self.id,
            line=self.line,
            split=self.split,
            domain=self.domain,
            intent=self.intent,
            locale=self.locale,
            tags=None if self.tags is None else list(self.tags),
            text=self.text,
        )


@dataclass(frozen=True)
class ReadReport:
    """What was read: ``source_hash`` is sha256 over the bytes of all files read, in sorted
    order (for ``hf:`` sources: over the datasets' fingerprints); ``skipped`` maps reason ->
    count; ``examples`` holds the first few skips as "FILE:LINE: reason: detail"."""

    source: str
    source_hash: str
    n_read: int
    skipped: dict[str, int]
    examples: list[str]


@dataclass
class SkipLog:
    """Counts skipped rows by reason and keeps the first `MAX_EXAMPLES` as examples."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, file: str, line: int, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            example = f"{file}:{line}: {reason}" + (f": {detail}" if detail else "")
            self.examples.append(printable_name(example))

    def report(self, source: str, source_hash: str, n_read: int) -> ReadReport:
        return ReadReport(
            source, source_hash, n_read, dict(sorted(self.counts.items())), list(self.examples)
        )


def check_tags(words: list[str], tags: list[str]) -> None:
    """Raise `RowProblem` unless ``tags`` are BIO tags, one per word."""
    if len(tags) != len(words):
        raise RowProblem("tag_count_mismatch", f"{len(tags)} tags for {len(words)} words")
    for tag in tags:
        if not _BIO_TAG.fullmatch(tag):
            raise RowProblem("unknown_tag", f"{tag!r} is not O, B-x or I-x")


def optional_str(row: Mapping[str, Any], key: str) -> str | None:
    """``row[key]`` as a stripped string; None when absent, null or empty."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowProblem("bad_field", f"{key!r} must be a string, got {type(value).__name__}")
    return str(value).strip() or None


def row_to_text(
    row: Mapping[str, Any], file: str, line: int, default_split: str = "train"
) -> CorpusText:
    """Convert a row with a ``text`` field (and optional ``id, split, domain, intent, locale,
    tags``) to a `CorpusText`; ``tags`` is a list or a space-separated string of word-level BIO
    tags, and then ``words = text.split()``. Raises `RowProblem` for a bad row."""
    text = row.get("text")
    if text is None:
        raise RowProblem("missing_text", "no 'text' value")
    if not isinstance(text, str):
        raise RowProblem("bad_field", f"'text' must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise RowProblem("empty_text")
    split = optional_str(row, "split") or default_split
    if not _SPLIT_NAME.fullmatch(split):
        raise RowProblem("bad_split", f"split {split!r} is not [A-Za-z0-9_.-]+")
    words = tags = None
    raw_tags = row.get("tags")
    if raw_tags is not None and raw_tags != "":
        if isinstance(raw_tags, str):
            tags = raw_tags.split()
        elif isinstance(raw_tags, list | tuple) and all(isinstance(t, str) for t in raw_tags):
            tags = list(raw_tags)
        else:
            raise RowProblem("bad_field", "'tags' must be a list of strings or a string")
        words = text.split()
        check_tags(words, tags)
        text = " ".join(words)
    return CorpusText(
        text=text,
        id=optional_str(row, "id") or f"{file}:{line}",
        file=file,
        line=line,
        split=split,
        domain=optional_str(row, "domain"),
        intent=optional_str(row, "intent"),
        locale=optional_str(row, "locale"),
        words=words,
        tags=tags,
    )

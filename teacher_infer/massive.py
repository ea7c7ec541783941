"""The MASSIVE format (Amazon's multilingual NLU set, FitzGerald et al. 2022), read natively.

A MASSIVE row is a JSON object ``{"id", "locale", "partition", "scenario", "intent", "utt",
"annot_utt", ...}`` whose ``annot_utt`` marks slots inline::

    wake me up at [time : five am] this [date : week]
    -> words: wake me up at five am this week
       tags:  O    O  O  O  B-time I-time O B-date

It becomes a `CorpusText` with domain = scenario, intent = intent, split = partition,
locale = locale, id = "LOCALE/ID", and word-level BIO tags. Words are the whitespace words of
``annot_utt`` with the markup removed (a bracket also ends a word, as in the unspaced ja/zh
rows), and ``text = " ".join(words)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from teacher_infer.corpus_records import CorpusText, RowProblem, optional_str

MASSIVE_FIELDS = ("utt", "annot_utt")
"""Columns that identify a MASSIVE file (it has no ``text`` column)."""

_SLOT = re.compile(r"\[([^\[\]:]*):([^\[\]]*)\]")


def parse_annot_utt(annot_utt: str) -> tuple[list[str], list[str]]:
    """Split ``annot_utt`` into words and word-level BIO tags.

    Raises `RowProblem("bad_annotation")` for unbalanced or nested brackets, an empty slot name,
    a slot name holding whitespace (a space, tab, no-break space: it would not be one BIO tag)
    or an empty slot value.
    """
    words: list[str] = []
    tags: list[str] = []
    pos = 0
    for match in _SLOT.finditer(annot_utt):
        _outside_words(annot_utt[pos : match.start()], words, tags)
        slot, value = match.group(1).strip(), match.group(2).split()
        if not slot or not value:
            raise RowProblem("bad_annotation", f"slot {match.group(0)!r} needs [name : value]")
        if any(char.isspace() for char in slot):
            raise RowProblem(
                "bad_annotation", f"slot {match.group(0)!r}: its name {slot!r} holds whitespace"
            )
        words.extend(value)
        tags.extend([f"B-{slot}"] + [f"I-{slot}"] * (len(value) - 1))
        pos = match.end()
    _outside_words(annot_utt[pos:], words, tags)
    return words, tags


def _outside_words(segment: str, words: list[str], tags: list[str]) -> None:
    if "[" in segment or "]" in segment:
        raise RowProblem("bad_annotation", f"unbalanced bracket in {segment.strip()!r}")
    for word in segment.split():
        words.append(word)
        tags.append("O")


def massive_row(
    row: Mapping[str, Any], file: str, line: int, default_split: str = "train"
) -> CorpusText:
    """Convert one MASSIVE row (a mapping with `MASSIVE_FIELDS`) to a `CorpusText`.

    Raises `RowProblem` when ``annot_utt`` is malformed, or when its words, with the markup
    removed, differ from ``utt`` (whitespace ignored: "annotation_mismatch").
    """
    utt, annot = row.get("utt"), row.get("annot_utt")
    if not isinstance(utt, str) or not isinstance(annot, str):
        raise RowProblem("missing_text", "MASSIVE rows need string 'utt' and 'annot_utt'")
    if not annot.strip():
        raise RowProblem("empty_text")
    words, tags = parse_annot_utt(annot)
    if "".join(words) != "".join(utt.split()):
        raise RowProblem("annotation_mismatch", f"annot_utt {annot!r} does not spell utt {utt!r}")
    locale = optional_str(row, "locale")
    row_id = optional_str(row, "id") or f"{file}:{line}"
    split = optional_str(row, "partition") or default_split
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise RowProblem("bad_split", f"partition {split!r} is not [A-Za-z0-9_.-]+")
    return CorpusText(
        text=" ".join(words),
        id=f"{locale}/{row_id}" if locale else row_id,
        file=file,
        line=line,
        split=split,
        domain=optional_str(row, "scenario"),
        intent=optional_str(row, "intent"),
        locale=locale,
        words=words,
        tags=tags,
    )

"""The per-sequence record: what a store keeps of a sequence besides its tokens and targets.

Stored as one JSON object per sequence in the array ``records`` (docs/FORMAT.md), with exactly
the fields of `SequenceInfo`, in their order. Teacher inference builds it from a corpus text, the
writer encodes it (`to_json`), and readers, `kdcache verify` and the transfer-set sampler decode
it (`from_json`); the split is also stored on its own (array ``split``), so selecting sequences
by split never parses JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class SequenceInfo:
    """id: the text's id in its source; line: its 1-based line (or row) in the source file;
    split: "train", "test", ...; domain / intent / locale: optional labels; tags: word-level
    BIO tags (one per whitespace word of `text`); text: the text itself."""

    id: str | None = None
    line: int | None = None
    split: str = "train"
    domain: str | None = None
    intent: str | None = None
    locale: str | None = None
    tags: list[str] | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def to_json(self) -> str:
        """The record as stored: ``json.dumps(self.to_dict(), ensure_ascii=False)``, exactly.

        A record with an id, a line and no labels (every line of a plain-text corpus) is written
        from a template: a cost per sequence that host workers pay for every unit."""
        if (
            self.domain is None
            and self.intent is None
            and self.locale is None
            and self.tags is None
            and isinstance(self.id, str)
            and type(self.line) is int
            and isinstance(self.split, str)
            and isinstance(self.text, str)
        ):
            return (
                f'{{"id": {_quoted(self.id)}, "line": {self.line}, "split": '
                f'{_quoted(self.split)}, "domain": null, "intent": null, "locale": null, '
                f'"tags": null, "text": {_quoted(self.text)}}}'
            )
        return _ENCODER.encode(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> SequenceInfo:
        """The record stored as `text`; a ValueError when it is not one. A null field takes the
        field's default (an empty text, the "train" split)."""
        data = json.loads(text)
        if not isinstance(data, dict) or not set(data) <= set(FIELDS):
            raise ValueError(f"not a sequence record: {text[:80]!r}")
        return cls(**{name: value for name, value in data.items() if value is not None})


FIELDS = tuple(f.name for f in fields(SequenceInfo))
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_quoted = json.encoder.encode_basestring  # a JSON string literal, as `_ENCODER` writes one
LABEL_FIELDS = ("domain", "intent", "locale")  # labels whose names a unit's done record lists


def label_names(infos: list[SequenceInfo]) -> dict[str, list[str]]:
    """Sorted vocabularies of the optional labels (and tags) present in `infos`."""
    names: dict[str, list[str]] = {}
    for key in LABEL_FIELDS:
        values = {getattr(r, key) for r in infos if getattr(r, key) is not None}
        if values:
            names[key] = sorted(values)
    tags = {tag for r in infos if r.tags for tag in r.tags}
    if tags:
        names["tags"] = sorted(tags)
    return names

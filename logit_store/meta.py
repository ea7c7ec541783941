"""Store metadata (format v1): what was computed, by which teacher and tokenizer, and how.

`StoreMeta` is written into the root group's attributes when a store is created and checked on
every open: a reader that expects another tokenizer, teacher or encoding gets a
`StoreMismatchError` naming the field, never silently wrong targets. `CorpusPlan` describes one
corpus before the teacher runs (every sequence's length and number of labelled positions), which
is what lets units own whole chunks (see `layout.py`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from logit_store.errors import StoreMismatchError, UserError
from logit_store.records import ENCODINGS

FORMAT_VERSION = 1
TOOL_VERSION = "kdcache 0.1.0"
VALUE_DTYPES = ("q8", "fp16")
MODES = ("mlm", "task")
TASK_KINDS = (None, "sequence", "token")
# Log-probabilities below -Q8_RANGE (p < 1.1e-7) are clamped to -Q8_RANGE by the q8 codec.
Q8_RANGE = 16.0
# path segments of letters, digits, '_', '.', '-', but not "." or ".." (zarr refuses those)
_CORPUS_NAME = re.compile(r"^(?!\.\.?(/|$))[A-Za-z0-9_.-]+(/(?!\.\.?(/|$))[A-Za-z0-9_.-]+)*$")


@dataclass(frozen=True)
class StoreMeta:
    """Provenance and encoding of a store; every field but `extra` is validated on open."""

    teacher_id: str
    teacher_hash: str
    tokenizer_id: str
    tokenizer_hash: str
    vocab_size: int
    pad_token_id: int
    mask_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    mode: str = "mlm"
    task_kind: str | None = None
    label_names: tuple[str, ...] = ()
    encoding: str = "topk"
    k: int = 32
    n_samples: int = 0
    value_dtype: str = "q8"
    q8_range: float = Q8_RANGE
    masking: dict[str, Any] = field(default_factory=dict)
    max_length: int = 128
    format_version: int = FORMAT_VERSION
    tool_version: str = TOOL_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.task_kind not in TASK_KINDS:
            raise UserError(f"task_kind must be one of {TASK_KINDS}, got {self.task_kind!r}")
        if self.encoding not in ENCODINGS:
            raise UserError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.value_dtype not in VALUE_DTYPES:
            raise UserError(f"value dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}")
        if self.vocab_size < 2:
            raise UserError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.mode == "task" and not self.label_names:
            raise UserError("task mode needs label_names (the teacher head's label space)")
        if self.encoding == "topk" and not self.k >= 1:
            raise UserError(f"k must be >= 1, got {self.k}")
        if self.encoding == "sampled" and not 1 <= self.n_samples <= 65535:
            raise UserError(f"samples must be in 1..65535, got {self.n_samples}")
        if self.max_length < 2:
            raise UserError(f"max_length must be >= 2, got {self.max_length}")
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @property
    def num_classes(self) -> int:
        """Size of the distribution the targets are over: vocabulary or label space."""
        return len(self.label_names) if self.mode == "task" else self.vocab_size

    @property
    def width(self) -> int:
        """Stored columns per labelled position: k (capped by the class count) or N."""
        if self.encoding == "topk":
            return min(self.k, self.num_classes)
        return min(self.n_samples, self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["label_names"] = list(self.label_names)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreMeta:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(
                f"store format version {version!r} is not supported by this kdcache "
                f"(reads version {FORMAT_VERSION}); install the kdcache that wrote it"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, expected: dict[str, Any]) -> list[tuple[str, object, object]]:
        """(field, stored, expected) for every expected field that differs; `extra` is ignored."""
        stored = self.to_dict()
        diffs: list[tuple[str, object, object]] = []
        for name, want in expected.items():
            if name == "extra":
                continue
            if name not in stored:
                raise UserError(
                    f"unknown store metadata field {name!r} in expected=; "
                    f"known: {', '.join(sorted(stored))}"
                )
            have = stored[name]
            if isinstance(want, tuple):
                want = list(want)
            if have != want:
                diffs.append((name, have, want))
        return diffs

    def check(self, expected: StoreMeta | dict[str, Any] | None, where: str) -> None:
        if expected is None:
            return
        wanted = expected.to_dict() if isinstance(expected, StoreMeta) else dict(expected)
        if isinstance(expected, StoreMeta):
            # Content, not location: the hashes identify teacher and tokenizer, so a store
            # resumes from a moved or renamed teacher folder with the same weights.
            for name in ("tool_version", "teacher_id", "tokenizer_id"):
                wanted.pop(name, None)
        diffs = self.differences(wanted)
        if diffs:
            raise StoreMismatchError(where, diffs)


@dataclass(frozen=True)
class CorpusPlan:
    """One corpus before the teacher runs: per-sequence token and labelled-position counts."""

    name: str
    lengths: np.ndarray
    n_positions: np.ndarray
    source: str = ""
    source_hash: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)
    unit_size: int = 1024
    skip_examples: list[str] = field(default_factory=list)  # first few "FILE:LINE: reason"

    def __post_init__(self) -> None:
        if not _CORPUS_NAME.match(self.name):
            raise UserError(
                f"corpus name {self.name!r}: use letters, digits, '_', '.', '-' and '/' only "
                "(no '.' or '..' segments)"
            )
        lengths = np.asarray(self.lengths, dtype=np.int64)
        n_positions = np.asarray(self.n_positions, dtype=np.int64)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "n_positions", n_positions)
        if lengths.ndim != 1 or lengths.shape != n_positions.shape:
            raise UserError(f"corpus {self.name!r}: lengths and n_positions must be 1-D, same size")
        if len(lengths) == 0:
            raise UserError(f"corpus {self.name!r} has no sequences (nothing left after skips)")
        if (lengths < 1).any() or (n_positions < 0).any() or (n_positions > lengths).any():
            raise UserError(f"corpus {self.name!r}: need 1 <= length and 0 <= positions <= length")
        if self.unit_size < 1:
            raise UserError(f"unit size must be >= 1, got {self.unit_size}")

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    def attrs(self) -> dict[str, Any]:
        """The JSON-able part stored in the corpus group's attributes."""
        return {
            "source": self.source,
            "source_hash": self.source_hash,
            "skipped": dict(self.skipped),
            "skip_examples": list(self.skip_examples),
            "label_names": {k: list(v) for k, v in self.label_names.items()},
            "unit_size": self.unit_size,
            "counts": {
                "sequences": len(self.lengths),
                "tokens": int(self.lengths.sum()),
                "positions": int(self.n_positions.sum()),
            },
        }

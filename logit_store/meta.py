"""Store metadata (format v2): what was computed, by which teacher and tokenizer, and how.

`StoreMeta` is written once when a store is created (a create-once object, then the root
group's attributes) and checked on every open: a reader that expects another tokenizer, teacher
or encoding gets a `StoreMismatchError` naming the field, never silently wrong targets.
`CorpusSpec` describes one corpus before the teacher runs: how many units it is cut into and
from which source; nothing in it grows with the corpus but the per-unit index arrays.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np

from logit_store.encodings import SparseEncoding, encoding_from_meta
from logit_store.encodings.topk import Q8_RANGE, TopK
from logit_store.errors import StoreCorruptError, StoreMismatchError, UserError

FORMAT_VERSION = 2
TOOL_VERSION = "kdcache 0.2.0"
MODES = ("mlm", "task")
TASK_KINDS = (None, "sequence", "token")
# path segments of letters, digits, '_', '.', '-', but not "." or ".." (zarr refuses those)
_CORPUS_NAME = re.compile(r"^(?!\.\.?(/|$))[A-Za-z0-9_.-]+(/(?!\.\.?(/|$))[A-Za-z0-9_.-]+)*$")


# Every field a format-2 writer has written since the format began (fields added later, such
# as q8_range, keep their defaults when absent; `extra` is free-form).
_FORMAT_2_FIELDS = (
    "teacher_id",
    "teacher_hash",
    "tokenizer_id",
    "tokenizer_hash",
    "vocab_size",
    "pad_token_id",
    "mask_token_id",
    "cls_token_id",
    "sep_token_id",
    "mode",
    "task_kind",
    "label_names",
    "encoding",
    "k",
    "n_samples",
    "value_dtype",
    "masking",
    "max_length",
    "format_version",
    "tool_version",
    "store_id",
)


@dataclass(frozen=True)
class StoreMeta:
    """Provenance and encoding of a store; every field but `extra` is validated on open.

    `encoding` names the sparse encoding; `k`, `n_samples`, `value_dtype` and `q8_range` are
    the format's keys for its settings (an encoding reads those it uses: `target_encoding`).
    """

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
    encoding: str = TopK.name
    k: int = 32
    n_samples: int = 0
    value_dtype: str = "q8"
    q8_range: float = Q8_RANGE
    masking: dict[str, Any] = field(default_factory=dict)
    max_length: int = 128
    format_version: int = FORMAT_VERSION
    tool_version: str = TOOL_VERSION
    store_id: str = ""  # set once at creation; every unit's done record carries it
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.task_kind not in TASK_KINDS:
            raise UserError(f"task_kind must be one of {TASK_KINDS}, got {self.task_kind!r}")
        encoding_from_meta(vars(self))
        if self.vocab_size < 2:
            raise UserError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.mode == "task" and not self.label_names:
            raise UserError("task mode needs label_names (the teacher head's label space)")
        if self.max_length < 2:
            raise UserError(f"max_length must be >= 2, got {self.max_length}")
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @property
    def num_classes(self) -> int:
        """Size of the distribution the targets are over: vocabulary or label space."""
        return len(self.label_names) if self.mode == "task" else self.vocab_size

    @cached_property
    def target_encoding(self) -> SparseEncoding:
        """The sparse encoding's settings, from their metadata keys."""
        return encoding_from_meta(vars(self))

    @property
    def width(self) -> int:
        """Stored columns W per labelled position (the encoding's, for this class count)."""
        return self.target_encoding.width(self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["label_names"] = list(self.label_names)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], url: str) -> StoreMeta:
        """The metadata `data` of the store at `url` (named by its errors)."""
        version = data.get("format_version")
        if version == 1:
            raise UserError(
                f"{url}: store format 1 (whole-corpus plans, kdcache 0.1) is not read by this "
                f"kdcache (format {FORMAT_VERSION}: streaming units); recompute it with `kdcache "
                "precompute ... --out NEW_PATH`, or read it with kdcache 0.1"
            )
        if version != FORMAT_VERSION:
            raise UserError(
                f"{url}: store format version {version!r} is not supported by this kdcache "
                f"(reads version {FORMAT_VERSION}); install the kdcache that wrote it"
            )
        missing = [name for name in _FORMAT_2_FIELDS if name not in data]
        if missing:
            raise StoreCorruptError(
                f"{url}: the store metadata (attribute kdcache of zarr.json) lacks the field(s) "
                f"{', '.join(missing)}: the store's metadata is damaged; restore zarr.json from a "
                "copy, or recompute into a new --out store"
            )
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError, KeyError) as err:  # a field of the wrong type
            raise StoreCorruptError(
                f"{url}: the store metadata (attribute kdcache of zarr.json) is damaged "
                f"({err!r}); restore zarr.json from a copy, or recompute into a new --out store"
            ) from err

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
            for name in ("tool_version", "teacher_id", "tokenizer_id", "store_id"):
                wanted.pop(name, None)
        diffs = self.differences(wanted)
        if diffs:
            raise StoreMismatchError(where, diffs)


def check_corpus_name(name: str) -> None:
    if not _CORPUS_NAME.match(name):
        raise UserError(
            f"corpus name {name!r}: use letters, digits, '_', '.', '-' and '/' only "
            "(no '.' or '..' segments)"
        )


@dataclass(frozen=True)
class CorpusSpec:
    """One corpus before the teacher runs: `n_units` units of at most `unit_size` records.

    source / source_hash: what it was read from and the identity of that content (over the
    per-unit hashes); index / index_arrays: the source index (opaque JSON attributes and
    per-unit arrays, e.g. byte ranges), stored so that every process reads the same units;
    unit_hashes: (n_units, 32) uint8 content hash of each unit's source, carried into its done
    record.
    """

    name: str
    n_units: int
    unit_size: int = 1024
    source: str = ""
    source_hash: str = ""
    index: dict[str, Any] = field(default_factory=dict)
    index_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    unit_hashes: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_corpus_name(self.name)
        if self.n_units < 1:
            raise UserError(f"corpus {self.name!r} has no units (nothing to read)")
        if self.unit_size < 1:
            raise UserError(f"unit size must be >= 1, got {self.unit_size}")
        if self.unit_hashes is not None:
            hashes = np.asarray(self.unit_hashes, dtype=np.uint8).reshape(-1, 32)
            assert len(hashes) == self.n_units, "one hash per unit"
            object.__setattr__(self, "unit_hashes", hashes)

    def unit_hash(self, u: int) -> str:
        return "" if self.unit_hashes is None else bytes(self.unit_hashes[u]).hex()

    def identity(self) -> dict[str, Any]:
        """What must be equal for two processes to write one corpus (its create-once record)."""
        return {
            "source_hash": self.source_hash,
            "unit_size": self.unit_size,
            "n_units": self.n_units,
        }

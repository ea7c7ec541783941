"""Errors a user can hit. `cli.main` prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment: the message says what and what to do."""


class StoreMismatchError(UserError):
    """An existing store was written with different settings than the caller expects: one line,
    ``WHERE was written with different settings: FIELD: stored X != expected Y; ...``."""

    def __init__(self, where: str, diffs: list[tuple[str, object, object]]) -> None:
        self.diffs = diffs
        fields = "; ".join(
            f"{field}: stored {stored!r} != expected {expected!r}"
            for field, stored, expected in diffs
        )
        super().__init__(
            f"{where} was written with different settings: {fields}. Use a new --out store, "
            "or rerun with the store's settings."
        )


class StoreCorruptError(UserError):
    """A chunk failed its checksum or the store is internally inconsistent."""


class DamagedAttributesError(StoreCorruptError, ValueError):
    """A kdcache attribute of a store's metadata is not the mapping a writer sets. A ValueError
    too, so readers that name the damaged corpus still catch it."""


class DamagedIndexError(StoreCorruptError):
    """A corpus's stored source index is unreadable or contradicts its identity; `source_hash`
    is the identity's, so a fresh index of the same source can stand in for it."""

    def __init__(self, message: str, source_hash: str) -> None:
        super().__init__(message)
        self.source_hash = source_hash

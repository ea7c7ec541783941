"""Damaged store metadata (found by the acceptance drill) is refused, never filled in.

A format-2 `zarr.json` whose `kdcache` attribute lacked `k` opened with the dataclass default
(k=32 for a store of k=8): `inspect` showed the wrong k and `open_store(expected={"k": 32})`
matched. A field of the wrong type was a TypeError traceback.
"""

from __future__ import annotations

import pytest
from synthetic import synthetic_meta

from logit_store.errors import StoreCorruptError
from logit_store.meta import StoreMeta


def test_a_complete_meta_round_trips() -> None:
    meta = synthetic_meta()
    assert StoreMeta.from_dict(meta.to_dict(), "s.zarr") == meta


def test_a_field_added_after_format_2_may_be_absent() -> None:
    data = synthetic_meta().to_dict()
    del data["q8_range"], data["extra"]
    assert StoreMeta.from_dict(data, "s.zarr").k == 8


@pytest.mark.parametrize("name", ["k", "encoding", "max_length", "teacher_hash", "masking"])
def test_a_missing_field_is_refused_naming_it(name: str) -> None:
    data = synthetic_meta().to_dict()
    del data[name]
    with pytest.raises(StoreCorruptError, match=rf"lacks the field\(s\) {name}\b"):
        StoreMeta.from_dict(data, "s.zarr")


def test_a_field_of_the_wrong_type_is_one_line() -> None:
    data = {**synthetic_meta().to_dict(), "vocab_size": "many"}
    with pytest.raises(StoreCorruptError, match=r"\(attribute kdcache of zarr.json\) is damaged"):
        StoreMeta.from_dict(data, "s.zarr")

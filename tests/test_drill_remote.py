"""A store URL that cannot be reached is one line for precompute too (acceptance drill).

`open_store`/`verify` turned any failure to reach an s3:// store into one line, but precompute's
first look at --out (`check_store_target`) let it through: a bad --storage-option was a
TypeError traceback and missing credentials a NoCredentialsError traceback."""

from __future__ import annotations

import pytest

from logit_store.arrays import check_store_target
from logit_store.errors import UserError


def test_an_unreachable_store_url_is_one_line() -> None:
    pytest.importorskip("s3fs")
    with pytest.raises(UserError) as caught:
        check_store_target("s3://bucket/x.zarr", {"bogus": "1"})
    message = str(caught.value)
    assert message.startswith("s3://bucket/x.zarr: cannot open (TypeError")
    assert "--storage-option" in message and "\n" not in message

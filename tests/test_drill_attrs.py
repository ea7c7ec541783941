"""Damaged kdcache attributes (found by the acceptance drill) are one line, never a traceback.

`zarr.json` that parses but whose `kdcache` attribute is not a mapping made `open_store`,
`verify`, `inspect` and `distill` end in "ValueError: attribute kdcache is not a mapping".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from synthetic import write_synthetic

from logit_store import open_store
from logit_store.errors import UserError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    url = tmp_path_factory.mktemp("attrs") / "s.zarr"
    write_synthetic(str(url))
    return url


@pytest.mark.parametrize("where", ["", "corpora/task"])
def test_a_kdcache_attribute_that_is_not_a_mapping_is_a_user_error(
    store: Path, tmp_path: Path, where: str
) -> None:
    url = tmp_path / "s.zarr"
    shutil.copytree(store, url)
    meta = url / where / "zarr.json"
    doc = json.loads(meta.read_text())
    key = next(k for k in doc["attributes"] if k.startswith("kdcache"))
    doc["attributes"][key] = "hello"
    meta.write_text(json.dumps(doc))
    with pytest.raises(UserError) as caught:
        opened = open_store(str(url))
        opened["task"]
    message = str(caught.value)
    assert "attribute" in message and key in message and "\n" not in message
    assert str(url) in message

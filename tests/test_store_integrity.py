"""Where a store may be created on a local disk: never over a file, a folder of other files or
another zarr group (faults of a store on every backend: test_store_backends.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
from synthetic import synthetic_meta, synthetic_specs

from logit_store import CorpusSpec, UserError, create_store


def test_create_store_refuses_paths_that_hold_something_else(tmp_path: Path) -> None:
    meta, plans = synthetic_meta(), synthetic_specs()
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(UserError, match="is a file"):
        create_store(str(afile), meta, plans)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"not empty and not a kdcache store \(holds notes.txt\)"):
        create_store(str(folder), meta, plans)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array(
        "x", shape=(2,), dtype="i4"
    )
    with pytest.raises(UserError, match="not a kdcache store"):
        create_store(str(tmp_path / "other.zarr"), meta, plans)
    for name in ("..", "../up", "task/./x"):  # zarr refuses these paths with a raw ValueError
        with pytest.raises(UserError, match=r"no '\.' or '\.\.' segments"):
            CorpusSpec(name, n_units=1)

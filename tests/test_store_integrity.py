"""Where a store may be created on a local disk (never over a file, a folder of other files or
another zarr group), and that only damage is reported as damage (faults of a store on every
backend: test_store_backends.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
from synthetic import synthetic_meta, synthetic_specs, write_synthetic

from logit_store import (
    CorpusSpec,
    StoreCorruptError,
    UserError,
    create_store,
    open_store,
    target_codec,
)
from logit_store.verify import verify_store


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


def test_an_error_of_the_code_is_not_reported_as_store_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what damage raises (a failed checksum, a missing or unreadable object, counts that
    contradict a done record) becomes "store corrupt, run verify"; a bug in the code reading a
    sound store reaches the user as itself."""
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)

    def bug(*args: object) -> None:
        raise ValueError("a bug in the id decoder")

    monkeypatch.setattr(target_codec, "ids_from_gaps", bug)
    for read in (lambda: open_store(url)["task"][0], lambda: verify_store(url)):
        with pytest.raises(ValueError, match="a bug in the id decoder") as err:
            read()
        assert not isinstance(err.value, StoreCorruptError)


def test_a_writer_keeps_no_note_of_the_units_it_has_written(tmp_path: Path) -> None:
    """The writer's store notes each object of a unit in flight for its manifest and drops the
    notes with the unit: its memory does not grow with the units written (done records are
    not noted at all)."""
    url = str(tmp_path / "s.zarr")
    writer = write_synthetic(url)
    assert writer.store.writing == set() and writer.store.written == {}
    assert verify_store(url) == []  # the manifests it wrote still match the objects

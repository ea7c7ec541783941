"""A damaged consolidated summary (found by the acceptance drill) is never read as data.

The summary (`logit_store/summary.py`) is derived from the done records, so a reader that finds
one of its per-sequence arrays unreadable or inconsistent with the per-unit counts uses the
units' own chunks instead: a deleted chunk (zarr's fill values: lengths 0, split code 0) must
not become all-zero lengths or a corpus without a train split, and a flipped byte must not be a
traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_synthetic

from logit_store import consolidate_store, open_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    url = tmp_path_factory.mktemp("summary") / "s.zarr"
    write_synthetic(str(url))
    consolidate_store(str(url))
    return url


def _columns(url: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    store = open_store(str(url))
    return {
        name: (
            store[name].lengths(),
            store[name].split_array(),
            int(store[name].split_mask(["train"]).sum()),
        )
        for name in store.corpora
    }


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("array", ["summary_lengths", "summary_split"])
@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_a_damaged_summary_array_falls_back_to_the_units(
    store: Path, tmp_path: Path, array: str, damage: str
) -> None:
    want = _columns(store)
    url = tmp_path / "d.zarr"
    shutil.copytree(store, url)
    chunk = url / "corpora" / "task" / array / "c" / "0"
    assert chunk.is_file()
    if damage == "delete":
        chunk.unlink()
    else:
        _flip(chunk)
    got = _columns(url)
    for name, (lengths, splits, n_train) in want.items():
        assert np.array_equal(got[name][0], lengths), name
        assert list(got[name][1]) == list(splits), name
        assert got[name][2] == n_train, name
    assert want["task"][0].min() > 0 and want["task"][2] > 0


@pytest.mark.parametrize("array", ["summary_lengths", "summary_split"])
def test_consolidating_after_a_damaged_summary_keeps_the_values(
    store: Path, tmp_path: Path, array: str
) -> None:
    want = _columns(store)
    url = tmp_path / "d.zarr"
    write_synthetic(str(url), units=[0, 1, 2])
    consolidate_store(str(url))
    (url / "corpora" / "task" / array / "c" / "0").unlink()
    write_synthetic(str(url))  # the remaining units
    consolidate_store(str(url))
    got = _columns(url)
    for name, (lengths, splits, n_train) in want.items():
        assert np.array_equal(got[name][0], lengths), name
        assert list(got[name][1]) == list(splits), name
        assert got[name][2] == n_train, name
    skipped = open_store(str(store))["task"].units.skipped
    assert open_store(str(url))["task"].units.skipped == skipped

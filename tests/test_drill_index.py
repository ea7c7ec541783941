"""A damaged stored source index (found by the acceptance drill) is not taken for the source.

A rerun reads the index a store keeps instead of indexing its corpora again. A deleted
`index_units` chunk read as zarr's fill values (every unit the empty range at line 0), so the
resume failed with "the source changed since it was indexed (unit 5, records from line 0)"
although nothing had changed; a deleted `index_hashes` chunk was "written with different
settings: source_hash". Now a fresh index stands in for a damaged one when the source still
hashes to the store's source hash, and a changed source is refused saying both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import synthetic_meta

from logit_store import create_store
from teacher_infer.corpus_index import index_source
from teacher_infer.corpus_records import CorpusError
from teacher_infer.store_corpora import corpus_spec, index_corpora

UNIT = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("index")
    text = root / "corpus.txt"
    text.write_text("".join(f"sentence number {i} about flights\n" for i in range(30)))
    url = root / "s.zarr"
    create_store(str(url), synthetic_meta(), [corpus_spec("x", index_source(str(text), UNIT))])
    return url, text


def _copy(store: tuple[Path, Path], tmp_path: Path, array: str) -> Path:
    url = tmp_path / "s.zarr"
    shutil.copytree(store[0], url)
    chunk = url / "corpora" / "x" / array / "c" / "0"
    assert chunk.exists(), sorted(p.name for p in chunk.parent.iterdir())
    if chunk.is_dir():
        shutil.rmtree(chunk)
    else:
        chunk.unlink()
    return url


def test_the_stored_index_is_used_when_intact(store: tuple[Path, Path]) -> None:
    url, text = store
    got = index_corpora((("x", str(text)),), str(url), UNIT, 0, None)["x"]
    want = index_source(str(text), UNIT)
    assert np.array_equal(got.units, want.units) and np.array_equal(got.hashes, want.hashes)


@pytest.mark.parametrize("array", ["index_units", "index_hashes"])
def test_a_damaged_stored_index_is_replaced_by_a_fresh_one(
    store: tuple[Path, Path], tmp_path: Path, array: str
) -> None:
    url = _copy(store, tmp_path, array)
    text = store[1]
    got = index_corpora((("x", str(text)),), str(url), UNIT, 0, None)["x"]
    want = index_source(str(text), UNIT)
    assert np.array_equal(got.units, want.units) and np.array_equal(got.hashes, want.hashes)


def test_a_damaged_index_and_a_changed_source_are_refused_saying_both(
    store: tuple[Path, Path], tmp_path: Path
) -> None:
    url = _copy(store, tmp_path, "index_units")
    text = tmp_path / "corpus.txt"
    text.write_text(store[1].read_text().replace("number 7 ", "number seven "))
    with pytest.raises(CorpusError) as caught:
        index_corpora((("x", str(text)),), str(url), UNIT, 0, None)
    message = str(caught.value)
    assert "'index_units'" in message and "no longer hashes" in message and "\n" not in message


def test_a_file_added_to_a_corpus_folder_is_not_ignored_on_resume(tmp_path: Path) -> None:
    """A rerun used the stored index when the indexed files were unchanged, so a file added to
    a corpus folder was silently left out and the store reported complete."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("".join(f"first file line {i}\n" for i in range(10)))
    (folder / "empty.txt").write_text("")
    (folder / "notes.md").write_text("not a corpus file\n")
    url = tmp_path / "s.zarr"
    create_store(str(url), synthetic_meta(), [corpus_spec("x", index_source(str(folder), UNIT))])
    corpora = (("x", str(folder)),)
    assert index_corpora(corpora, str(url), UNIT, 0, None)["x"].n_units == 3  # unchanged
    (folder / "b.txt").write_text("an added line\n")
    with pytest.raises(CorpusError, match=r"b\.txt:1: the source changed since the store"):
        index_corpora(corpora, str(url), UNIT, 0, None)

"""Damage `kdcache verify` said OK for, or named wrongly (found by the acceptance drill).

A damaged stored source index (`index_units` / `index_hashes`) was reported as "unit N computed
from other source content than the store's index" for every unit; verify now checks the index
against the corpus's identity the way a rerun does (`source_index.stored_corpus_index`) and
names the index once, comparing unit hashes only with an intact one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_calls import kdcache
from synthetic import SyntheticCorpus, synthetic_meta, unit_data

from logit_store import create_store
from logit_store.verify import verify_store
from teacher_infer.corpus_index import index_source
from teacher_infer.store_corpora import corpus_spec

UNIT = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    text = root / "corpus.txt"
    text.write_text("".join(f"sentence number {i} about flights\n" for i in range(30)))
    meta, spec = synthetic_meta(), corpus_spec("x", index_source(str(text), UNIT))
    lengths = np.random.default_rng(0).integers(4, 32, 30)
    plan = SyntheticCorpus(spec, lengths, np.maximum(1, lengths // 6))
    url = root / "s.zarr"
    writer = create_store(str(url), meta, [spec])
    for unit in writer.pending("x"):
        rows = plan.rows(unit)
        writer.write_unit(unit, unit_data(meta, plan, rows.start, rows.stop))
    assert verify_store(str(url)) == []
    return url


@pytest.mark.parametrize("array", ["index_units", "index_hashes"])
def test_a_damaged_stored_index_is_named_once_not_as_every_unit(
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    array: str,
) -> None:
    url = tmp_path / "s.zarr"
    shutil.copytree(store, url)
    chunk = url / "corpora" / "x" / array / "c" / "0"
    shutil.rmtree(chunk) if chunk.is_dir() else chunk.unlink()
    code, out, _ = kdcache(monkeypatch, capsys, ["verify", str(url)])
    faults = [line for line in out.splitlines() if line.startswith("FAULT")]
    assert code == 1 and len(faults) == 1, out
    assert faults[0].startswith(
        f"FAULT corpus 'x': its stored source index is damaged (array '{array}'"
    )
    assert "delete corpora/x/index_units and corpora/x/index_hashes and rerun" in faults[0]
    for name in ("index_units", "index_hashes"):  # the remedy: a rerun recreates them
        shutil.rmtree(url / "corpora" / "x" / name)
    text = store.parent / "corpus.txt"
    create_store(str(url), synthetic_meta(), [corpus_spec("x", index_source(str(text), UNIT))])
    assert verify_store(str(url)) == []

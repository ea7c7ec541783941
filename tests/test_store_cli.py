"""`kdcache inspect` and `kdcache verify` as a user runs them, on real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from synthetic import synthetic_meta, synthetic_specs, write_synthetic

from logit_store import CorpusSpec, StoreCorruptError, UserError, create_store, open_store
from logit_store.verify import verify_store


def kdcache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )


def test_inspect_json_reports_sizes_and_completeness(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url, units=[0, 1])
    out = kdcache("inspect", url, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    task = {c["name"]: c for c in summary["corpora"]}["task"]
    assert summary["encoding"] == "topk" and summary["k"] == 8 and not summary["complete"]
    assert task["units_done"] == 2 and task["units_total"] == 5
    assert 0 < task["target_bytes_per_position"] < 200
    table = kdcache("inspect", url)
    assert "incomplete" in table.stdout and "2/5" in table.stdout


def test_verify_passes_then_names_the_array_with_a_flipped_byte(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    write_synthetic(str(url))
    ok = kdcache("verify", str(url))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    shard = sorted((url / "corpora" / "task" / "target_values" / "c").rglob("*"))[-1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = kdcache("verify", str(url))
    assert bad.returncode == 1
    assert "corpus 'task'" in bad.stdout and "'target_values'" in bad.stdout


def test_verify_reports_missing_units(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url, units=[0])
    bad = kdcache("verify", url)
    assert bad.returncode == 1 and "units not written" in bad.stdout


def test_user_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    for command in ("inspect", "verify"):  # no store at all is a user error, not a fault (1)
        missing = kdcache(command, str(tmp_path / "nope.zarr"))
        assert missing.returncode == 2, command
        assert "Traceback" not in missing.stderr and "no kdcache store here" in missing.stderr


@pytest.mark.parametrize("encoding", ["topk", "sampled"])
def test_a_deleted_object_is_named_by_verify_and_refused_by_readers(
    tmp_path: Path, encoding: str
) -> None:
    url = tmp_path / "s.zarr"
    write_synthetic(str(url), encoding)
    assert verify_store(str(url)) == []
    (url / "corpora" / "task" / "target_values" / "c" / "1" / "0").unlink()
    assert verify_store(str(url)) == [
        "corpus 'task' unit 1: array 'target_values' has no stored object (deleted?)"
    ]
    task = open_store(str(url))["task"]
    task[0]  # other units still read
    with pytest.raises(StoreCorruptError, match=r"unit 1: .*'target_values'.* missing"):
        task[8]


def test_damaged_metadata_and_flags_are_store_errors_not_tracebacks(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    write_synthetic(str(url))
    records = url / "corpora" / "task" / "records" / "c" / "2"
    records.write_bytes(records.read_bytes()[:-3])
    with pytest.raises(StoreCorruptError, match="array 'records'"):
        open_store(str(url))["task"].column("text")
    done = url / "corpora" / "task" / "done" / "c" / "0"
    done.write_bytes(done.read_bytes()[:-1])
    with pytest.raises(StoreCorruptError, match="corpus 'task'"):
        open_store(str(url))["task"]
    assert any("corpus 'task'" in fault for fault in verify_store(str(url)))
    (url / "corpora" / "generic" / "zarr.json").write_text("{not json")
    assert "metadata cannot be read" in verify_store(str(url))[0]
    (url / "zarr.json").write_text("{not json")
    out = kdcache("inspect", str(url))
    assert out.returncode == 2 and "root metadata cannot be read" in out.stderr
    assert "Traceback" not in out.stderr


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

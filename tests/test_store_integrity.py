"""Store integrity under faults: truncated, emptied or replaced objects, a deleted done array,
racing creators with other settings, a store replaced under a writer, an older format."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic import synthetic_meta, synthetic_plans, synthetic_specs, unit_data, write_synthetic

from logit_store import StoreCorruptError, StoreMismatchError, UserError, create_store, open_store
from logit_store.verify import verify_store


def _unit_two_rows(url: str) -> list[int]:
    corpus = open_store(url)["task"]
    start, stop = corpus.unit_ranges()[2]
    return list(range(start, stop))


def test_an_emptied_shard_is_named_by_verify_and_refused_by_readers(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    shard = tmp_path / "s.zarr/corpora/task/target_values/c/2/0"
    shard.write_bytes(b"")
    faults = verify_store(url)
    assert any("unit 2: array 'target_values': its object has 0 bytes" in f for f in faults)
    with pytest.raises(StoreCorruptError, match=r"unit 2: the stored object of array"):
        open_store(url)["task"].batch(_unit_two_rows(url))
    assert open_store(url)["task"].batch([0]).targets.ids.shape[0] > 0  # other units still read


def test_a_replaced_object_fails_its_checksum(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    base = tmp_path / "s.zarr/corpora/task/input_ids/c"
    (base / "2").write_bytes((base / "1").read_bytes())  # a valid shard of another unit
    faults = verify_store(url)
    assert any("unit 2: array 'input_ids'" in f for f in faults), faults
    assert not any("unit 1" in f for f in faults)


def test_a_deleted_done_array_is_reported_and_a_resume_recreates_it(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    shutil.rmtree(tmp_path / "s.zarr/corpora/task/done")
    assert any("corpus 'task'" in f for f in verify_store(url))
    writer = create_store(url, synthetic_meta(), synthetic_specs())  # the resume: no KeyError
    assert len(writer.pending("task")) == 5 and not writer.pending("generic")
    write_synthetic(url)
    assert verify_store(url) == []


def _create_and_write(url: str, teacher_hash: str, barrier: multiprocessing.synchronize.Barrier):
    barrier.wait()
    try:
        meta = synthetic_meta(teacher_hash=teacher_hash)
        plans = synthetic_plans()
        writer = create_store(url, meta, [p.spec for p in plans])
        for plan in plans:
            for unit in writer.pending(plan.name):
                rows = plan.rows(unit)
                writer.write_unit(unit, unit_data(meta, plan, rows.start, rows.stop))
    except StoreMismatchError:
        raise SystemExit(3) from None


def test_racing_creators_with_other_teachers_never_mix(tmp_path: Path) -> None:
    """Two writers with different teachers started together on one path: one creates and
    writes the store, the other is refused; verify passes and every unit is the winner's."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(4):
        url = str(tmp_path / f"race{trial}.zarr")
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_create_and_write, args=(url, h * 64, barrier)) for h in "12"]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
        codes = [p.exitcode for p in procs]
        assert None not in codes and sorted(c or 0 for c in codes) == [0, 3], (trial, codes)
        store = open_store(url)
        winner = store.meta.teacher_hash
        assert verify_store(url) == []
        records = [store["task"].done_record(u) for u in store["task"].done_units.tolist()]
        assert {r["teacher_hash"] for r in records} == {winner}


def test_a_store_replaced_under_a_writer_stops_it(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    meta, plans = synthetic_meta(), synthetic_plans()
    writer = create_store(url, meta, [p.spec for p in plans])
    shutil.rmtree(url)
    write_synthetic(url)  # another store at the same path
    task = plans[1]
    rows = task.rows(writer.units("task")[0])
    with pytest.raises(UserError, match="was replaced by another writer"):
        writer.write_unit(writer.units("task")[0], unit_data(meta, task, rows.start, rows.stop))


def test_a_format_1_store_is_refused_in_one_line(tmp_path: Path) -> None:
    url = str(tmp_path / "old.zarr")
    zarr.open_group(url, mode="w").attrs["kdcache"] = {"format_version": 1}
    with pytest.raises(UserError, match=r"store format 1 .* recompute it") as err:
        open_store(url)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"store format 1"):
        create_store(url, synthetic_meta(), synthetic_specs())
    assert np.array_equal(sorted(p.name for p in Path(url).iterdir()), ["zarr.json"])

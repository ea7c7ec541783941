"""One conformance suite for every storage backend: a local folder, ``memory://`` and S3 (moto on
loopback, reached through the AWS_* variables a user exports), the way zarr-python's
``testing/store.py`` is one class that each of its stores subclasses.

`StoreConformance` is what a store must do wherever it lives: round trips of both encodings,
the consolidated summary, resuming an interrupted writer, refusing other settings, create-once,
damage named by `kdcache verify` and refused by readers, the CLI, and reads from a forked
DataLoader worker. `store_damage.StoreDamageConformance` (damage the store's own logic names,
the same on every backend) is run by the local folder and ``memory://``. `SharedStoreConformance`
adds what needs a backend that other processes
reach (a ``memory://`` store lives in one process): writer processes SIGKILLed mid-write, and
creators with other settings racing. A backend is a `Backend`: where a test's stores go, and raw
access to their objects, so a test can truncate, replace or delete one as a failing disk or a
careless user would.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from cli_calls import kdcache
from s3_server import S3Server, s3_server
from store_backend import Backend, done_flags
from store_damage import StoreDamageConformance
from synthetic import (
    assert_same_store,
    synthetic_meta,
    synthetic_plans,
    synthetic_specs,
    unit_data,
    write_synthetic,
)

from logit_store import (
    Store,
    StoreCorruptError,
    StoreMismatchError,
    UserError,
    consolidate_store,
    create_store,
    open_store,
)
from logit_store.objects import create_once, read_object
from logit_store.verify import verify_store

WRITER = [sys.executable, str(Path(__file__).with_name("synthetic.py"))]
VALUES = {"topk": "logprobs", "sampled": "counts"}  # the stored values of each encoding
ENCODINGS = pytest.mark.parametrize("encoding", ["topk", "sampled"])


def _child_reads(store: Store, encoding: str, conn: Connection) -> None:
    batch = store["task"].batch([9, 17])  # units 1 and 2: not in the parent's unit cache
    conn.send((batch.input_ids.numpy(), getattr(batch.targets, VALUES[encoding]).numpy()))


def _create_and_write(url: str, teacher_hash: str, barrier: Barrier) -> None:
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


class StoreConformance:
    """Every backend runs these; a subclass provides the `backend` fixture (class-scoped)."""

    @ENCODINGS
    def test_records_and_batches_round_trip(self, backend: Backend, encoding: str) -> None:
        url = backend.written(encoding)
        store = open_store(url, expected={"tokenizer_hash": "a" * 64, "encoding": encoding})
        assert store.corpora == ["generic", "task"] and store.complete
        meta, plans = synthetic_meta(encoding), {p.name: p for p in synthetic_plans()}
        task = store["task"]
        assert len(task) == len(plans["task"].lengths)
        expected = unit_data(meta, plans["task"], 8, 16)  # unit 1, as the writer was given it
        r = task[9]
        n0 = int(plans["task"].lengths[8])
        np.testing.assert_array_equal(r.input_ids, expected.input_ids[n0 : n0 + len(r.input_ids)])
        info = r.info
        assert info.split == "train" and info.id == "task-9" and info.domain == "b"
        assert info.text == "sentence 9"
        batch = task.batch([9, 0, 33])
        assert batch.input_ids.shape[0] == 3 and batch.attention_mask.sum(1).tolist() == [
            int(plans["task"].lengths[i]) for i in (9, 0, 33)
        ]
        rows = batch.batch_index == 0
        np.testing.assert_array_equal(batch.targets.ids[rows].numpy()[:, : r.ids.shape[1]], r.ids)
        first = int(plans["task"].n_positions[8])
        values = VALUES[encoding]
        want = sorted(
            zip(
                expected.targets.ids[first].tolist(),
                getattr(expected.targets, values)[first].tolist(),
                strict=True,
            )
        )
        got_vals = getattr(r.targets, values)
        got = sorted(
            (i, v)
            for i, v, keep in zip(
                r.ids[0].tolist(), got_vals[0].tolist(), (got_vals[0] != 0).tolist(), strict=True
            )
            if keep or encoding == "topk"
        )
        assert [i for i, _ in got] == [i for i, v in want if encoding == "topk" or v > 0]
        assert np.allclose(
            [v for _, v in got],
            [v for _, v in want if encoding == "topk" or v > 0],
            atol=16 / 255 / 2 + 1e-6,
        )
        seen = batch.teacher_input_ids[batch.batch_index, batch.positions]
        assert torch.equal(seen, torch.full_like(seen, int(meta.mask_token_id or 0)))
        assert torch.equal(batch.labels, batch.input_ids[batch.batch_index, batch.positions])
        assert list(task.split_array()[:6]) == ["test", "train", "train", "train", "train", "test"]
        assert task.column("domain")[:3] == ["a", "b", "a"]
        assert task.unit_ranges()[0] == (0, 8)

    def test_summary_and_fresh_units_read_alike(self, backend: Backend) -> None:
        """Counts, lengths and splits are the same whether a reader gets them from the done
        records, from the consolidated summary, or from both (units written after it)."""
        url = backend.url("s.zarr")
        write_synthetic(url, units=[0, 1, 2])
        before = open_store(url)["task"]
        consolidate_store(url)
        write_synthetic(url)  # the remaining units, not consolidated yet
        mixed = open_store(url)["task"]
        assert mixed.summary.covers(mixed.done_units).tolist() == [True] * 3 + [False] * 2
        consolidate_store(url)
        full = open_store(url)["task"]
        assert full.summary.covers(full.done_units).all()
        plan = synthetic_plans()[1]
        for corpus in (mixed, full):
            assert len(corpus) == 40 and corpus.info["counts"]["tokens"] == int(plan.lengths.sum())
            assert np.array_equal(corpus.lengths(), plan.lengths)
            splits = corpus.split_array()
            assert (splits == "test").sum() == 8
            assert np.array_equal(corpus.split_mask(("train",)), splits == "train")
            assert corpus.info["label_names"] == {"domain": ["a", "b"]}
        assert np.array_equal(before.lengths(), plan.lengths[:24])

    def test_an_interrupted_writer_resumes_only_the_missing_units(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        reference, url = str(tmp_path / "ref.zarr"), backend.url("s.zarr")
        write_synthetic(reference)
        write_synthetic(url, units=[0, 2])  # stopped after some units
        partial = open_store(url)
        assert not partial.complete and len(partial["generic"]) + len(partial["task"]) == 32
        writer = create_store(url, synthetic_meta(), synthetic_specs())
        assert [u.index for u in writer.pending("task")] == [1, 3, 4]
        assert [u.index for u in writer.pending("generic")] == [1, 3]
        write_synthetic(url)
        assert open_store(url).complete
        assert_same_store(reference, url)

    def test_objects_an_interrupted_unit_left_are_replaced_not_merged(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        """A unit stopped before its done record may have left some of its objects (shards,
        or bytes a failing disk cut short); writing the unit again replaces each one whole
        instead of reading it to merge into."""
        reference, url = str(tmp_path / "ref.zarr"), backend.url("s.zarr")
        write_synthetic(reference)
        write_synthetic(url, units=[0])
        for key in ("corpora/generic/input_ids/c/1", "corpora/generic/id_table/c/1"):
            backend.write(url, key, b"left by an interrupted write")
        write_synthetic(url)
        assert_same_store(reference, url)

    def test_other_settings_are_refused(self, backend: Backend) -> None:
        url = backend.written()  # a refused writer writes nothing
        with pytest.raises(StoreMismatchError, match="tokenizer_hash: stored 'aaaa"):
            create_store(url, synthetic_meta(tokenizer_hash="b" * 64), synthetic_specs())
        with pytest.raises(StoreMismatchError, match=r"task\.n_units"):
            create_store(url, synthetic_meta(), synthetic_specs(n_task=41))
        with pytest.raises(StoreMismatchError, match="k: stored 8 != expected 16"):
            open_store(url, expected=synthetic_meta(k=16))

    def test_creation_is_create_once(self, backend: Backend) -> None:
        """A second creator with another teacher is refused; the store keeps the first one's
        identity."""
        probe = backend.url("probe")
        assert create_once(probe, "once.json", b"first", None)
        assert not create_once(probe, "once.json", b"second", None)
        assert read_object(probe, "once.json", None) == b"first"
        url = backend.written()
        with pytest.raises(StoreMismatchError, match="teacher_hash"):
            create_store(url, synthetic_meta(teacher_hash="x" * 64), synthetic_specs())
        assert open_store(url).meta.teacher_hash == synthetic_meta().teacher_hash

    def test_a_store_replaced_under_a_writer_stops_it(self, backend: Backend) -> None:
        url = backend.url("s.zarr")
        meta, plans = synthetic_meta(), synthetic_plans()
        writer = create_store(url, meta, [p.spec for p in plans])
        backend.delete(url)
        backend.copy(target=url)  # another store at the same place
        task = plans[1]
        rows = task.rows(writer.units("task")[0])
        with pytest.raises(UserError, match="was replaced by another writer"):
            writer.write_unit(writer.units("task")[0], unit_data(meta, task, rows.start, rows.stop))

    def test_a_format_1_store_is_refused_in_one_line(self, backend: Backend) -> None:
        url = backend.url("old.zarr")
        zarr.open_group(url, mode="w").attrs["kdcache"] = {"format_version": 1}
        with pytest.raises(UserError, match=r"store format 1 .* recompute it") as err:
            open_store(url)
        assert "\n" not in str(err.value)
        with pytest.raises(UserError, match=r"store format 1"):
            create_store(url, synthetic_meta(), synthetic_specs())
        assert backend.keys(url) == ["zarr.json"]

    @ENCODINGS
    def test_a_deleted_object_is_named_by_verify_and_refused_by_readers(
        self, backend: Backend, encoding: str
    ) -> None:
        url = backend.copy(encoding)
        assert verify_store(url) == []
        backend.delete(url, "corpora/task/target_values/c/1/0")
        assert verify_store(url) == [
            "corpus 'task' unit 1: array 'target_values' has no stored object (deleted?)"
        ]
        task = open_store(url)["task"]
        task[0]  # other units still read
        with pytest.raises(StoreCorruptError, match=r"unit 1: .*'target_values'.* missing"):
            task[8]

    def test_inspect_reports_sizes_and_completeness(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.url("s.zarr")
        write_synthetic(url, units=[0, 1])
        code, out, err = kdcache(monkeypatch, capsys, ["inspect", url, "--json"])
        assert code == 0, err
        summary = json.loads(out)
        task = {c["name"]: c for c in summary["corpora"]}["task"]
        assert summary["encoding"] == "topk" and summary["k"] == 8 and not summary["complete"]
        assert task["units_done"] == 2 and task["units_total"] == 5
        assert 0 < task["target_bytes_per_position"] < 200
        _, table, _ = kdcache(monkeypatch, capsys, ["inspect", url])
        assert "incomplete" in table and "2/5" in table

    def test_verify_passes_then_names_the_array_with_a_flipped_byte(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.copy()
        code, out, err = kdcache(monkeypatch, capsys, ["verify", url])
        assert code == 0, out + err
        shard = backend.keys(url, "corpora/task/target_values/c")[-1]
        data = bytearray(backend.read(url, shard))
        data[len(data) // 3] ^= 0x01
        backend.write(url, shard, bytes(data))
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        assert code == 1
        assert "corpus 'task'" in out and "'target_values'" in out

    def test_verify_reports_missing_units(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        url = backend.url("s.zarr")
        write_synthetic(url, units=[0])
        code, out, _ = kdcache(monkeypatch, capsys, ["verify", url])
        assert code == 1 and "units not written" in out

    def test_no_store_is_a_one_line_user_error(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
    ) -> None:
        for command in ("inspect", "verify"):  # no store at all is a user error, not a fault
            code, _, err = kdcache(monkeypatch, capsys, [command, backend.url("nope.zarr")])
            assert code == 2, command
            assert "Traceback" not in err and "no kdcache store here" in err

    @ENCODINGS
    def test_a_forked_worker_reads_the_parents_open_store(
        self, backend: Backend, encoding: str
    ) -> None:
        """DataLoader workers are forked; an object store's clients are bound to the parent's
        event loop."""
        url = backend.written(encoding)
        store = open_store(url)
        store["task"].batch([0])  # the parent opens the arrays and reads unit 0
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_child_reads, args=(store, encoding, send))
        child.start()
        assert receive.poll(60), "the forked reader failed or hung"
        input_ids, values = receive.recv()
        child.join(30)
        assert child.exitcode == 0
        expected = open_store(url)["task"].batch([9, 17])
        np.testing.assert_array_equal(input_ids, expected.input_ids.numpy())
        np.testing.assert_array_equal(values, getattr(expected.targets, VALUES[encoding]).numpy())


class SharedStoreConformance(StoreConformance):
    """What backends that other processes reach also run: writer processes, racing creators."""

    @ENCODINGS
    def test_writer_processes_one_sigkilled_then_resumed_equal_an_uninterrupted_store(
        self, backend: Backend, tmp_path: Path, encoding: str
    ) -> None:
        """Two writer processes fill disjoint units of one store; one is SIGKILLed mid-write,
        a rerun redoes only its missing units, and every array equals an uninterrupted run's."""
        reference, shared = str(tmp_path / "ref.zarr"), backend.url("shared.zarr")
        write_synthetic(reference, encoding)
        create_store(shared, synthetic_meta(encoding), synthetic_specs())  # one creates
        steady = subprocess.Popen([*WRITER, shared, encoding, "--units", "1,3"])
        killed = subprocess.Popen([*WRITER, shared, encoding, "--units", "0,2,4", "--sleep", "0.5"])
        deadline = time.monotonic() + 60
        while "generic/0" not in done_flags(backend, shared) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.poll() is None, "the writer to kill finished too early"
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert steady.wait(timeout=120) == 0
        partial = open_store(shared)
        assert not partial.complete, "the killed writer had units left"
        done_before = len(done_flags(backend, shared))
        assert 0 < len(partial["generic"]) + len(partial["task"]) < 70
        writer = create_store(shared, synthetic_meta(encoding), synthetic_specs())
        pending = len(writer.pending("generic")) + len(writer.pending("task"))
        assert pending == 4 + 5 - done_before, "only the missing units are redone"
        write_synthetic(shared, encoding)
        assert open_store(shared).complete
        assert_same_store(reference, shared)

    race_trials = 4

    def test_racing_creators_with_other_teachers_never_mix(self, backend: Backend) -> None:
        """Two writers with different teachers started together on one store: one creates and
        writes it, the other is refused; verify passes and every unit is the winner's."""
        ctx = multiprocessing.get_context("fork")
        for trial in range(self.race_trials):
            url = backend.url(f"race{trial}.zarr")
            barrier = ctx.Barrier(2)
            procs = [
                ctx.Process(target=_create_and_write, args=(url, h * 64, barrier)) for h in "12"
            ]
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


class TestLocalFolder(SharedStoreConformance, StoreDamageConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> Backend:
        return Backend(str(tmp_path_factory.mktemp("stores")))


class TestMemory(StoreConformance, StoreDamageConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Backend:
        return Backend(f"memory://kdcache-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


class TestS3(SharedStoreConformance):
    race_trials = 2  # each trial writes a whole store through moto; If-None-Match is atomic

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, s3: S3Server) -> Backend:
        return Backend(s3.bucket_url(uuid.uuid4().hex))

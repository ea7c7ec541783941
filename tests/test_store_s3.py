"""The store on object storage: a real S3 protocol server (moto) on loopback, real s3fs clients.

Writers are separate processes that reach the server only through the AWS_* environment
variables a user would export, and are SIGKILLed mid-write; every result must equal the same
store written to local disk.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
import s3fs
from s3_server import S3Server, s3_server
from synthetic import assert_same_store, synthetic_meta, synthetic_specs, write_synthetic
from typer.testing import CliRunner

from cli import app
from logit_store import (
    Store,
    StoreMismatchError,
    TopKTargets,
    UserError,
    create_store,
    open_store,
)
from logit_store.objects import create_once, read_object
from logit_store.storage_options import fsspec_options

WRITER = [sys.executable, str(Path(__file__).with_name("synthetic.py"))]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _done_flags(url: str) -> set[str]:
    """`corpus/unit` of every done flag object in the store."""
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    keys = fs.find(url.removeprefix("s3://") + "/corpora")
    return {"/".join(key.split("/")[-4::3]) for key in keys if "/done/c/" in key}


def test_storage_options_are_typed_nested_and_carry_the_s3_endpoint() -> None:
    options = {
        "endpoint_url": "http://10.0.0.5:9000",
        "anon": "false",
        "config_kwargs.max_pool_connections": "32",
        "secret": "0123",
    }
    assert fsspec_options("s3://bucket/c.zarr", options) == {
        "client_kwargs": {"endpoint_url": "http://10.0.0.5:9000"},
        "anon": False,
        "config_kwargs": {"max_pool_connections": 32},
        "secret": "0123",
    }
    assert fsspec_options("gs://bucket/c.zarr", {"endpoint_url": "http://x"}) == {
        "endpoint_url": "http://x"
    }
    with pytest.raises(UserError, match="given twice"):
        fsspec_options("s3://b/c.zarr", {"endpoint_url": "a", "client_kwargs.endpoint_url": "b"})


def test_concurrent_writers_one_sigkilled_then_resumed_equal_local_disk(
    s3: S3Server, tmp_path: Path
) -> None:
    """Two writer processes fill disjoint units of one S3 store; one is SIGKILLed mid-write,
    a rerun redoes only its missing units, and every array equals the local-disk store."""
    reference, shared = str(tmp_path / "ref.zarr"), s3.bucket_url("shared.zarr")
    write_synthetic(reference)
    create_store(shared, synthetic_meta(), synthetic_specs())  # one creates, then both write
    steady = subprocess.Popen([*WRITER, shared, "topk", "--units", "1,3"])
    killed = subprocess.Popen([*WRITER, shared, "topk", "--units", "0,2,4", "--sleep", "0.5"])
    deadline = time.monotonic() + 60
    while "generic/0" not in _done_flags(shared) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert killed.poll() is None, "the writer to kill finished too early"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert steady.wait(timeout=120) == 0
    partial = open_store(shared)
    assert not partial.complete, "the killed writer had units left"
    done_before = len(_done_flags(shared))
    assert 0 < len(partial["generic"]) + len(partial["task"]) < 70
    writer = create_store(shared, synthetic_meta(), synthetic_specs())
    pending = len(writer.pending("generic")) + len(writer.pending("task"))
    assert pending == 4 + 5 - done_before, "only the missing units are redone"
    write_synthetic(shared)
    assert open_store(shared).complete
    assert_same_store(reference, shared)


@pytest.fixture(scope="module")
def uploaded(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 15 + 5 unit store written on local disk, then copied to the bucket (`aws s3 sync`)."""
    local = tmp_path_factory.mktemp("upload") / "big.zarr"
    write_synthetic(str(local), n_generic=120)
    url = s3.bucket_url("big.zarr")
    s3fs.S3FileSystem().put(str(local), url.removeprefix("s3://"), recursive=True)
    return url


def test_unit_by_unit_reads_fetch_only_that_unit(s3: S3Server, uploaded: str) -> None:
    """Streaming a corpus unit by unit GETs each unit's objects once; never the whole store."""
    url = uploaded
    corpus = open_store(url)["generic"]
    prefix = "big.zarr/corpora/generic/"  # request keys are relative to the bucket
    object_bytes = {
        key: size
        for key, size in s3fs.S3FileSystem().du(url.removeprefix("s3://"), total=False).items()
        if "/corpora/generic/" in key and "/c/" in key
    }
    unit_bytes = sum(v for k, v in object_bytes.items() if "/plan_" not in k and "/done/" not in k)
    fetched_per_unit = []
    for u, (start, stop) in enumerate(corpus.unit_ranges()):
        first = len(s3.requests)
        batch = corpus.batch(np.arange(start, stop))
        assert len(batch.indices) == stop - start
        gets = [
            r
            for r in s3.requests[first:]
            if r.method == "GET" and r.key.startswith(prefix) and "/c/" in r.key
        ]
        arrays_units = {
            (r.key.removeprefix(prefix).split("/c/")[0], int(r.key.split("/c/")[1].split("/")[0]))
            for r in gets
        }
        foreign = {(a, i) for a, i in arrays_units if i != u and not a.startswith("plan_")}
        assert not foreign, f"unit {u} read chunks of other units: {foreign}"
        assert {"input_ids", "target_ids", "target_values"} <= {a for a, _ in arrays_units}
        fetched_per_unit.append(sum(r.body_bytes for r in gets if "/plan_" not in r.key))
    assert len(fetched_per_unit) == 15
    average_share = unit_bytes / len(fetched_per_unit)
    assert max(fetched_per_unit) < 2 * average_share, (fetched_per_unit, unit_bytes)
    assert sum(fetched_per_unit) <= 1.1 * unit_bytes, "every unit's objects read about once"


def _child_reads(store: Store, conn: Connection) -> None:
    batch = store["task"].batch([9, 17])  # units 1 and 2: not in the parent's unit cache
    assert isinstance(batch.targets, TopKTargets)
    conn.send((batch.input_ids.numpy(), batch.targets.logprobs.numpy()))


def test_a_forked_worker_reads_the_parents_open_store(uploaded: str) -> None:
    """DataLoader workers are forked; the parent's s3 clients are bound to its event loop."""
    store = open_store(uploaded)
    store["task"].batch([0])  # the parent opens the arrays and reads unit 0
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_reads, args=(store, send))
    child.start()
    assert receive.poll(60), "the forked reader failed or hung"
    input_ids, logprobs = receive.recv()
    child.join(30)
    assert child.exitcode == 0
    expected = open_store(uploaded)["task"].batch([9, 17])
    assert isinstance(expected.targets, TopKTargets)
    np.testing.assert_array_equal(input_ids, expected.input_ids.numpy())
    np.testing.assert_array_equal(logprobs, expected.targets.logprobs.numpy())


def test_cli_reaches_s3_through_storage_option_and_names_a_missing_store(
    s3: S3Server, uploaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = uploaded
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    runner = CliRunner()
    ok = runner.invoke(
        app, ["inspect", url, "--json", "--storage-option", f"endpoint_url={s3.endpoint}"]
    )
    assert ok.exit_code == 0, ok.output
    assert '"units_done": 15' in ok.output and '"complete": true' in ok.output
    missing = runner.invoke(
        app, ["verify", url + "-nope", "--storage-option", f"endpoint_url={s3.endpoint}"]
    )
    # no store at all is a user error (exit 2 from the console script), not a store fault
    assert isinstance(missing.exception, UserError)
    assert "no kdcache store here" in str(missing.exception)
    s3fs.S3FileSystem.clear_instance_cache()


def test_creation_is_create_once_on_s3(s3: S3Server) -> None:
    """If-None-Match: a second creator with another teacher is refused, and the store keeps
    the first one's identity."""
    probe = s3.bucket_url(f"probe-{uuid.uuid4().hex}")
    assert create_once(probe, "once.json", b"first", None)
    assert not create_once(probe, "once.json", b"second", None)
    assert read_object(probe, "once.json", None) == b"first"
    url = s3.bucket_url(f"once-{uuid.uuid4().hex}.zarr")
    write_synthetic(url)
    with pytest.raises(StoreMismatchError, match="teacher_hash"):
        create_store(url, synthetic_meta(teacher_hash="x" * 64), synthetic_specs())
    assert open_store(url).meta.teacher_hash == synthetic_meta().teacher_hash

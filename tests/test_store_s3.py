"""What only object storage has: a real S3 protocol server (moto) on loopback, real s3fs clients.

Typed `--storage-option`s, reads that fetch only the objects of the unit they read, and the CLI
reaching the endpoint through `--storage-option`. Everything a store does on every backend
(S3 included) is in the conformance suite, test_store_backends.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import s3fs
from s3_server import S3Server, s3_server
from synthetic import synthetic_meta, synthetic_plans, unit_data, write_synthetic
from typer.testing import CliRunner

from cli import app
from logit_store import UserError, create_store, open_store
from logit_store.storage_options import fsspec_options


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


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


def test_a_unit_written_costs_one_request_per_object_and_one_identity_read(s3: S3Server) -> None:
    """Writing a unit PUTs each of its objects once and GETs only the store's identity (the
    check that the store was not replaced): no HEAD (s3fs sizes an object before a plain read),
    no read or listing of the unit's shards before they are written. The first unit of a
    corpus also reads each array's metadata once (the writer opens its arrays once). Creating
    the store reads each metadata object with one GET, not a HEAD and a GET."""
    url = s3.bucket_url("requests.zarr")
    meta, plans = synthetic_meta("topk"), synthetic_plans()
    first = len(s3.requests)
    writer = create_store(url, meta, [p.spec for p in plans])
    created = s3.requests[first:]
    heads = [r for r in created if r.method == "HEAD"]  # zarr's checks that a node exists
    # 269 requests, 86 HEAD with zarr 3.1.6 and s3fs 2026.9 (were 407 and 224)
    assert len(created) <= 300 and len(heads) <= 100, (len(created), len(heads))
    n_arrays = 13  # done and the 12 arrays a top-k unit writes
    for plan in plans:
        for unit in writer.pending(plan.name):
            first = len(s3.requests)
            rows = plan.rows(unit)
            writer.write_unit(unit, unit_data(meta, plan, rows.start, rows.stop))
            requests = s3.requests[first:]
            objects = len(open_store(url)[plan.name].done_record(unit.index)["objects"])
            puts = [r for r in requests if r.method == "PUT"]
            others = [r for r in requests if r.method != "PUT"]
            assert len(puts) == objects + 1, puts  # + the done record
            assert [r.key for r in others if "/zarr.json" not in r.key] == [
                "requests.zarr/kdcache.json"
            ], others
            metadata = [r for r in others if "/zarr.json" in r.key]
            assert all(r.method == "GET" for r in metadata), metadata
            assert len(metadata) <= (n_arrays if unit.index == 0 else 0), metadata
            assert len(requests) <= objects + 2 + (n_arrays if unit.index == 0 else 0)
    s3fs.S3FileSystem.clear_instance_cache()

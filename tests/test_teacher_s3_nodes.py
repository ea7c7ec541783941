"""`kdcache precompute` onto S3 (moto on loopback), then `inspect` / `verify` / readers on the
s3:// URL; and two torchrun "nodes" (c10d rendezvous) filling one S3 store together.

Every process reaches the bucket only through the AWS_* environment variables a user would
export, and runs one torch thread so float results do not depend on thread scheduling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server, s3_server
from synthetic import assert_same_store
from teacher_fixtures import precompute_args, precompute_inputs
from typer.testing import CliRunner

from cli import app
from logit_store import TopKTargets, open_store
from similarity.encoder import resolve_encoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return precompute_inputs(tmp_path_factory.mktemp("s3nodes"), n_generic=40, n_task=16)


@pytest.fixture(scope="module")
def single(s3: S3Server, files: dict[str, Path]) -> str:
    """One process: `kdcache precompute --out s3://...` (the reference for the nodes test)."""
    url = s3.bucket_url("single.zarr")
    result = CliRunner().invoke(app, precompute_args(files, url))
    assert result.exit_code == 0, result.output
    return url


def test_precompute_to_s3_then_inspect_verify_and_read(
    s3: S3Server, single: str, files: dict[str, Path]
) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", single, "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    corpora = {c["name"]: c for c in summary["corpora"]}
    assert summary["complete"] and summary["store"] == single
    assert corpora["generic"]["sequences"] == 40 and corpora["task"]["sequences"] == 16
    assert corpora["generic"]["units_done"] == corpora["generic"]["units_total"] == 5
    checked = runner.invoke(app, ["verify", single])
    assert checked.exit_code == 0 and "OK" in checked.output, checked.output
    batch = open_store(single)["task"].batch([0, 15])
    assert isinstance(batch.targets, TopKTargets) and batch.targets.logprobs.shape[1] == 32
    assert len(batch.positions) > 0
    assert resolve_encoder(single)[0] == str(files["bert"]), "similarity --encoder STORE"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_fill_one_s3_store(
    s3: S3Server, single: str, files: dict[str, Path]
) -> None:
    """Two torchrun launches, as on two machines: --nnodes 2, one rank each, one S3 store."""
    url, port = s3.bucket_url("nodes.zarr"), _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    launch = [
        torchrun,
        "--nnodes", "2",
        "--nproc-per-node", "1",
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", "kdcache-test",
        "cli.py",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [*launch, *precompute_args(files, url)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(e[-2000:] for _, e in outputs)
    reports = " ".join(out for out, _ in outputs)
    assert "rank 1 of 2: computed 3 of 7 units" in reports, reports
    assert_same_store(str(single), url)

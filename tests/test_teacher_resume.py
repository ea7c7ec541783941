"""The real entry point in subprocesses: SIGKILL + rerun, and torchrun with 2 ranks (gloo).

Both must leave a store whose every array equals an uninterrupted single-process run's.
All processes run with one thread so float results do not depend on thread scheduling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from synthetic import assert_same_store
from teacher_fixtures import precompute_args, precompute_inputs
from typer.testing import CliRunner
from zarr.errors import ZarrUserWarning

from cli import app
from logit_store import open_store

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def _cli(files: dict[str, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "cli", *precompute_args(files, str(out))]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    files = precompute_inputs(root, n_generic=400)
    files["reference"] = root / "reference.zarr"
    # the uninterrupted run in this process (one torch thread, as in the subprocesses): the
    # tests' subprocesses are the point, the reference needs no interpreter of its own
    result = CliRunner().invoke(app, precompute_args(files, str(files["reference"])))
    assert result.exit_code == 0, result.output
    return files


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(files, tmp_path: Path) -> None:
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        _cli(files, out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    done = 0
    while done == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        done = _completed_sequences(out)
    finished_early = proc.poll()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert finished_early is None and done > 0, (finished_early, done, stderr)
    partial = open_store(str(out))
    assert 0 < len(partial["generic"]) < 400 and not partial.complete
    rerun = subprocess.run(_cli(files, out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert open_store(str(out)).complete
    assert_same_store(str(out), str(files["reference"]))


def test_ctrl_c_stops_the_run_and_its_workers_at_once_and_a_rerun_finishes_it(
    files, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the process group, workers included): exit 130 within seconds with one
    line, no traceback; a rerun completes the store as an uninterrupted run would."""
    out = tmp_path / "interrupted.zarr"
    proc = subprocess.Popen(
        [*_cli(files, out), "--workers", "2"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    while _completed_sequences(out) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    interrupted = time.monotonic()
    proc.wait(timeout=60)
    took = time.monotonic() - interrupted
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == (
        "error: interrupted; what is finished is kept: rerun the same command to go on"
    )
    assert took < 4, f"{took:.1f} s to stop"  # the workers do not wait for unread results
    rerun = subprocess.run(_cli(files, out), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_store(str(out), str(files["reference"]))


def _completed_sequences(out: Path) -> int:
    try:
        with warnings.catch_warnings():  # a folder whose zarr.json the other process is writing
            warnings.simplefilter("ignore", ZarrUserWarning)
            return len(open_store(str(out))["generic"])
    except Exception:  # not created yet, or being created by the other process
        return 0


def test_torchrun_two_ranks_equals_single_process(files, tmp_path: Path) -> None:
    out = tmp_path / "ranks.zarr"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node",
        "2",
        "cli.py",
        *precompute_args(files, str(out)),
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_store(str(out), str(files["reference"]))

"""Crash safety and concurrency of the unit writer, with real processes and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import assert_same_store, synthetic_meta, synthetic_specs, write_synthetic

from logit_store import StoreMismatchError, create_store, open_store

WRITER = [sys.executable, str(Path(__file__).with_name("synthetic.py"))]


def _done_units(url: str) -> int:
    return sum(
        len(list((Path(url) / "corpora" / c / "done" / "c").glob("*"))) for c in ("generic", "task")
    )


@pytest.mark.parametrize("encoding", ["topk", "sampled"])
def test_sigkill_mid_write_then_resume_equals_uninterrupted(tmp_path: Path, encoding: str) -> None:
    reference, crashed = str(tmp_path / "ref.zarr"), str(tmp_path / "crashed.zarr")
    write_synthetic(reference, encoding)
    proc = subprocess.Popen([*WRITER, crashed, encoding, "--sleep", "0.3"])
    deadline = time.monotonic() + 60
    while _done_units(crashed) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = open_store(crashed)
    assert not partial.complete, "the writer was killed before finishing"
    before = len(partial["generic"]) + len(partial["task"])
    assert 0 < before < 70
    writer = create_store(crashed, synthetic_meta(encoding), synthetic_specs())
    pending = len(writer.pending("generic")) + len(writer.pending("task"))
    assert pending == 4 + 5 - _done_units(crashed), "only the missing units are redone"
    write_synthetic(crashed, encoding)
    assert open_store(crashed).complete
    assert_same_store(reference, crashed)


def test_two_processes_writing_disjoint_units(tmp_path: Path) -> None:
    reference, shared = str(tmp_path / "ref.zarr"), str(tmp_path / "shared.zarr")
    write_synthetic(reference)
    create_store(
        shared, synthetic_meta(), synthetic_specs()
    )  # one process creates, then both write
    procs = [
        subprocess.Popen([*WRITER, shared, "topk", "--units", units]) for units in ("0,2,4", "1,3")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert open_store(shared).complete
    assert_same_store(reference, shared)


def test_reopen_with_other_settings_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    with pytest.raises(StoreMismatchError, match="tokenizer_hash: stored 'aaaa"):
        create_store(url, synthetic_meta(tokenizer_hash="b" * 64), synthetic_specs())
    with pytest.raises(StoreMismatchError, match=r"task\.n_units"):
        create_store(url, synthetic_meta(), synthetic_specs(n_task=41))
    with pytest.raises(StoreMismatchError, match="k: stored 8 != expected 16"):
        open_store(url, expected=synthetic_meta(k=16))

"""`run_sweep` end to end on a tiny store: the grid and its baselines, results.jsonl, skip of
finished runs (same config hash), a changed setting as new runs, and resume after a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from sweep_stores import save_teacher, write_task_store

from logit_store import UserError
from student_train.configs import FinetuneTarget, SweepConfig
from student_train.runs import read_metrics
from student_train.sweep import run_sweep

DC, ICNER = FinetuneTarget("dc", "task/dc"), FinetuneTarget("icner", "task/icner")
QUIET = Console(quiet=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the sweep sets threads per job in this process


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sweep")
    url = str(root / "store.zarr")
    write_task_store(
        url, save_teacher(root / "teacher"), {"generic": 40, "task/dc": 40, "task/icner": 40}
    )
    return url


def _config(store_url: str, out: Path, **kw: Any) -> SweepConfig:
    fields: dict[str, Any] = dict(
        store=store_url, out=str(out), generic="generic", tasks=("task/dc", "task/icner"),
        task_shares=(0.0, 1.0), seeds=(0,), students=("from-teacher:1",), size=20, targets=(DC,),
        steps=2, finetune_steps=3, batch_tokens=256, device="cpu",
    )  # fmt: skip
    return SweepConfig(**{**fields, **kw})


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _stamps(out: Path) -> dict[str, int]:
    return {
        str(p.parent.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")
    }


def test_grid_baselines_results_and_rerun_skips(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cfg = _config(store_url, out)
    # 1 init + 2 distillations + 2 finetunes + random, init and teacher baselines
    summary = run_sweep(cfg, QUIET)
    assert (summary["runs"], summary["ran"], summary["skipped"]) == (8, 8, 0)
    rows = _rows(out)
    assert Counter(r["kind"] for r in rows) == {"init": 1, "distill": 2, "finetune": 5}
    finetunes = [r for r in rows if r["kind"] == "finetune"]
    assert Counter(r["role"] for r in finetunes) == {
        "distilled": 2,
        "random": 1,
        "init": 1,
        "teacher": 1,
    }
    for row in rows:  # each row carries its run folder's own config and metrics
        assert row["metrics"] == read_metrics(out / row["run"])
        assert row["config"]["config_hash"] == row["metrics"]["config_hash"]
        # one run identity: the planner names the folder by the hash the runner wrote
        assert row["run"].endswith("-" + row["config"]["config_hash"][:8])
    mixes = {r["mix"]: r["config"]["transfer"]["mix"] for r in rows if r["kind"] == "distill"}
    assert mixes == {0.0: [["generic", 1.0]], 1.0: [["task/dc", 0.5], ["task/icner", 0.5]]}
    distilled = {r["upstream"] for r in finetunes if r["role"] == "distilled"}
    assert distilled == {r["run"] for r in rows if r["kind"] == "distill"}
    assert {r["config"]["init"] for r in finetunes if r["role"] == "random"} == {"random"}
    assert all(r["corpus_source"] == "synthetic:task/dc" for r in finetunes)
    assert not list(out.glob("distill/*/checkpoint"))  # resume state dropped once complete

    stamps, lines = _stamps(out), (out / "results.jsonl").read_text()
    again = run_sweep(cfg, QUIET)
    assert (again["ran"], again["skipped"]) == (0, 8)
    assert _stamps(out) == stamps and (out / "results.jsonl").read_text() == lines

    longer = run_sweep(replace(cfg, steps=3), QUIET)  # new distillations and their finetunes
    assert (longer["ran"], longer["skipped"]) == (4, 4)
    assert len(list(out.glob("distill/*"))) == 4 and len(_rows(out)) == 8


def test_killed_sweep_resumes_only_missing_runs(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cfg = _config(store_url, out, steps=3)
    flags = [
        "--store", store_url, "--generic", "generic", "--task", "task/dc", "--task", "task/icner",
        "--task-share", "0,1", "--seeds", "0", "--student", "from-teacher:1", "--size", "20",
        "--finetune", "dc:task/dc", "--steps", "3", "--finetune-steps", "3",
        "--batch-tokens", "256", "--device", "cpu", "--out", str(out), "--jobs", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "sweep", *flags],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the pool workers die with it
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.jsonl").is_file() and len(_rows(out)) >= 3:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    finished = _stamps(out)
    assert 3 <= len(finished) < 8  # 1 init + 2 distillations + 2 finetunes + 3 baselines

    summary = run_sweep(cfg, QUIET)
    assert summary["ran"] == 8 - len(finished) and summary["skipped"] == len(finished)
    after = _stamps(out)
    assert len(after) == 8 and {run: after[run] for run in finished} == finished
    assert len(_rows(out)) == 8


def test_unusable_finetune_target_fails_before_any_distillation(
    store_url: str, tmp_path: Path
) -> None:
    """task/icner has no domain labels: DC on it is refused up front, nothing is trained."""
    out = tmp_path / "runs"
    bad = FinetuneTarget("dc", "task/icner")
    with pytest.raises(UserError, match=r"--finetune dc:task/icner: .* no domain label"):
        run_sweep(_config(store_url, out, targets=(bad,)), QUIET)
    assert not out.exists()

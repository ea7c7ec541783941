"""The Ray engines on a local Ray instance with 2 CPUs (one session for the module).

precompute: 2 CPU actors fill a store equal to a single-process run's, and complete a store a
partial run left; a resubmitted batch skips its units already written. sweep: every experiment
as a Ray task gives the local engine's metrics, and a rerun skips everything.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from sweep_stores import save_teacher, write_task_store
from synthetic import assert_same_store
from teacher_fixtures import precompute_inputs

from logit_store import UserError, open_store
from student_train.configs import FinetuneTarget, SweepConfig
from student_train.sweep import run_sweep
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.precompute import (
    compute_units,
    corpus_indexes,
    load_teacher_for,
    open_writer,
    run_precompute,
    unit_source,
)
from teacher_infer.ray_engine import UnitWorker, actor_resources, run_precompute_ray

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Single-process runs with one torch thread, as each 1-CPU actor has (bit-equal floats)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_local(one_thread: None) -> Iterator[None]:
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the local instance's workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray")
    files = precompute_inputs(root, n_generic=160)
    files["reference"] = root / "reference.zarr"
    run_precompute(_config(files, files["reference"]))
    return files


def _config(files: dict[str, Path], out: Path, **kw: object) -> PrecomputeConfig:
    base: dict[str, object] = {
        "teacher": str(files["bert"]),
        "corpora": (("generic", str(files["generic"])), ("task", str(files["task"]))),
        "out": str(out),
        "max_length": 48,
        "unit_size": 8,
        "token_budget": 256,
        "device": "cpu",
        "progress": False,
    }
    return PrecomputeConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_two_cpu_actors_equal_the_single_process_run(ray_local, files, tmp_path: Path) -> None:
    out = tmp_path / "ray.zarr"
    summary = run_precompute_ray(_config(files, out), actors=2)
    assert (summary["engine"], summary["world_size"], summary["device"]) == ("ray", 2, "cpu")
    corpora = summary["corpora"]
    assert all(c["units_computed"] == c["units"] > 1 for c in corpora.values())
    assert open_store(str(out)).complete
    assert_same_store(str(out), str(files["reference"]))
    again = run_precompute_ray(_config(files, out), actors=2)  # nothing pending: no actors
    assert again["tokens_computed"] == 0
    assert all(c["units_computed"] == 0 for c in again["corpora"].values())


def test_ray_completes_a_partial_store(ray_local, files, tmp_path: Path) -> None:
    out = tmp_path / "partial.zarr"
    config = _config(files, out)
    teacher, meta, masking = load_teacher_for(config, "cpu")
    indexes = corpus_indexes(config)
    writer = open_writer(config, meta, indexes)
    some = [(name, u.index) for name in indexes for u in writer.units(name)[::3]]  # a third
    compute_units(teacher, config, unit_source(teacher, config, masking, indexes), some, writer)
    summary = run_precompute_ray(config, actors=2)
    for name in indexes:
        c = summary["corpora"][name]
        assert c["units_computed"] == c["units"] - len(writer.units(name)[::3])
    assert_same_store(str(out), str(files["reference"]))


def test_a_resubmitted_batch_skips_units_already_written(files, tmp_path: Path) -> None:
    out = tmp_path / "retry.zarr"
    worker = UnitWorker(_config(files, out))  # the actor class, in this process
    batch = {"corpus": np.array(["task", "task"]), "unit": np.array([0, 1])}
    first = worker(batch)
    assert first["computed"].tolist() == [True, True] and first["records"].tolist() == [8, 8]
    again = worker({"corpus": np.array(["task", "task"]), "unit": np.array([1, 2])})
    assert again["computed"].tolist() == [False, True]
    assert again["tokens"][0] == first["tokens"][1]


def test_actor_resources_and_errors() -> None:
    node = {"CPU": 8.0}
    assert actor_resources({"CPU": 16.0}, [node, node], "auto", None) == (2, {"num_cpus": 8}, "cpu")
    assert actor_resources({"CPU": 16.0}, [node, node], "cpu", 3) == (3, {"num_cpus": 4}, "cpu")
    gpu = {"CPU": 16.0, "GPU": 8.0}
    assert actor_resources(gpu, [gpu], "auto", None) == (8, {"num_gpus": 1}, "cuda")
    assert actor_resources(gpu, [gpu], "cpu", 2) == (2, {"num_cpus": 8}, "cpu")
    with pytest.raises(UserError, match="has 8 GPUs"):
        actor_resources(gpu, [gpu], "cuda", 9)
    with pytest.raises(UserError, match="no GPUs"):
        actor_resources({"CPU": 8.0}, [node], "cuda", None)
    with pytest.raises(UserError, match="has 8 CPUs"):
        actor_resources({"CPU": 8.0}, [node], "cpu", 9)
    with pytest.raises(UserError, match=">= 1"):
        actor_resources({"CPU": 8.0}, [node], "cpu", 0)


def test_without_ray_the_engine_says_how_to_install(
    files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    with pytest.raises(UserError, match=re.escape("pip install 'kdcache[ray]'")):
        run_precompute_ray(_config(files, tmp_path / "x.zarr"))


def test_a_user_error_in_the_prepare_task_is_one_line(ray_local, files, tmp_path: Path) -> None:
    config = replace(_config(files, tmp_path / "x.zarr"), teacher=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="missing': no such folder") as err:
        run_precompute_ray(config, actors=1)
    assert "Traceback" not in str(err.value)


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _assert_same_results(left: Any, right: Any, where: str = "") -> None:
    """Equal rows up to run folders' location, timings and float32 rounding of losses."""
    if isinstance(left, list):
        assert len(left) == len(right), where
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_same_results(a, b, f"{where}[{i}]")
    elif isinstance(left, dict):
        keys = {k for k in left if not (k.endswith("_s") or k.endswith("seconds"))}
        assert keys == {k for k in right if not (k.endswith("_s") or k.endswith("seconds"))}
        for key in keys:
            _assert_same_results(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, float):
        assert math.isclose(left, right, rel_tol=1e-5), (where, left, right)
    elif isinstance(left, str):
        assert left.replace("runs-local", "runs") == right.replace("runs-ray", "runs"), where
    else:
        assert left == right, (where, left, right)


def test_sweep_on_ray_matches_the_local_engine_and_reruns_skip(ray_local, tmp_path: Path) -> None:
    url = str(tmp_path / "store.zarr")
    sizes = {"generic": 40, "task/dc": 40, "task/icner": 40}
    write_task_store(url, save_teacher(tmp_path / "teacher"), sizes)
    cfg = SweepConfig(
        store=url, out=str(tmp_path / "runs-local"), generic="generic",
        tasks=("task/dc", "task/icner"), task_shares=(0.0, 1.0), seeds=(0,),
        students=("from-teacher:1",), size=20, targets=(FinetuneTarget("dc", "task/dc"),),
        steps=2, finetune_steps=3, batch_tokens=256, device="cpu", jobs=2,
    )  # fmt: skip
    quiet = Console(quiet=True)
    local = run_sweep(cfg, quiet)  # 2 processes with 1 thread each, as the 1-CPU Ray tasks
    on_ray = replace(cfg, out=str(tmp_path / "runs-ray"), engine="ray")
    summary = run_sweep(on_ray, quiet)
    assert (summary["ran"], summary["workers"]) == (local["ran"], 2) and summary["ran"] == 8
    rows = _results(tmp_path / "runs-ray")
    assert [r["run"] for r in rows] == [r["run"] for r in _results(tmp_path / "runs-local")]
    _assert_same_results(_results(tmp_path / "runs-local"), rows)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs-ray").glob("*/*/metrics.json")}
    again = run_sweep(on_ray, quiet)
    assert (again["ran"], again["skipped"]) == (0, 8)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_sweep_engine_is_checked() -> None:
    with pytest.raises(UserError, match="--engine must be one of"):
        SweepConfig(
            store="s", out="o", generic="g", tasks=("t",), task_shares=(0.0,), seeds=(0,),
            students=("tiny",), size=1, engine="dask",
        )  # fmt: skip

"""End-to-end distillation: run folder layout, skip-if-done, resume after a kill, baselines."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from student_stores import synthetic_meta, write_store
from transformers import AutoModel, AutoModelForMaskedLM

from logit_store import StoreCorruptError, StoreMismatchError, UserError, open_store
from student_train.configs import DistillConfig
from student_train.distill import run_distill
from student_train.identity import run_identity
from student_train.runs import read_metrics
from student_train.transfer_set import TransferSetSpec


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = tmp_path_factory.mktemp("distill") / "store.zarr"
    write_store(url, {"generic": 96, "task": 64}, test_every=8)
    return str(url)


@pytest.fixture(scope="module")
def student_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cfg") / "student.json"
    path.write_text(json.dumps({"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}))
    return str(path)


def _config(store_url: str, student_json: str, out: Path, **kw: object) -> DistillConfig:
    fields: dict = dict(
        store=store_url,
        out=str(out),
        transfer=TransferSetSpec(mix=(("generic", 0.3), ("task", 0.7)), size=80, seed=1),
        student=student_json,
        steps=12,
        lr=3e-3,
        batch_tokens=256,
        num_workers=0,
        checkpoint_every=4,
        eval_sequences=16,
    )
    fields.update(kw)
    return DistillConfig(**fields)


def test_distill_writes_run_folder_and_skips_when_done(
    store_url: str, student_json: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(store_url, student_json, tmp_path / "run", temperature=2.0, alpha_mlm=0.5)
    run = run_distill(cfg)
    config = json.loads((run / "config.json").read_text())
    metrics = read_metrics(run)
    assert config["config_hash"] == metrics["config_hash"] and len(config["config_hash"]) == 16
    assert config["temperature"] == 2.0 and config["transfer"]["mix"] == [
        ["generic", 0.3],
        ["task", 0.7],
    ]
    assert metrics["steps"] == 12 and metrics["tokens_seen"] > 0
    assert metrics["transfer_set"]["generic"]["sequences"] == 24
    assert set(metrics["heldout"]) == {"generic", "task"}
    assert 0.0 <= metrics["heldout"]["task"]["accuracy"] <= 1.0
    encoder = AutoModel.from_pretrained(run / "model")
    assert encoder.config.hidden_size == 32 and encoder.config.vocab_size == 64
    mlm = AutoModelForMaskedLM.from_pretrained(run / "model")
    assert mlm.config.num_hidden_layers == 2
    stamp = (run / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    run_distill(cfg)
    assert "skip" in capsys.readouterr().err
    assert (run / "metrics.json").stat().st_mtime_ns == stamp


class _Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(
    store_url: str, student_json: str, tmp_path: Path
) -> None:
    whole = run_distill(_config(store_url, student_json, tmp_path / "whole"))

    def kill_at_step_6(step: int) -> None:
        if step == 6:  # the checkpoint of step 4 is the last one on disk
            raise _Killed

    cfg = _config(store_url, student_json, tmp_path / "killed")
    with pytest.raises(_Killed):
        run_distill(cfg, on_step=kill_at_step_6)
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run_distill(cfg)
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert read_metrics(whole)["tokens_seen"] == read_metrics(resumed)["tokens_seen"]


def test_hard_label_baseline_and_kd_learn(
    store_url: str, student_json: str, tmp_path: Path
) -> None:
    kd_run = run_distill(_config(store_url, student_json, tmp_path / "kd", steps=60))
    hard_run = run_distill(
        _config(store_url, student_json, tmp_path / "hard", steps=60, kd_weight=0.0, alpha_mlm=1.0)
    )
    kd, hard = read_metrics(kd_run), read_metrics(hard_run)
    assert hard["final_train"]["kd"] == 0.0 and hard["final_train"]["mlm"] > 0
    assert kd["final_train"]["mlm"] == 0.0 and kd["final_train"]["kd"] > 0
    # both learn the synthetic teacher's token mapping (uniform guess: log 64 = 4.16) ...
    for metrics in (kd, hard):
        assert metrics["heldout"]["task"]["mlm_ce"] < 4.0
    # ... and distillation fits the teacher's distribution better than hard labels do
    assert kd["heldout"]["task"]["kd"] < hard["heldout"]["task"]["kd"]
    assert kd["config_hash"] != hard["config_hash"]


def test_sampled_targets_store_distils(tmp_path: Path, student_json: str) -> None:
    url = str(tmp_path / "sampled.zarr")
    write_store(url, {"task": 48}, meta=synthetic_meta(encoding="sampled"), test_every=6)
    cfg = _config(url, student_json, tmp_path / "run", steps=6)
    cfg = replace(cfg, transfer=TransferSetSpec(mix=(("task", 1.0),), size=30))
    metrics = read_metrics(run_distill(cfg))
    assert (
        json.loads((tmp_path / "run" / "config.json").read_text())["store_identity"]["encoding"]
        == "sampled"
    )
    assert 0.0 < metrics["final_train"]["kd"] < 10.0 and metrics["heldout"]["task"]["positions"] > 0


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from student_train.configs import DistillConfig
from student_train.distill import run_distill
from student_train.transfer_set import TransferSetSpec
run_distill(DistillConfig(store=sys.argv[1], out=sys.argv[2], student=sys.argv[3], steps=30,
    lr=3e-3, batch_tokens=256, num_workers=0, checkpoint_every=2, eval_sequences=16,
    transfer=TransferSetSpec(mix=(("generic", 0.3), ("task", 0.7)), size=80, seed=1)))
"""


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(
    store_url: str, student_json: str, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, store_url, str(out), student_json],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stderr=subprocess.DEVNULL,
    )
    latest = out / "checkpoint" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 4:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "metrics.json").exists(), "the child finished before it was killed"
    kw: dict = dict(steps=30, checkpoint_every=2)
    resumed = run_distill(_config(store_url, student_json, out, **kw))
    whole = run_distill(_config(store_url, student_json, tmp_path / "whole", **kw))
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_refused_run_leaves_no_folder_and_a_changed_config_names_its_fields(
    store_url: str, student_json: str, tmp_path: Path
) -> None:
    """Bad flags fail before the run folder is claimed, so the corrected command can reuse
    --out; a zero budget is refused; an --out that is a file is a user error; a different
    config in a used folder is refused naming the fields that differ."""
    out = tmp_path / "run"
    bad = TransferSetSpec(mix=(("nope", 1.0),), size=10)
    with pytest.raises(UserError, match="matches no corpus"):
        run_distill(_config(store_url, student_json, out, transfer=bad))
    assert not out.exists()
    for budget in ({"steps": 0}, {"steps": None, "epochs": 0}):
        with pytest.raises(UserError, match="must be >= 1, got 0"):
            _config(store_url, student_json, out, **budget)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        run_distill(_config(store_url, student_json, tmp_path / "file", steps=1))
    run_distill(_config(store_url, student_json, out, steps=1))
    differ = r"differs in lr: stored 0.003, given 0.001; steps: stored 1, given 2\)"
    with pytest.raises(UserError, match=differ) as err:
        run_distill(_config(store_url, student_json, out, steps=2, lr=1e-3))
    assert "\n" not in str(err.value)


def test_out_inside_a_store_is_refused(store_url: str, student_json: str) -> None:
    for out in (Path(store_url), Path(store_url) / "run", Path(store_url) / "corpora" / "x"):
        with pytest.raises(UserError, match=f"--out {out}: inside the Zarr store {store_url};"):
            run_distill(_config(store_url, student_json, out, steps=1))
        assert not (out / "config.json").exists() and not (Path(store_url) / "run").exists()


def test_store_of_other_settings_is_refused_in_one_line(store_url: str) -> None:
    with pytest.raises(StoreMismatchError) as err:
        open_store(store_url, expected={"k": 16, "max_length": 64})
    assert str(err.value) == (
        f"store {store_url} was written with different settings: k: stored 8 != expected 16; "
        "max_length: stored 32 != expected 64. Use a new --out store, or rerun with the "
        "store's settings."
    )


def test_run_on_an_incomplete_store_is_not_the_completed_stores_run(
    tmp_path: Path, student_json: str
) -> None:
    """A run distilled while the store was incomplete hashes the corpus sizes it saw, so once
    the store is completed the same command is a new run, never a skip of the partial one."""
    partial, full = str(tmp_path / "partial.zarr"), str(tmp_path / "full.zarr")
    write_store(partial, {"generic": 40, "task": 40}, only_units=1)
    write_store(full, {"generic": 40, "task": 40})
    cfg = _config(partial, student_json, tmp_path / "run")
    seen = run_identity(cfg, open_store(partial))
    assert seen["incomplete_store"] == {"generic": 16, "task": 16}
    assert "incomplete_store" not in run_identity(cfg, open_store(full))


def test_runtime_fields_stay_out_of_the_run_identity(
    store_url: str, student_json: str, tmp_path: Path
) -> None:
    """Fields marked runtime (where and how a run executes) do not change its identity; a
    setting does, and the student file enters by its content."""
    store = open_store(store_url)
    cfg = _config(store_url, student_json, tmp_path / "a")
    moved = replace(
        cfg, out=str(tmp_path / "b"), device="cpu", num_workers=0, checkpoint_every=7, log_every=3
    )
    assert run_identity(moved, store) == run_identity(cfg, store)
    assert run_identity(replace(cfg, lr=2 * cfg.lr), store) != run_identity(cfg, store)
    assert run_identity(cfg, store)["student_file"] == json.loads(Path(student_json).read_text())
    fields = dataclasses.fields(DistillConfig)
    runtime = {f.name for f in fields if f.metadata.get("runtime")}
    assert runtime == {
        "out",
        "num_workers",
        "checkpoint_every",
        "log_every",
        "device",
        "storage_options",
    }


def test_cli_error_is_one_plain_line(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A user error prints verbatim (no ':-1:' emoji, no '[...]' eaten as markup), exit 2."""
    import cli

    def error(mix: str, student: str) -> str:
        monkeypatch.setattr(sys, "argv", [
            "kdcache", "distill", "--store", store_url, "--mix", mix, "--steps", "1",
            "--student", student, "--out", str(tmp_path / "run"),
        ])  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 2
        return " ".join(capsys.readouterr().err.split())

    assert error("generic=1", "from-teacher:-1").startswith("error: --student from-teacher:-1: ")
    assert "at 'g[bold]=1'" in error("g[bold]=1", "tiny")


def test_damaged_store_is_one_line_and_leaves_no_run_folder(
    tmp_path: Path,
    student_json: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Garbage array metadata, read only when batches are decoded: one line naming the store,
    from the main process, before the run folder is claimed (no DataLoader traceback)."""
    import cli

    url = tmp_path / "store.zarr"
    write_store(url, {"generic": 32})
    (url / "corpora" / "generic" / "target_values" / "zarr.json").write_text("garbage{")
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "kdcache", "distill", "--store", str(url), "--mix", "generic=1", "--size", "16",
        "--steps", "2", "--student", student_json, "--batch-tokens", "256", "--out", str(out),
    ])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: store {url}, corpus 'generic'")
    assert "Traceback" not in err and not out.exists()


def test_damaged_unit_met_by_a_worker_is_the_stores_one_line_error(
    tmp_path: Path, student_json: str
) -> None:
    """A damaged chunk of a later unit passes the up-front read; the DataLoader worker that
    meets it hands back the StoreCorruptError itself, not its traceback text."""
    url = tmp_path / "store.zarr"
    write_store(url, {"generic": 32})
    shards = sorted((url / "corpora" / "generic" / "target_values" / "c").rglob("*"))
    last = [p for p in shards if p.is_file()][-1]
    last.write_bytes(b"\0" * last.stat().st_size)
    spec = TransferSetSpec(mix=(("generic", 1.0),), size=32)
    cfg = _config(str(url), student_json, tmp_path / "run", transfer=spec, num_workers=1)
    with pytest.raises(StoreCorruptError) as caught:
        run_distill(cfg)
    assert "\n" not in str(caught.value) and "unit 1" in str(caught.value)

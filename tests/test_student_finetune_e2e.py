"""End-to-end finetuning from a real store: synthetic DC and ICNER corpora tokenised with the
packaged MiniLM tokenizer, a tiny BERT student (hidden 32, 2 layers), train on "train", evaluate
on "test" only, run-folder outputs, per-label test scores, skip-if-done, resume in a moved RUNS
folder and the random-init baseline."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from task_stores import build_task_store

from logit_store import UserError
from student_train.configs import FinetuneConfig
from student_train.finetune import run_finetune


@pytest.fixture(scope="module")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A store with task/dc and task/icner corpora and a tiny student saved as a run folder."""
    return build_task_store(tmp_path_factory.mktemp("finetune"))


def _config(task_store: tuple[str, Path], out: Path, **kw: Any) -> FinetuneConfig:
    url, run = task_store
    run = kw.pop("run", run)
    base: dict[str, Any] = {"steps": 60, "lr": 2e-3, "batch_size": 16, "warmup_ratio": 0.1}
    return FinetuneConfig(student=str(run), store=url, out=str(out), **{**base, **kw})


def _check_per_label(metrics: dict[str, Any], overall: str, sizes: dict[str, int]) -> None:
    """per_label holds every gold test label with its count; the count-weighted mean of the
    per-label accuracies is the overall accuracy."""
    per_label = metrics["per_label"]
    assert {label: v["n"] for label, v in per_label.items()} == sizes
    assert sum(sizes.values()) == metrics["n_test"]
    weighted = sum(v["n"] * v["accuracy"] for v in per_label.values()) / metrics["n_test"]
    assert weighted == pytest.approx(metrics[overall], abs=1e-12)
    assert all(0 <= v["accuracy"] <= 1 for v in per_label.values())


def test_dc_finetune_beats_chance_and_writes_run(
    task_store: tuple[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "dc"
    metrics = run_finetune(_config(task_store, out, task="dc", corpus="task/dc"))
    assert metrics["n_train"] == 90 and metrics["n_test"] == 31  # "dev" is never used
    assert metrics["test_unknown_labels"] == 1  # "weather" never appears in train
    assert metrics["accuracy"] > 0.6  # chance is 1/3
    assert 0 < metrics["macro_f1"] <= 1
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["accuracy"] == metrics["accuracy"]
    config = json.loads((out / "config.json").read_text())
    assert config["config_hash"] == metrics["config_hash"]
    assert config["student_fingerprint"] == "run:abc123"
    assert (out / "model" / "model.safetensors").is_file()
    _check_per_label(
        stored, "accuracy", {"business": 10, "politics": 10, "sport": 10, "weather": 1}
    )

    stamp = (out / "metrics.json").stat().st_mtime_ns
    again = run_finetune(_config(task_store, out, task="dc", corpus="task/dc"))
    assert again == stored and (out / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="holds a run"):
        run_finetune(_config(task_store, out, task="dc", corpus="task/dc", seed=1))


def test_icner_finetune_metrics_and_random_baseline(
    task_store: tuple[str, Path], tmp_path: Path
) -> None:
    metrics = run_finetune(
        _config(task_store, tmp_path / "ic", task="icner", corpus="task/icner", steps=100, lr=3e-3)
    )
    assert metrics["n_train"] == 90 and metrics["n_test"] == 24
    assert metrics["label_names"]["tags"] == ["B-fromloc", "B-toloc", "O"]
    assert metrics["intent_accuracy"] > 0.75  # the first word decides the intent
    for key in ("slot_f1", "slot_precision", "slot_recall", "exact_match"):
        assert 0 <= metrics[key] <= 1
    assert metrics["exact_match"] <= metrics["intent_accuracy"]
    assert metrics["semantic_error_rate"] >= 0
    assert metrics["truncated_words"] == 0
    _check_per_label(metrics, "intent_accuracy", {"airfare": 12, "flight": 12})

    baseline = run_finetune(
        _config(task_store, tmp_path / "ic_rand", task="icner", corpus="task/icner",
                steps=80, init="random")
    )  # fmt: skip
    assert baseline["config_hash"] != metrics["config_hash"]
    assert baseline["n_test"] == 24


def test_dc_on_corpus_without_domains_is_a_user_error(
    task_store: tuple[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="no domain label"):
        run_finetune(_config(task_store, tmp_path / "bad", task="dc", corpus="task/icner"))


def test_meaningless_or_misread_runs_are_refused_before_claiming_a_folder(
    task_store: tuple[str, Path], tmp_path: Path
) -> None:
    """A single-domain DC corpus (accuracy would be 1 by construction) and a student distilled
    with another tokenizer (token ids misread) are refused, and the refused run leaves no
    folder behind; with --init random the tokenizer does not matter."""
    with pytest.raises(UserError, match="single domain"):
        run_finetune(_config(task_store, tmp_path / "one", task="dc", corpus="task/one"))
    other = tmp_path / "other"
    shutil.copytree(task_store[1], other)
    record = {"config_hash": "def456", "store_identity": {"tokenizer_hash": "another"}}
    (other / "config.json").write_text(json.dumps(record))
    cfg = _config(task_store, tmp_path / "x", run=other, task="dc", corpus="task/dc", steps=1)
    with pytest.raises(UserError, match="tokenizer differs from the store's"):
        run_finetune(cfg)
    assert not (tmp_path / "one").exists() and not (tmp_path / "x").exists()
    assert run_finetune(replace(cfg, init="random"))["steps"] == 1


def test_teacher_baseline_uses_the_store_teacher(
    task_store: tuple[str, Path], tmp_path: Path
) -> None:
    cfg = _config(task_store, tmp_path / "t", task="dc", corpus="task/dc", steps=3)
    metrics = run_finetune(replace(cfg, student="teacher"))
    assert metrics["student"] == str(task_store[1] / "model")
    assert metrics["steps"] == 3 and metrics["n_test"] == 31


def test_moved_runs_folder_resumes(task_store: tuple[str, Path], tmp_path: Path) -> None:
    """The config hash names the student by its fingerprint, not its path: after moving a RUNS
    folder (student run + finetune run), a completed finetune is skipped and an unfinished one
    (config.json without metrics.json) restarts instead of being refused."""
    first = tmp_path / "first"
    shutil.copytree(task_store[1], first / "student")
    cfg = _config(task_store, first / "dc", run=first / "student", task="dc", corpus="task/dc",
                  steps=2)  # fmt: skip
    done = run_finetune(cfg)
    shutil.copytree(first / "dc", first / "killed")
    (first / "killed" / "metrics.json").unlink()
    moved = tmp_path / "moved"
    shutil.move(first, moved)

    def in_moved(out: str) -> FinetuneConfig:
        return replace(cfg, student=str(moved / "student"), out=str(moved / out))

    stamp = (moved / "dc" / "metrics.json").stat().st_mtime_ns
    assert run_finetune(in_moved("dc")) == done
    assert (moved / "dc" / "metrics.json").stat().st_mtime_ns == stamp
    resumed = run_finetune(in_moved("killed"))
    assert resumed["config_hash"] == done["config_hash"]
    assert resumed["student"] == str(moved / "student" / "model")

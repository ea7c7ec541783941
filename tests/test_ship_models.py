"""Students you can ship: every finetune leaves Hugging Face folders that plain transformers
reload to kdcache's own test predictions (DC; ICNER intents and first-sub-token word slots, and
the one-pass joint recipe), with the store's tokenizer; a rerun keeps the model, a finished run
without one is redone; `load_predictor` and `kdcache predict` on good and hostile input."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_calls import kdcache
from task_stores import build_task_store
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ModernBertConfig,
    RobertaConfig,
)

from logit_store import UserError, open_store, tokenizer_hash
from student_train.configs import FinetuneConfig
from student_train.finetune import run_finetune
from student_train.heads import check_token_classifier
from student_train.predict import load_predictor
from student_train.task_data import read_task_split, word_level_tags

BUDGET: dict[str, dict[str, Any]] = {
    "dc": {"corpus": "task/dc", "steps": 60, "lr": 2e-3},
    "icner": {"corpus": "task/icner", "steps": 100, "lr": 3e-3},
}


def _config(url: str, run: Path, out: Path, task: str) -> FinetuneConfig:
    return FinetuneConfig(
        student=str(run), store=url, out=str(out), task=task, batch_size=16,  # type: ignore[arg-type]
        **BUDGET[task],
    )  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny student finetuned on DC and on ICNER: {"url", "run", "dc": OUT, "icner": OUT}."""
    root = tmp_path_factory.mktemp("ship")
    url, run = build_task_store(root)
    found: dict[str, Any] = {"url": url, "run": run}
    for task in BUDGET:
        run_finetune(_config(url, run, root / task, task))
        found[task] = root / task
    return found


def _test_split(url: str, task: str) -> Any:
    store = open_store(url)
    name = BUDGET[task]["corpus"]
    return read_task_split(store[name], name, task, "test")  # type: ignore[arg-type]


def _stored_predictions(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]


def _forward(model: Any, ids: np.ndarray) -> Any:
    """One unpadded sequence through a plain transformers model, no grad."""
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids)[None], output_hidden_states=True)


def test_dc_model_reloads_with_plain_transformers(finetuned: dict[str, Any]) -> None:
    folder = finetuned["dc"] / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert model.config.id2label == {0: "business", 1: "politics", 2: "sport"}
    assert model.config.label2id == {"business": 0, "politics": 1, "sport": 2}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 30522  # the store's tokenizer, not a 5-token default
    assert tokenizer_hash(tokenizer) == open_store(finetuned["url"]).meta.tokenizer_hash
    split, stored = _test_split(finetuned["url"], "dc"), _stored_predictions(finetuned["dc"])
    assert len(stored) == len(split) == 31
    for ids, row in zip(split.input_ids, stored, strict=True):
        logits = _forward(model, ids).logits[0]
        assert torch.allclose(logits, torch.tensor(row["logits"]), atol=1e-4)
        assert model.config.id2label[int(logits.argmax())] == row["predicted"]
    metrics = json.loads((finetuned["dc"] / "metrics.json").read_text())
    hits = [row["predicted"] == row["label"] for row in stored]
    assert metrics["accuracy"] == pytest.approx(np.mean(hits)) and metrics["accuracy"] > 0.5


def test_icner_intents_and_slots_reload_as_standard_classes(finetuned: dict[str, Any]) -> None:
    """Intents: AutoModelForSequenceClassification(model/); slots:
    AutoModelForTokenClassification(model/slots/) read at each word's first sub-token; the
    joint one-pass recipe (intent model's last hidden states → slots.classifier) equals the
    token model run on its own."""
    folder = finetuned["icner"] / "model"
    intents = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    slots = AutoModelForTokenClassification.from_pretrained(folder / "slots").eval()
    assert set(intents.config.label2id) == {"airfare", "flight"}
    assert slots.config.id2label == {0: "B-fromloc", 1: "B-toloc", 2: "O"}
    assert len(AutoTokenizer.from_pretrained(folder / "slots")) == 30522
    split, stored = _test_split(finetuned["url"], "icner"), _stored_predictions(finetuned["icner"])
    assert len(stored) == len(split) == 24
    for r, row in enumerate(stored):
        ids = split.input_ids[r]
        out = _forward(intents, ids)
        assert torch.allclose(out.logits[0], torch.tensor(row["logits"]), atol=1e-4)
        assert intents.config.id2label[int(out.logits[0].argmax())] == row["predicted"]
        alone = _forward(slots, ids).logits[0]
        joint = slots.classifier(out.hidden_states[-1])[0]
        assert torch.allclose(joint, alone, atol=1e-5)
        token_tags = [slots.config.id2label[int(t)] for t in alone.argmax(-1)]
        tags, _ = word_level_tags(split.word_ids[r], token_tags, len(row["tags"]))
        assert tags == row["predicted_tags"]
    metrics = json.loads((finetuned["icner"] / "metrics.json").read_text())
    assert metrics["intent_accuracy"] > 0.75 and metrics["slot_f1"] > 0.5


def test_predictor_gives_the_evaluated_predictions_with_word_spans(
    finetuned: dict[str, Any],
) -> None:
    """load_predictor on the test texts (re-tokenised from their words) predicts what
    evaluation recorded; slots are word spans [start, end) of the predicted BIO tags."""
    store = open_store(finetuned["url"])
    for task in BUDGET:
        corpus = store[BUDGET[task]["corpus"]]
        split = _test_split(finetuned["url"], task)
        texts = [corpus.column("text")[i] for i in split.indices.tolist()]
        predictor = load_predictor(finetuned[task])
        results = predictor.predict(texts)
        key = "domain" if task == "dc" else "intent"
        stored_rows = _stored_predictions(finetuned[task])
        for text, row, stored in zip(texts, results, stored_rows, strict=True):
            assert row[key] == stored["predicted"]
            expected = float(torch.softmax(torch.tensor(stored["logits"]), -1).max())
            assert row["probability"] == pytest.approx(expected, abs=1e-4)
            if task == "icner":
                assert row["tags"] == stored["predicted_tags"]
                words = text.split()
                for slot in row["slots"]:
                    assert slot["text"] == " ".join(words[slot["start"] : slot["end"]])
                    assert row["tags"][slot["start"]] == f"B-{slot['slot']}"
    (first,) = load_predictor(finetuned["icner"]).predict(["show flights from boston to denver"])
    assert [(s["start"], s["end"]) for s in first["slots"]] == [(3, 4), (5, 6)]
    assert [s["text"] for s in first["slots"]] == ["boston", "denver"]


def test_rerun_keeps_the_model_and_a_run_without_one_is_redone(
    finetuned: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "dc"
    shutil.copytree(finetuned["dc"], out)
    cfg = _config(finetuned["url"], finetuned["run"], out, "dc")
    weights = out / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert (
        run_finetune(cfg)["config_hash"]
        == json.loads((out / "config.json").read_text())["config_hash"]
    )
    assert weights.stat().st_mtime_ns == stamp  # skipped: the model is left in place
    shutil.rmtree(out / "model")  # a finished run folder from before models were saved
    metrics = run_finetune(cfg)
    assert weights.is_file() and metrics["model"] == str(out / "model")
    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert reloaded.config.kdcache["config_hash"] == metrics["config_hash"]


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_predict_cli_files_stdin_and_hostile_input(
    finetuned: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    model = str(finetuned["icner"])
    good = tmp_path / "in.jsonl"
    good.write_text(
        '{"text": "show flights from boston to denver"}\n'
        "not json\n"
        '{"no_text": 1}\n'
        '{"text": "what fare from miami to dallas", "id": "q2"}\n'
    )
    out = tmp_path / "preds.jsonl"
    code, _, err = kdcache(monkeypatch, capsys, ["predict", "--model", model, "--input", str(good),
                                              "--out", str(out)])  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows][1] == "q2" and len(rows) == 2
    assert rows[0]["intent"] in {"flight", "airfare"} and 0 < rows[0]["probability"] <= 1
    assert {"slot", "text", "start", "end"} <= set(rows[0]["slots"][0])

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"stock market\n\n\xff\xfe\n")))
    code, stdout, err = kdcache(monkeypatch, capsys, ["predict", "--model", str(finetuned["dc"]),
                                                   "--input", "-"])  # fmt: skip
    assert code == 0, err
    (row,) = [json.loads(line) for line in stdout.splitlines()]
    assert row["id"] == "<stdin>:1" and row["domain"] in {"business", "politics", "sport"}
    assert "slots" not in row
    assert "empty_line: 1" in err and "invalid_utf8: 1" in err

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("{oops\n[1, 2]\n")
    for args, expected in (
        (["--input", str(empty)], f"{empty}: no text could be read"),
        (["--input", str(bad_json)], "malformed_json"),
        (["--input", str(tmp_path / "missing.txt")], "no such file or folder"),
        (["--input", str(good), "--out", str(tmp_path)], "is a folder"),
    ):
        code, _, err = kdcache(monkeypatch, capsys, ["predict", "--model", model, *args])
        assert code == 2 and expected in _one_error(err), err
    code, _, err = kdcache(
        monkeypatch, capsys, ["predict", "--model", str(tmp_path), "--input", "-"]
    )
    assert code == 2 and "not a finetuned kdcache model" in _one_error(err)
    (tmp_path / "config.json").write_text("{oops")  # a damaged model folder
    code, _, err = kdcache(
        monkeypatch, capsys, ["predict", "--model", str(tmp_path), "--input", "-"]
    )
    assert code == 2 and f"{tmp_path / 'config.json'}: not a readable" in _one_error(err)


def test_icner_heads_are_checked_per_architecture() -> None:
    """The slot head must be AutoModelForTokenClassification's single Linear: BERT, DistilBERT,
    RoBERTa and DeBERTa have it; ModernBERT's extra prediction head is refused in one line."""
    for config in (BertConfig(), DistilBertConfig(), RobertaConfig(), DebertaV2Config()):
        check_token_classifier(config)
    with pytest.raises(UserError, match="modernbert: its token-classification head"):
        check_token_classifier(ModernBertConfig())

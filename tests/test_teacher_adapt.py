"""Teacher adaptation: a head-less encoder gets an MLM head, learns, and becomes a teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from teacher_fixtures import TINY, minilm_dir, write_tagged_corpus
from transformers import AutoTokenizer, BertConfig, BertModel
from typer.testing import CliRunner

import cli
from teacher_infer.adapt import AdaptConfig, run_adapt
from teacher_infer.teacher import load_teacher


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare BertModel checkpoint (like the packaged MiniLM): no MLM head weights."""
    path = tmp_path_factory.mktemp("adapt") / "base"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    BertModel(
        BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY)
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_adapt_initialises_a_head_learns_and_saves_a_teacher(base: Path, tmp_path: Path) -> None:
    corpus = write_tagged_corpus(tmp_path / "task.jsonl", 200)
    config = AdaptConfig(
        base=str(base), corpora=(("task", str(corpus)),), out=str(tmp_path / "t"),
        steps=60, batch_size=16, lr=3e-3, max_length=32, device="cpu",
    )  # fmt: skip
    metrics = run_adapt(config)
    teacher = load_teacher(str(tmp_path / "t"), "mlm", "cpu")  # refuses a random head
    assert "cls.predictions.transform.dense.weight" in metrics["initialised_weights"]
    before, after = metrics["before"]["task"], metrics["after"]["task"]
    assert before["positions"] == after["positions"] > 0
    assert after["cross_entropy"] < before["cross_entropy"] - 2.0
    assert after["accuracy"] > before["accuracy"]
    assert (
        json.loads((tmp_path / "t" / "adapt_metrics.json").read_text())["after"] == metrics["after"]
    )
    assert (tmp_path / "t" / "model.safetensors").exists()
    assert teacher.head_at_positions


def test_head_only_keeps_the_encoder_and_cli_prints_metrics(base: Path, tmp_path: Path) -> None:
    corpus = write_tagged_corpus(tmp_path / "task.jsonl", 60)
    args = ["teacher-adapt", "--base", str(base), "--corpus", f"task={corpus}"]
    args += ["--out", str(tmp_path / "h"), "--steps", "5", "--head-only", "--device", "cpu"]
    result = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    words = result.output.split()  # rich wraps the table at the console width
    assert "cross-entropy" in words and "after" in words and "10." in result.output
    old = BertModel.from_pretrained(base).state_dict()
    new = BertModel.from_pretrained(tmp_path / "h").state_dict()
    shared = [name for name in old if not name.startswith("pooler.")]  # MLM models have no pooler
    assert shared and all(torch.equal(old[name], new[name]) for name in shared)

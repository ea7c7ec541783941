"""A tokenizer that does not fit the model's vocabulary is refused wherever one is loaded.

A teacher folder with config.json and weights but no tokenizer files makes transformers build a
5-token tokenizer: every text would become [UNK]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from student_stores import synthetic_meta
from teacher_fixtures import minilm_dir, save_tiny_bert_mlm, write_text_corpus
from transformers import AutoTokenizer
from typer.testing import CliRunner

import cli
from logit_store import UserError
from similarity.encoder import SentenceEncoder
from student_train.students import load_store_tokenizer
from teacher_infer.adapt import run_adapt
from teacher_infer.configs import AdaptConfig
from teacher_infer.teacher import check_tokenizer_fits, load_teacher

NO_FIT = r"its tokenizer has 5 tokens but the model's vocabulary has 30522"


@pytest.fixture(scope="module")
def bare_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT MLM (vocabulary 30522) folder holding only config.json and the weights."""
    root = tmp_path_factory.mktemp("bare")
    full = save_tiny_bert_mlm(root / "full")
    bare = root / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(full / name, bare / name)
    return bare


def test_real_tokenizers_fit_and_the_fallback_does_not(bare_teacher: Path) -> None:
    minilm = AutoTokenizer.from_pretrained(minilm_dir())
    check_tokenizer_fits(minilm, 30522, "x")
    check_tokenizer_fits(minilm, 30522 + 70, "x")  # embeddings padded past the tokenizer
    with pytest.raises(UserError, match="has 30522 tokens but the model's vocabulary has 30000"):
        check_tokenizer_fits(minilm, 30000, "x")
    fallback = AutoTokenizer.from_pretrained(bare_teacher)
    with pytest.raises(UserError, match=NO_FIT):
        check_tokenizer_fits(fallback, 30522, "x")


def test_precompute_refuses_a_teacher_without_tokenizer_files(
    bare_teacher: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match=NO_FIT):
        load_teacher(str(bare_teacher), device="cpu")
    corpus = write_text_corpus(tmp_path / "g.txt", 10)
    out = tmp_path / "s.zarr"
    args = ["precompute", "--teacher", str(bare_teacher), "--corpus", f"g={corpus}"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(out), "--device", "cpu"])
    assert isinstance(result.exception, UserError), result.output
    assert "\n" not in str(result.exception) and "--teacher" in str(result.exception)
    assert not out.exists()


def test_teacher_adapt_refuses_a_base_without_tokenizer_files(
    bare_teacher: Path, tmp_path: Path
) -> None:
    corpus = write_text_corpus(tmp_path / "g.txt", 10)
    config = AdaptConfig(str(bare_teacher), (("g", str(corpus)),), str(tmp_path / "out"))
    with pytest.raises(UserError, match=f"--base .*{NO_FIT}"):
        run_adapt(config)
    assert not (tmp_path / "out").exists()


def test_student_side_refuses_a_store_tokenizer_folder_without_tokenizer_files(
    bare_teacher: Path,
) -> None:
    meta = synthetic_meta(tokenizer_id=str(bare_teacher), vocab_size=30522)
    with pytest.raises(UserError, match=NO_FIT):
        load_store_tokenizer(meta)


def test_similarity_refuses_an_encoder_without_tokenizer_files(bare_teacher: Path) -> None:
    with pytest.raises(UserError, match=f"--encoder .*{NO_FIT}"):
        SentenceEncoder(str(bare_teacher), batch_size=8, max_length=32, threads=1)

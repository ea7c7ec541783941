"""`run_precompute` end to end: store contents vs a dense teacher, refusal, task mode, sampling."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from teacher_fixtures import (
    save_tiny_bert_mlm,
    save_tiny_token_classifier,
    write_tagged_corpus,
    write_text_corpus,
)
from transformers import AutoModelForMaskedLM
from typer.testing import CliRunner

import cli
from logit_store import StoreMismatchError, UserError, open_store
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.precompute import run_precompute
from teacher_infer.progress import UnitProgress


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teacher")
    return {
        "bert": save_tiny_bert_mlm(root / "bert"),
        "tokcls": save_tiny_token_classifier(root / "tokcls", ["O", "B-city"]),
        "generic": write_text_corpus(root / "generic.txt", 120),
        "task": write_tagged_corpus(root / "task.jsonl", 40),
    }


def _config(files: dict[str, Path], out: Path, **kw) -> PrecomputeConfig:
    base = {
        "teacher": str(files["bert"]),
        "corpora": (("generic", str(files["generic"])), ("task", str(files["task"]))),
        "out": str(out),
        "max_length": 32,
        "unit_size": 25,
        "token_budget": 200,
        "device": "cpu",
        "progress": False,
    }
    return PrecomputeConfig(**{**base, **kw})


def test_store_holds_the_dense_teachers_topk_and_tail(files, tmp_path: Path) -> None:
    summary = run_precompute(_config(files, tmp_path / "s.zarr", value_dtype="fp16"))
    assert summary["corpora"]["generic"]["skipped"]["truncated"] > 0
    assert summary["head_at_positions"] is True
    store = open_store(str(tmp_path / "s.zarr"))
    assert store.complete and len(store["generic"]) == summary["corpora"]["generic"]["sequences"]
    model = AutoModelForMaskedLM.from_pretrained(files["bert"]).eval()
    corpus = store["task"]
    for i in (0, 7, len(corpus) - 1):
        rec = corpus[i]
        seen = rec.input_ids.copy()
        seen[rec.positions] = rec.masked_ids
        with torch.inference_mode():
            logits = model(input_ids=torch.as_tensor(seen)[None]).logits[0, rec.positions]
        lp = torch.log_softmax(logits.double(), -1)
        top, ids = lp.topk(32, -1)
        tail = torch.logsumexp(lp.scatter(-1, ids, float("-inf")), -1)
        for row in range(len(rec.positions)):  # the store keeps ids ascending: compare as maps
            stored = dict(zip(rec.ids[row].tolist(), rec.logprobs[row].tolist(), strict=True))
            assert set(stored) == set(ids[row].tolist())
            want = [stored[j] for j in ids[row].tolist()]
            assert np.allclose(want, top[row].numpy(), atol=2e-2)  # fp16 values
        assert np.allclose(rec.tail_logmass, tail.numpy(), atol=1e-4)
        assert rec.info.tags is not None and rec.word_ids.max() == len(rec.info.tags) - 1


def test_resume_is_refused_with_a_changed_setting_or_teacher(files, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    run_precompute(_config(files, out))
    again = run_precompute(_config(files, out))
    assert all(c["units_computed"] == 0 for c in again["corpora"].values())
    with pytest.raises(StoreMismatchError, match="k: stored 32 != expected 16"):
        run_precompute(_config(files, out, k=16))
    with pytest.raises(StoreMismatchError, match="masking"):
        run_precompute(_config(files, out, mask_prob=0.2))
    other = save_tiny_bert_mlm(tmp_path / "other", seed=1)
    with pytest.raises(StoreMismatchError, match="teacher_hash"):
        run_precompute(_config(files, out, teacher=str(other)))
    moved = shutil.copytree(files["bert"], tmp_path / "moved-teacher")  # same weights, new path
    assert all(
        c["units_computed"] == 0
        for c in run_precompute(_config(files, out, teacher=str(moved)))["corpora"].values()
    )


def test_task_mode_with_a_token_classification_head(files, tmp_path: Path) -> None:
    out = tmp_path / "t.zarr"
    cfg = _config(
        files,
        out,
        teacher=str(files["tokcls"]),
        mode="task",
        corpora=(("task", str(files["task"])),),
    )
    run_precompute(cfg)
    store = open_store(str(out))
    assert store.meta.task_kind == "token" and store.meta.label_names == ("O", "B-city")
    rec = store["task"][3]
    assert np.array_equal(rec.positions, np.flatnonzero(rec.word_ids >= 0))
    assert np.array_equal(rec.masked_ids, rec.input_ids[rec.positions])  # nothing masked
    assert rec.ids.shape == (len(rec.positions), 2) and np.isneginf(rec.tail_logmass).all()
    assert np.allclose(np.exp(rec.logprobs).sum(-1), 1.0, atol=0.05)


def test_sampled_encoding_counts_sum_to_n(files, tmp_path: Path) -> None:
    out = tmp_path / "m.zarr"
    run_precompute(
        _config(
            files, out, encoding="sampled", n_samples=40, corpora=(("task", str(files["task"])),)
        )
    )
    rec = open_store(str(out))["task"][0]
    assert (rec.counts.sum(-1) == 40).all() and rec.ids.shape[1] <= 40
    # --k does not apply to sampled targets: a rerun with another --k resumes, not refused
    again = _config(
        files, out, encoding="sampled", n_samples=40, k=7, corpora=(("task", str(files["task"])),)
    )
    assert run_precompute(again)["corpora"]["task"]["units_computed"] == 0


def test_config_and_cli_errors_are_user_errors(files, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--encoding"):
        _config(files, tmp_path / "x", encoding="dense")
    with pytest.raises(UserError, match="head would be random"):
        run_precompute(_config(files, tmp_path / "x", teacher=str(files["tokcls"])))
    result = CliRunner().invoke(cli.app, ["precompute", "--help"], env={"COLUMNS": "200"})
    assert "truncated and counted" in " ".join(result.output.split())


def test_max_length_beyond_the_teachers_positions_is_refused_before_any_write(
    files, tmp_path: Path
) -> None:
    out = tmp_path / "s.zarr"
    with pytest.raises(UserError, match=r"--max-length 200 is longer than .* \(128 tokens\)"):
        run_precompute(_config(files, out, max_length=200, token_budget=400))
    assert not out.exists()


def test_teacher_paths_that_hold_no_model_are_named(files, tmp_path: Path) -> None:
    for teacher, message in (
        (tmp_path / "nope", "no such folder"),
        (files["generic"], "is a file"),
        (tmp_path, "holds no model"),
    ):
        with pytest.raises(UserError, match=message):
            run_precompute(_config(files, tmp_path / "s.zarr", teacher=str(teacher)))


def test_skip_examples_reach_the_store_and_the_summary(files, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"show me flights\n\nplay \xff music\n" + b"fare " * 80 + b"\n")
    out = tmp_path / "s.zarr"
    config = _config(files, out, corpora=(("c", str(corpus)),))
    summary = run_precompute(config)
    expected = [f"{corpus}:2: empty_line", f"{corpus}:3: invalid_utf8", f"{corpus}:4: truncated"]
    assert [e.split(": b")[0] for e in summary["corpora"]["c"]["skip_examples"]] == expected
    shown = CliRunner().invoke(cli.app, ["inspect", str(out)], env={"COLUMNS": "60"})
    flat = "".join(shown.output.replace("│", "").split())  # a narrow table wraps, never crops
    assert f"c:{corpus}:4:truncated" in flat and "invalid_utf8=1,truncated=1" in flat


def test_the_progress_rate_counts_from_the_end_of_the_previous_unit() -> None:
    """The first unit's tokens/s is its tokens over the time it took, not over ~0 s."""
    out = io.StringIO()
    work = {"generic": [100, 100], "task": [50]}
    with UnitProgress(work, Console(file=out, force_terminal=False), enabled=True) as progress:
        time.sleep(0.05)
        progress.ticker("generic")(100, 1_000)
        time.sleep(0.05)
        progress.ticker("task")(50, 500)
        rates = {t.description: t.fields["rate"] for t in progress.progress.tasks}
    for name, tokens in (("generic", 1_000), ("task", 500)):
        rate = float(rates[name].replace(",", ""))
        assert tokens / 0.5 < rate <= tokens / 0.05, (name, rate)

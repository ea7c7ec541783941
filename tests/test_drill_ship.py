"""Acceptance drill, shipping a student: the saved tokenizer truncates a long text to the length
the model was finetuned at, so plain transformers runs it and agrees with `kdcache predict`;
predict streams its input in chunks (same output as predicting it whole), counts DC words past
max_length and leaves no partial --out; a failed ONNX write (disk full) leaves no partial file."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_calls import kdcache
from task_stores import finetune_briefly
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import student_train.predict as predict_module
import teacher_infer.corpora as corpora
from student_train.configs import PredictConfig
from student_train.predict import load_predictor, run_predict
from teacher_infer.corpora import read_corpus

WORDS = ["the", "market", "rose", "as", "the", "team", "won", "the", "final", "and", "voters"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny student (64 positions; the store's max_length is 32) finetuned a few steps."""
    root = tmp_path_factory.mktemp("drill_ship")
    return finetune_briefly(root)


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def _write_lines(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 50))) for _ in range(n)]
    path.write_text("\n".join(texts) + "\n")


def test_plain_transformers_truncates_a_long_text_like_predict(
    finetuned: dict[str, Path], tmp_path: Path
) -> None:
    long_text = " ".join(WORDS * 20)  # ~300 tokens: past the model's 64 positions
    for task in ("dc", "icner"):
        folder = finetuned[task] / "model"
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.model_max_length == 32  # the store's max_length, not 512
        if task == "icner":
            assert AutoTokenizer.from_pretrained(folder / "slots").model_max_length == 32
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        enc = tok(long_text, truncation=True, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits, dim=-1)[0]
        (row,) = load_predictor(finetuned[task]).predict([long_text])
        best = int(probs.argmax())
        assert row["domain" if task == "dc" else "intent"] == model.config.id2label[best]
        assert row["probability"] == pytest.approx(float(probs[best]), abs=1e-5)


def _whole_input_output(model: Path, source: str) -> str:
    """What predict wrote before it streamed: every text read, predicted and joined at once."""
    texts, _ = read_corpus(source)
    rows = load_predictor(model).predict([t.text for t in texts])
    for row in rows:
        row.pop("tags", None)
    lines = [
        json.dumps({"id": t.id, "text": t.text, **row}, ensure_ascii=False)
        for t, row in zip(texts, rows, strict=True)
    ]
    return "\n".join(lines) + "\n"


def test_predict_streams_chunks_with_the_whole_input_output(
    finetuned: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.txt"
    _write_lines(source, 50, seed=1)
    for task in ("dc", "icner"):
        out = tmp_path / f"{task}.jsonl"
        summary = run_predict(PredictConfig(str(finetuned[task]), str(source), str(out)), None)  # type: ignore[arg-type]
        assert out.read_text() == _whole_input_output(finetuned[task], str(source))
        assert summary["texts"] == 50 and summary["skipped"] == {}

    # small chunks and small corpus units: the reader is consumed chunk by chunk and each
    # chunk's lines are written before the next is read
    monkeypatch.setattr(predict_module, "CHUNK", 8)
    monkeypatch.setattr(corpora, "STREAM_UNIT", 8)
    streams: list[Any] = []

    def stream_corpus(source: str) -> Any:
        streams.append(corpora.stream_corpus(source))
        return streams[-1]

    monkeypatch.setattr(predict_module, "stream_corpus", stream_corpus)
    stdout = io.StringIO()
    seen: list[tuple[int, int, int]] = []  # (chunk size, texts read so far, lines written so far)
    predict = predict_module.Predictor.predict

    def spy(self: Any, texts: list[str]) -> list[dict[str, Any]]:
        seen.append((len(texts), streams[0].n_read, len(stdout.getvalue().splitlines())))
        return predict(self, texts)

    monkeypatch.setattr(predict_module.Predictor, "predict", spy)
    summary = run_predict(PredictConfig(str(finetuned["dc"]), str(source)), stdout)
    assert [size for size, _, _ in seen] == [8] * 6 + [2]
    for i, (_, n_read, written) in enumerate(seen):
        assert n_read <= 8 * (i + 2)  # the reader is at most one unit ahead of the chunk
        assert written == 8 * i  # every earlier chunk is already written
    want = _whole_input_output(finetuned["dc"], str(source)).splitlines()
    got = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [(r["id"], r["text"], r["domain"]) for r in got] == [
        (r["id"], r["text"], r["domain"]) for r in map(json.loads, want)
    ]
    assert [r["probability"] for r in got] == pytest.approx(
        [json.loads(line)["probability"] for line in want], abs=1e-5
    )
    assert summary["texts"] == 50


def test_predict_counts_dc_words_past_max_length_and_leaves_no_partial_out(
    finetuned: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    source = tmp_path / "in.txt"
    long_words = WORDS * 5
    source.write_text("stock market\n" + " ".join(long_words) + "\n")
    tok = AutoTokenizer.from_pretrained(finetuned["dc"] / "model")
    enc = tok(long_words, is_split_into_words=True, truncation=True, max_length=32)
    past = len(long_words) - len({w for w in enc.word_ids() if w is not None})
    assert past > 20
    for task in ("dc", "icner"):
        code, out, err = kdcache(monkeypatch, capsys, ["predict", "--model", str(finetuned[task]),
                                                    "--input", str(source)])  # fmt: skip
        assert code == 0, err
        assert len(out.splitlines()) == 2
        (count,) = [line for line in err.splitlines() if "words past max_length" in line]
        assert int(count.rsplit(": ", 1)[1]) == past

    monkeypatch.setattr(predict_module, "CHUNK", 1)
    full = Path("/dev/full")  # every write fails with ENOSPC
    if full.exists():
        args = ["predict", "--model", str(finetuned["dc"]), "--input", str(source)]
        code, _, err = kdcache(monkeypatch, capsys, [*args, "--out", str(full)])
        assert code == 2 and "cannot write" in _one_error(err) and full.exists()
    out_file = tmp_path / "preds.jsonl"
    calls = []
    predict = predict_module.Predictor.predict

    def fails_second(self: Any, texts: list[str]) -> list[dict[str, Any]]:
        calls.append(texts)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return predict(self, texts)

    monkeypatch.setattr(predict_module.Predictor, "predict", fails_second)
    args = ["predict", "--model", str(finetuned["dc"]), "--input", str(source)]
    code, _, err = kdcache(monkeypatch, capsys, [*args, "--out", str(out_file)])
    assert code == 2 and "No space left on device" in _one_error(err)
    assert not out_file.exists()


def test_export_write_failure_leaves_no_partial_file(
    finetuned: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def disk_full(target: str) -> None:
        Path(target).write_bytes(b"\x08\x07partial graph")
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "x.onnx"
    args = ["export", "--model", str(finetuned["icner"]), "--onnx", str(path)]
    with monkeypatch.context() as patch:
        patch.setattr(torch.onnx, "export", lambda graph, inputs, f, **_: disk_full(f))
        code, _, err = kdcache(monkeypatch, capsys, args)
    assert code == 2 and "export failed" in _one_error(err) and "No space left" in err
    assert list(tmp_path.iterdir()) == []

    import onnxruntime.quantization

    with monkeypatch.context() as patch:
        patch.setattr(
            onnxruntime.quantization,
            "quantize_dynamic",
            lambda source, target, **_: disk_full(target),
        )
        code, _, err = kdcache(monkeypatch, capsys, [*args, "--quantize", "int8"])
    assert code == 2 and "int8 quantization failed" in _one_error(err)
    assert not path.with_suffix(".int8.onnx").exists()
    assert path.is_file()  # the fp32 graph was written and checked before quantizing


class OrtFail(Exception):
    """Like onnxruntime's own `Fail`: not a RuntimeError, ValueError or OSError."""


@pytest.mark.parametrize("where", ["quantize", "int8 session"])
def test_a_failed_int8_step_keeps_the_checked_fp32_graph_and_says_so_in_one_line(
    finetuned: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    where: str,
) -> None:
    import onnxruntime.quantization

    import student_train.export as export_module

    path = tmp_path / "x.onnx"
    int8 = path.with_suffix(".int8.onnx")
    real_session = export_module.session

    def broken_quantize(source: str, target: str, **_: Any) -> None:
        Path(target).write_bytes(b"\x08\x07partial graph")
        raise KeyError("MatMul node without weights\n(second line)")

    def broken_session(graph: Path, threads: int = 0) -> Any:
        if graph == int8:
            raise OrtFail("[ONNXRuntimeError] : 1 : FAIL : MatMulInteger is not implemented")
        return real_session(graph, threads)

    args = ["export", "--model", str(finetuned["icner"]), "--onnx", str(path), "--quantize", "int8"]
    with monkeypatch.context() as patch:
        if where == "quantize":
            patch.setattr(onnxruntime.quantization, "quantize_dynamic", broken_quantize)
        else:
            patch.setattr(export_module, "session", broken_session)
        code, out, err = kdcache(monkeypatch, capsys, args)
    line = _one_error(err)
    assert code == 2 and line.startswith(f"error: --onnx {path}: int8 quantization failed (")
    assert ("MatMul node without weights" if where == "quantize" else "FAIL : MatMul") in line
    assert line.endswith(
        f"; {int8} removed, the checked fp32 {path} kept (its check is above); rerun without "
        "--quantize, or quantize it with onnxruntime yourself"
    )
    assert "ONNX fp32:" in out and "max |logit diff|" in out and "ONNX int8" not in out
    assert path.is_file() and not int8.exists()

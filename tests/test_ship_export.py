"""ONNX export of finetuned models: the graph has dynamic batch and length axes, onnxruntime
reproduces plain transformers on shapes it was not traced at, the command checks itself on the
test split, int8 dynamic quantization runs and reports its scores, bad paths are one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from cli_calls import kdcache
from task_stores import finetune_briefly
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from student_train.export import ExportConfig, run_export


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny student finetuned for a few steps on DC and on ICNER (export needs no accuracy)."""
    root = tmp_path_factory.mktemp("export")
    return finetune_briefly(root)


def _inputs(batch: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 100 + length)
    ids = rng.integers(1000, 5000, size=(batch, length))
    mask = np.ones_like(ids)
    mask[0, length // 2 :] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def test_export_matches_transformers_at_new_shapes(
    finetuned: dict[str, Path], tmp_path: Path
) -> None:
    for task in ("dc", "icner"):
        path = tmp_path / f"{task}.onnx"
        summary = run_export(ExportConfig(str(finetuned[task]), str(path)))
        assert summary["max_abs_diff"] <= 1e-3 and summary["fp32"] == summary["torch"]
        assert summary["n_test"] == (31 if task == "dc" else 24)
        onnx = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in onnx.get_inputs()] == ["input_ids", "attention_mask"]
        assert all(isinstance(d, str) for i in onnx.get_inputs() for d in i.shape)  # dynamic
        folder = finetuned[task] / "model"
        intents = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        for batch, length in ((1, 3), (5, 40)):
            feed = _inputs(batch, length)
            got = onnx.run(None, feed)
            tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
            with torch.no_grad():
                np.testing.assert_allclose(got[0], intents(**tensors).logits.numpy(), atol=1e-4)
                if task == "icner":
                    slots = AutoModelForTokenClassification.from_pretrained(folder / "slots")
                    want = slots.eval()(**tensors).logits.numpy()
                    np.testing.assert_allclose(got[1], want, atol=1e-4)
            assert len(got) == (1 if task == "dc" else 2)


def test_export_cli_quantizes_and_reports(
    finetuned: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    path = tmp_path / "out" / "icner.onnx"
    args = ["export", "--model", str(finetuned["icner"]), "--onnx", str(path)]
    code, out, err = kdcache(monkeypatch, capsys, [*args, "--quantize", "int8"])
    assert code == 0, err
    int8 = path.with_suffix(".int8.onnx")
    assert int8.is_file() and int8.stat().st_size < path.stat().st_size / 2
    assert "max |logit diff|" in out and "ONNX int8: intent_accuracy" in out
    assert "points" in out
    quantized = onnxruntime.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    scores: Any = quantized.run(None, _inputs(2, 7))
    assert scores[0].shape == (2, 2) and scores[1].shape == (2, 7, 3)
    for bad, expected in (
        (["--onnx", str(tmp_path / "x.pt")], "ending in .onnx"),
        (["--onnx", str(tmp_path / "y.onnx"), "--quantize", "int4"], "--quantize must be"),
        (["--onnx", str(tmp_path / "z.onnx"), "--store", str(tmp_path / "none.zarr")], "none.zarr"),
    ):
        code, _, out = kdcache(
            monkeypatch, capsys, ["export", "--model", str(finetuned["dc"]), *bad]
        )
        assert code == 2 and "Traceback" not in out
        (line,) = [line for line in out.splitlines() if line.startswith("error: ")]
        assert expected in line

"""Acceptance drill, shipping a student: a failed ONNX write (disk full) leaves no partial
file, and the error is one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from cli_calls import kdcache
from task_stores import finetune_briefly


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny student (64 positions; the store's max_length is 32) finetuned a few steps."""
    root = tmp_path_factory.mktemp("drill_ship")
    return finetune_briefly(root)


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


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

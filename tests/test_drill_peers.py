"""Acceptance drill against peers and independent re-implementations: `kdcache predict` over a
corpus file whose name is not valid UTF-8 writes valid UTF-8 JSONL (the name's bytes as \\xNN
escapes), to --out as to a strict UTF-8 standard output, instead of a UnicodeEncodeError; an
output path under a regular file (`sweep --out FILE/runs`, `export --onnx FILE/m.onnx`) is one
line naming the flag, not a NotADirectoryError traceback; `report` on a read-only RUNS folder says
to copy the folder (it has no --out to change), not "another --out"."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_calls import kdcache
from sweep_stores import save_teacher, write_task_store
from task_stores import finetune_briefly
from test_report_tables import runs  # noqa: F401 - a hand-written RUNS folder (fixture)

import student_train.report_plots as report_plots
from student_train.configs import PredictConfig
from student_train.predict import run_predict
from teacher_infer.corpus_records import printable_name


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real finetuned tiny students ({"dc": folder, "icner": folder}), shared by the tests."""
    return finetune_briefly(tmp_path_factory.mktemp("shipped"))


@pytest.fixture
def latin1_named(tmp_path: Path) -> Path:
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    with open(name, "wb") as f:
        f.write(b"hello world\nsecond line\n")
    return Path(os.fsdecode(name))


def test_printable_name_escapes_the_bytes_of_a_non_utf8_name() -> None:
    assert printable_name(os.fsdecode(b"d/caf\xe9.txt") + ":1") == "d/caf\\xe9.txt:1"
    assert printable_name("d/café.txt:2") == "d/café.txt:2"


def test_predict_out_of_a_non_utf8_file_name_is_valid_utf8(
    shipped: dict[str, Path], latin1_named: Path
) -> None:
    out = latin1_named.parent / "preds.jsonl"
    config = PredictConfig(str(shipped["dc"]), str(latin1_named), str(out))
    summary = run_predict(config, io.StringIO())
    assert summary["texts"] == 2
    rows = [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    assert [r["id"].rsplit("/", 1)[-1] for r in rows] == ["caf\\xe9.txt:1", "caf\\xe9.txt:2"]
    assert [r["text"] for r in rows] == ["hello world", "second line"]


def test_predict_stdout_of_a_non_utf8_file_name_is_valid_utf8(
    shipped: dict[str, Path], latin1_named: Path
) -> None:
    raw = io.BytesIO()
    strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")  # a UTF-8 locale's stdout
    run_predict(PredictConfig(str(shipped["dc"]), str(latin1_named)), strict)
    strict.flush()
    rows = [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]
    assert rows[0]["id"].endswith("caf\\xe9.txt:1")


def _one_error(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def test_sweep_out_under_a_regular_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    url = str(tmp_path / "store.zarr")
    write_task_store(url, save_teacher(tmp_path / "teacher"), {"generic": 20, "task/dc": 20})
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    out = tmp_path / "notes.txt" / "runs"
    args = [
        "sweep", "--store", url, "--generic", "generic", "--task", "task/dc",
        "--task-share", "0", "--seeds", "0", "--student", "from-teacher:1", "--size", "10",
        "--finetune", "dc:task/dc", "--steps", "1", "--finetune-steps", "1", "--device", "cpu",
        "--out", str(out),
    ]  # fmt: skip
    line = _one_error(*kdcache(monkeypatch, capsys, args)[::2])
    assert str(out) in line and "cannot create the sweep folder" in line and "--out" in line


def test_export_onnx_under_a_regular_file_is_one_line_naming_onnx(
    shipped: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    model = shipped["dc"]
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    path = tmp_path / "notes.txt" / "m.onnx"
    code, _, err = kdcache(
        monkeypatch, capsys, ["export", "--model", str(model), "--onnx", str(path)]
    )
    line = _one_error(code, err)
    assert line.startswith(f"error: --onnx {path}: export failed")


def test_report_on_a_read_only_runs_folder_says_to_copy_it(
    runs: Path,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def read_only(fig: Any, path: str, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(report_plots.Figure, "savefig", read_only)  # as a ro mount answers
    line = _one_error(*kdcache(monkeypatch, capsys, ["report", str(runs)])[::2])
    assert line.startswith(f"error: {runs / 'report.png'}: Read-only file system")
    assert "--out" not in line and "copy that folder" in line

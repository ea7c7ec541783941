"""Faults of the environment through the real entry point (`cli.main`): a full disk and a
read-only file system end in one line naming the path, exit code 2, never a traceback.

The disks are real: tmpfs mounts of a few kilobytes (as root, where the tests run here), and one
remounted read-only; without the right to mount, a folder without write permission stands in
for the read-only one and the full-disk cases are skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from student_stores import write_store
from teacher_fixtures import precompute_args, precompute_inputs

import cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return precompute_inputs(tmp_path_factory.mktemp("inputs"), n_generic=40, n_task=16)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(options) -> a tmpfs mounted with `options` ("size=64k", "remount,ro"), unmounted
    after the test; skips the test where this process may not mount."""
    point = tmp_path / "disk"
    point.mkdir()

    def mount_with(options: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        source = [] if options.startswith("remount") else ["-t", "tmpfs", "tmpfs"]
        done = subprocess.run(
            ["mount", *source, "-o", options, str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        return point

    yield mount_with
    if os.path.ismount(point):
        subprocess.run(["umount", str(point)], check=True)


def _main_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str]):
    """stderr of `kdcache ARGS`, which must exit with code 2."""
    monkeypatch.setattr(sys, "argv", ["kdcache", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _one_error_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and "╭" not in err
    return line


def test_precompute_on_a_full_disk_is_one_line(
    inputs: dict[str, Path],
    mount: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    disk = mount("size=64k")  # full while the store is created
    store = disk / "s.zarr"
    line = _one_error_line(_main_error(monkeypatch, capsys, precompute_args(inputs, str(store))))
    assert line.startswith(f"error: {store}: No space left on device; free space there")
    disk = mount("remount,size=256k")  # full after some units
    line = _one_error_line(_main_error(monkeypatch, capsys, precompute_args(inputs, str(store))))
    assert line.startswith(f"error: {store}: No space left on device")
    assert shutil.disk_usage(disk).used > 128 * 1024  # it wrote past the store's creation


def test_adding_a_corpus_to_a_read_only_store_is_one_line(
    inputs: dict[str, Path],
    tmp_path: Path,
    mount: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    as_root = os.geteuid() == 0
    folder = mount("size=8m") if as_root else tmp_path
    store = folder / "s.zarr"
    args = precompute_args(inputs, str(store))
    monkeypatch.setattr(sys, "argv", ["kdcache", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    if as_root:
        mount("remount,ro")
    else:
        store.chmod(0o555)
    try:
        more = [*args, "--corpus", f"extra={inputs['task']}"]
        line = _one_error_line(_main_error(monkeypatch, capsys, more))
    finally:
        if not as_root:
            store.chmod(0o755)  # lets pytest remove it
    assert line.startswith(f"error: {store}")
    assert "Read-only file system; write elsewhere" in line or "Permission denied; fix" in line


def test_distill_out_on_a_full_disk_is_one_line(
    tmp_path: Path,
    mount: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    store = tmp_path / "store.zarr"
    write_store(store, {"generic": 32})
    out = mount("size=48k") / "run"  # room for config.json, not for a checkpoint
    args = ["distill", "--store", str(store), "--mix", "generic=1", "--size", "16", "--steps"]
    args += ["2", "--student", "tiny", "--batch-tokens", "256", "--out", str(out)]
    line = _one_error_line(_main_error(monkeypatch, capsys, args))
    assert line == (
        f"error: {out}: No space left on device; free space there or write elsewhere, then "
        "rerun the same command (it resumes)"
    )


def test_an_output_path_under_a_file_is_one_line(
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    store = tmp_path / "a-file" / "s.zarr"
    line = _one_error_line(_main_error(monkeypatch, capsys, precompute_args(inputs, str(store))))
    assert line == (
        f"error: {store}: Not a directory; a part of the path is a file, not a folder; "
        "give another path"
    )
    with pytest.raises(IsADirectoryError) as raised:
        open(tmp_path, "w")  # noqa: SIM115
    assert cli.environment_error(raised.value) == (
        f"{tmp_path}: Is a directory; it is a folder; give a file path"
    )


@pytest.mark.parametrize("mode", ["mlm", "task"])
def test_a_teacher_with_a_damaged_config_is_one_line_naming_it(
    inputs: dict[str, Path],
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A type-less config.json was a ValueError traceback in task mode, and a config that is
    not a mapping was reported as a tokenizer problem."""
    teacher = tmp_path / "teacher"
    shutil.copytree(inputs["bert"], teacher)
    for damaged in ("{}", "[1, 2]"):
        (teacher / "config.json").write_text(damaged)
        args = precompute_args({**inputs, "bert": teacher}, str(tmp_path / "s.zarr"))
        line = _one_error_line(_main_error(monkeypatch, capsys, [*args, "--mode", mode]))
        assert line.startswith(f"error: --teacher {str(teacher)!r}: {teacher / 'config.json'} ")
        assert "is not a readable model config" in line and "re-save the model" in line

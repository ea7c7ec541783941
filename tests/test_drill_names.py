"""Acceptance drill on names and metadata: a corpus file (or folder) whose name is not valid UTF-8
is precomputed and compared like any other, everything the store and the similarity report
hold is valid UTF-8 (the name's bytes as \\xNN escapes), while the files are still read by their
real names (a rerun reads the stored index); every array of a store has an `about` attribute;
an identical rerun on a read-only complete store succeeds, and one that must write names the
object it cannot write; `--samples` out of range names the flag."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from cli_calls import kdcache
from teacher_fixtures import save_tiny_bert_mlm

import teacher_infer.store_corpora as store_corpora
from logit_store import UserError, consolidate_store, open_store
from logit_store.verify import verify_store
from similarity.report import write_report
from teacher_infer.configs import PrecomputeConfig

LATIN1 = b"caf\xe9"  # "café" in Latin-1: not UTF-8
SHOWN = "caf\\xe9"


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny teacher, a text file and a folder (a .txt and a .jsonl) with Latin-1 names."""
    root = tmp_path_factory.mktemp("names")
    teacher = save_tiny_bert_mlm(root / "bert")
    raw = os.fsencode(root)
    text = os.path.join(raw, LATIN1 + b".txt")
    with open(text, "wb") as f:
        f.write(b"hello world\n\nsecond line of text\nthird line\n")
    folder = os.path.join(raw, b"d" + LATIN1)
    os.mkdir(folder)
    shutil.copy(text, os.path.join(folder, LATIN1 + b".txt"))
    with open(os.path.join(folder, b"t" + LATIN1 + b".jsonl"), "wb") as f:
        f.write(b'{"text": "show me flights"}\n{"text": ""}\n{"text": "to boston", "id": "x"}\n')
    return {
        "root": str(root),
        "teacher": str(teacher),
        "text": os.fsdecode(text),
        "folder": os.fsdecode(folder),
        "shown_root": os.fsdecode(raw),  # an ASCII tmp path: the same as shown
    }


Run = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Run:
    """`kdcache ARGS` in this process: (exit code, stdout, stderr)."""
    return lambda args: kdcache(monkeypatch, capsys, args)


def _precompute_args(named: dict[str, str], out: str, *extra: str) -> list[str]:
    return [
        "precompute",
        "--teacher", named["teacher"],
        "--corpus", f"g={named['text']}",
        "--corpus", f"f={named['folder']}",
        "--out", out,
        "--max-length", "32",
        "--unit-size", "2",
        "--device", "cpu",
        "--workers", "0",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(named: dict[str, str]) -> str:
    out = os.path.join(named["root"], "s.zarr")
    mp = pytest.MonkeyPatch()
    capture = _Capture()
    try:
        code, _, err = kdcache(mp, capture, _precompute_args(named, out))  # type: ignore[arg-type]
    finally:
        mp.undo()
    assert code == 0, err
    return out


class _Capture:
    """A stand-in for capsys in a module-scoped fixture (the CLI output is not checked)."""

    def readouterr(self) -> Any:
        class Captured:
            out = err = ""

        return Captured()


def _strict_utf8(value: Any, where: str) -> None:
    """Every string in a JSON value encodes as strict UTF-8 (no lone surrogates)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            _strict_utf8(key, where)
            _strict_utf8(item, where)
    elif isinstance(value, list):
        for item in value:
            _strict_utf8(item, where)


def _json_objects(url: str) -> Iterator[tuple[str, Any]]:
    for folder, _, files in os.walk(url):
        for name in files:
            if name.endswith(".json"):
                path = os.path.join(folder, name)
                raw = Path(path).read_bytes().decode("utf-8")  # strict
                assert "\\ud" not in raw.lower(), f"{path}: a surrogate escape"
                yield path, json.loads(raw)


def test_records_and_examples_show_the_escaped_names(named: dict[str, str], store: str) -> None:
    opened = open_store(store)
    root = named["shown_root"]
    ids = opened["g"].column("id")
    assert ids == [f"{root}/{SHOWN}.txt:{line}" for line in (1, 3, 4)]
    folder_ids = opened["f"].column("id")
    assert f"{root}/d{SHOWN}/{SHOWN}.txt:1" in folder_ids
    assert f"{root}/d{SHOWN}/t{SHOWN}.jsonl:1" in folder_ids and "x" in folder_ids
    assert opened["g"].info["source"] == f"{root}/{SHOWN}.txt"
    examples = opened["g"].info["skip_examples"] + opened["f"].info["skip_examples"]
    assert f"{root}/{SHOWN}.txt:2: empty_line" in examples
    assert f"{root}/d{SHOWN}/t{SHOWN}.jsonl:2: empty_text" in examples
    for path, value in _json_objects(store):
        _strict_utf8(value, path)
    for _, arr in zarr.open_group(store, mode="r").members(max_depth=None):
        if isinstance(arr, zarr.Array) and arr.dtype.kind in "OUT" and arr.size:
            for item in np.asarray(arr[...]).ravel().tolist():
                str(item).encode("utf-8")
    assert verify_store(store) == []


def test_a_rerun_opens_the_files_by_the_names_the_index_kept(
    named: dict[str, str], store: str, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored index holds the escaped names for show and the real ones (their bytes) to
    open: a rerun of the same command uses it (no new indexing pass) and computes nothing."""

    def no_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"indexed again: {args}")

    monkeypatch.setattr(store_corpora, "index_source", no_pass)
    code, out, err = run(_precompute_args(named, store))
    assert code == 0, err
    assert "0 tokens computed" in " ".join((out + err).split())
    assert verify_store(store) == []


def test_every_array_has_an_about_attribute(store: str) -> None:
    arrays = [
        (name, node)
        for name, node in zarr.open_group(store, mode="r").members(max_depth=None)
        if isinstance(node, zarr.Array)
    ]
    names = {name.rsplit("/", 1)[-1] for name, _ in arrays}
    assert {"summary_units", "summary_lengths", "summary_split", "done", "index_units"} <= names
    for name, node in arrays:
        about = node.attrs.get("about")
        assert isinstance(about, str) and about, f"{name}: no 'about' attribute"
    units = zarr.open_array(f"{store}/corpora/g/summary_units", mode="r")
    assert "blosc" in json.dumps(units.metadata.to_dict()["codecs"]).lower()


def test_a_summary_written_before_about_still_reads_and_verifies(
    store: str, tmp_path: Path
) -> None:
    """An older store's summary_units: crc32c only, no `about` (as kdcache wrote it)."""
    from zarr.codecs import Crc32cCodec

    url = str(tmp_path / "old.zarr")
    shutil.copytree(store, url)
    group = zarr.open_group(f"{url}/corpora/g", mode="r+")
    units = group["summary_units"]
    assert isinstance(units, zarr.Array)
    table, attrs = np.asarray(units[...]), {k: v for k, v in units.attrs.items() if k != "about"}
    group.create_array(
        "summary_units",
        shape=table.shape,
        dtype="int64",
        chunks=table.shape,
        compressors=[Crc32cCodec()],
        fill_value=0,
        overwrite=True,
        attributes=attrs,
    )[...] = table
    for name in ("summary_lengths", "summary_split"):
        zarr.open_array(f"{url}/corpora/g/{name}", mode="r+").attrs.pop("about")
    fresh, old = open_store(store)["g"], open_store(url)["g"]
    assert fresh.lengths().tolist() == old.lengths().tolist()
    assert fresh.column("id") == old.column("id")
    assert verify_store(url) == []
    consolidate_store(url)
    assert verify_store(url) == []


def test_similarity_over_non_utf8_names_writes_a_utf8_report(
    named: dict[str, str],
    tmp_path: Path,
    run: Run,
) -> None:
    raw = os.fsencode(tmp_path)
    sides = {}
    for side, offset in (("generic", 0), ("task", 40)):
        path = os.path.join(raw, side.encode() + LATIN1 + b".txt")
        with open(path, "wb") as f:
            f.writelines(
                f"sentence {i} of {side} text\n".encode() for i in range(offset, offset + 40)
            )
        sides[side] = os.fsdecode(path)
    out = tmp_path / "sim.json"
    code, _, err = run(
        [
            "similarity",
            "--generic", sides["generic"],
            "--task", sides["task"],
            "--out", str(out),
            "--encoder", named["teacher"],
            "--max-per-side", "30",
        ],
    )  # fmt: skip
    assert code == 0, err
    text = out.read_bytes().decode("utf-8")  # strict
    report = json.loads(text)
    _strict_utf8(report, str(out))
    assert report["config"]["task"] == f"{tmp_path}/task{SHOWN}.txt"
    assert report["corpus"]["generic"]["source"] == f"{tmp_path}/generic{SHOWN}.txt"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".txt") == ["sim.json"]


def test_a_report_that_cannot_be_written_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    with pytest.raises(UnicodeEncodeError):
        write_report({"schema": "x", "name": "caf\udce9"}, str(out))
    assert list(tmp_path.iterdir()) == []
    write_report({"schema": "x"}, str(out))
    with pytest.raises(TypeError):
        write_report({"schema": "y", "value": object()}, str(out))
    assert json.loads(out.read_text()) == {"schema": "x"}  # the old report, whole
    assert [p.name for p in tmp_path.iterdir()] == ["sim.json"]


@contextlib.contextmanager
def _read_only_copy(store: str, where: Path) -> Iterator[str]:
    """A copy of `store` on a file system the kernel refuses writes to: a tmpfs remounted
    read-only (as root, whom permissions do not stop), else a folder without write permission."""
    where.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to make read-only: {mount.stderr.decode().strip()}")
        mounted = True
    copy = str(where / "s.zarr")
    shutil.copytree(store, copy)
    try:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        else:
            for folder, _, _ in os.walk(copy):
                os.chmod(folder, 0o555)
            os.chmod(where, 0o555)
        try:
            (where / "probe").touch()
            pytest.skip("the copy is still writable here")
        except OSError:
            pass
        yield copy
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)
        else:
            for folder, _, _ in os.walk(where):
                os.chmod(folder, 0o755)


def test_an_identical_rerun_on_a_read_only_complete_store_succeeds(
    named: dict[str, str],
    store: str,
    tmp_path: Path,
    run: Run,
) -> None:
    with _read_only_copy(store, tmp_path / "ro") as copy:
        code, out, err = run(_precompute_args(named, copy))
        assert code == 0, err
        assert "0 tokens computed" in " ".join((out + err).split())
        # a new corpus must be written: one line naming a path in the store, read-only
        args = [*_precompute_args(named, copy), "--corpus", f"h={named['text']}"]
        code, out, err = run(args)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"error: {copy}/") and "Read-only file system" in lines[0]
        assert ".create-once" not in err


def test_a_rerun_that_must_write_a_record_names_it(
    named: dict[str, str],
    store: str,
    tmp_path: Path,
    run: Run,
) -> None:
    """A store written before kdcache recorded its corpora: the rerun writes the record, which
    a read-only store refuses, naming the record, not create-once's temporary file."""
    source = tmp_path / "src.zarr"
    shutil.copytree(store, source)
    (source / "kdcache_corpus.g.json").unlink()
    with _read_only_copy(str(source), tmp_path / "ro") as copy:
        code, _, err = run(_precompute_args(named, copy))
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and ".create-once" not in err, err
        assert lines[0].startswith(f"error: {copy}/kdcache_corpus.g.json: Read-only file system")


def test_samples_out_of_range_names_the_flag(
    named: dict[str, str],
    tmp_path: Path,
    run: Run,
) -> None:
    with pytest.raises(UserError, match=r"^--samples must be in 1\.\.65535"):
        PrecomputeConfig("t", (("g", "x.txt"),), "o", encoding="sampled", n_samples=65536)
    PrecomputeConfig("t", (("g", "x.txt"),), "o", encoding="sampled", n_samples=65535)
    out = tmp_path / "s.zarr"
    args = [*_precompute_args(named, str(out)), "--encoding", "sampled", "--samples", "70000"]
    code, _, err = run(args)
    assert code == 2 and "--samples must be in 1..65535" in err and "Traceback" not in err
    assert not out.exists()


def test_a_json_lone_surrogate_escape_is_skipped_as_invalid_utf8(tmp_path: Path) -> None:
    """JSON's "\\ud800" is valid JSON but no UTF-8 text: the row is skipped and counted, not
    handed to the tokenizer (a TypeError traceback) or the store; a surrogate pair is text."""
    from teacher_infer.corpus_index import index_source, read_unit

    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"text": "caf\\udce9 au lait"}\n'
        '{"text": "ok", "id": "a\\ud800"}\n'
        '{"text": "smile \\ud83d\\ude00", "tags": ["O", "O"]}\n'
        '{"text": "plain \\u00e9"}\n'
    )
    unit = read_unit(index_source(str(path), unit_size=8), 0)
    assert [t.text for t in unit.texts] == ["smile \U0001f600", "plain é"]
    assert unit.skipped == {"invalid_utf8": 2}
    assert unit.examples[0] == f"{path}:1: invalid_utf8: a \\uD800-\\uDFFF escape without its pair"

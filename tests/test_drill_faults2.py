"""Faults found by the acceptance drill (second round): each is one clear line, never a traceback
or a silent wrong result."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import zarr
from cli_calls import kdcache
from synthetic import synthetic_meta, write_synthetic
from teacher_fixtures import TINY, precompute_args, precompute_inputs, save_tiny_bert_mlm
from transformers import BertConfig, BertForSequenceClassification

from logit_store import StoreCorruptError, UserError, open_store
from logit_store.arrays import CORPORA_GROUP, META_KEY, attrs_dict
from logit_store.source_index import stored_corpus_index
from logit_store.verify import verify_store
from logit_store.writer import consolidate_store
from student_train.heads import load_classifier
from student_train.saved_model import load_task_model
from student_train.students import build_student
from teacher_infer import precompute
from teacher_infer.teacher import load_model


def _truncate_weights(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return folder


def test_a_truncated_teacher_is_one_line_naming_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    files = precompute_inputs(tmp_path, n_generic=8, n_task=8)
    _truncate_weights(files["bert"])
    code, _, err = kdcache(monkeypatch, capsys, precompute_args(files, str(tmp_path / "store")))
    assert code == 2
    line = err.strip().splitlines()[-1]  # after the fixture's save progress bar
    assert "Traceback" not in err
    assert line.startswith(f"error: {files['bert']}/model.safetensors: cannot be read (")
    assert line.endswith("; re-save it or rerun the command that wrote it")


def test_a_garbled_model_is_a_user_error_for_teacher_and_student_loads(tmp_path: Path) -> None:
    folder = save_tiny_bert_mlm(tmp_path / "bert")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match=r"bert/model\.safetensors: cannot be read \(.*header"):
        load_model(str(folder), "mlm")
    with pytest.raises(UserError, match=r"bert/model\.safetensors: cannot be read"):
        load_classifier(folder, "pretrained", 0, ("a", "b"), 0.1)


@pytest.mark.parametrize("name", ["no-such-teacher", "no such/teacher folder"])
def test_a_missing_teacher_folder_is_one_line_offline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    name: str,
) -> None:
    files = precompute_inputs(tmp_path, n_generic=8, n_task=8)
    args = precompute_args(files, str(tmp_path / "store"))
    args[args.index("--teacher") + 1] = name
    monkeypatch.chdir(tmp_path)
    code, _, err = kdcache(monkeypatch, capsys, args)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"error: --teacher {name!r}: no such folder, and not in the Hugging Face cache "
        "(offline); give a model folder"
    )


def _set_done_record(url: str, corpus: str, u: int, **fields: str) -> None:
    done = zarr.open_array(f"{url}/{CORPORA_GROUP}/{corpus}/done", mode="r+")
    done[u] = json.dumps({**json.loads(str(done[u])), **fields})


@pytest.mark.parametrize("consolidated", [False, True])
def test_a_unit_written_by_another_teacher_is_refused_when_read(
    tmp_path: Path, consolidated: bool
) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    if consolidated:  # the summary covers the unit: its record is read with its data
        consolidate_store(url)
    _set_done_record(url, "task", 2, teacher_hash="f" * 64)
    with pytest.raises(
        StoreCorruptError, match=r"'task', unit 2: written by another teacher"
    ) as err:
        task = open_store(url)["task"]
        for i in range(len(task)):
            task[i]
    assert "kdcache verify" in str(err.value) and "\n" not in str(err.value)
    assert [f for f in verify_store(url) if "written by another teacher" in f]


def test_a_failed_chunk_checksum_names_the_array_not_its_bytes(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    chunk = tmp_path / "s.zarr" / CORPORA_GROUP / "task" / "target_values" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum tells
    chunk.write_bytes(bytes(data))
    task = open_store(url)["task"]
    with pytest.raises(StoreCorruptError) as err:
        for i in range(len(task)):
            task[i]
    assert str(err.value) == (
        f"store {url}, corpus 'task', unit 1: array 'target_values' failed its checksum. "
        "Run `kdcache verify` to list every damaged array."
    )


@pytest.mark.parametrize(
    ("name", "content", "skips"),
    [
        ("e.txt", "\n\n\n", "empty_line: 3"),
        ("bad.jsonl", '{"x\n{"text": 3}\nnot json\n', "bad_field: 1, malformed_json: 2"),
    ],
)
def test_a_corpus_with_no_sequence_left_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    name: str,
    content: str,
    skips: str,
) -> None:
    files = precompute_inputs(tmp_path, n_generic=8, n_task=8)
    corpus = tmp_path / name
    corpus.write_text(content)
    out = str(tmp_path / "store")
    args = precompute_args(files, out)
    args[args.index("--corpus") + 1] = f"generic={corpus}"
    code, _, err = kdcache(monkeypatch, capsys, args)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"error: {corpus}: no text could be read (skipped {skips}; e.g. {corpus}:1: "
    )
    assert line.endswith(
        f"; fix the corpus and write it to a new --out store (store {out} holds none of it)"
    )


def test_a_corpus_error_comes_before_the_teacher_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    files = precompute_inputs(tmp_path, n_generic=8, n_task=8)
    args = precompute_args(files, str(tmp_path / "store"))
    args[args.index("--corpus") + 1] = f"generic={tmp_path / 'missing.txt'}"
    monkeypatch.setattr(precompute, "load_teacher", _no_teacher_load)
    code, _, err = kdcache(monkeypatch, capsys, args)
    assert code == 2 and "missing.txt" in err.strip().splitlines()[-1]


def _no_teacher_load(*_args: object) -> None:
    raise AssertionError("the teacher was loaded before the corpora were indexed")


def _set_meta(url: str, **fields: object) -> None:
    root = zarr.open_group(url, mode="r+")
    meta = {**attrs_dict(root, META_KEY), **fields}
    root.attrs[META_KEY] = {k: v for k, v in meta.items() if k not in fields or v is not None}


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"format_version": 3}, UserError, "store format version 3 is not supported"),
        ({"format_version": 1}, UserError, "store format 1 (whole-corpus plans"),
        (
            {"k": None},
            StoreCorruptError,
            "the store metadata (attribute kdcache of zarr.json) lacks",
        ),
        (
            {"k": "many"},
            StoreCorruptError,
            "the store metadata (attribute kdcache of zarr.json) is",
        ),
    ],
)
def test_a_metadata_error_names_the_store(
    tmp_path: Path, fields: dict[str, object], error: type[Exception], message: str
) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url)
    _set_meta(url, **fields)
    with pytest.raises(error) as err:
        open_store(url)
    assert str(err.value).startswith(f"{url}: {message}")
    with pytest.raises(error) as err:  # a precompute into it: its first look at the store
        stored_corpus_index(url, "task")
    assert str(err.value).startswith(f"{url}: {message}")


def test_a_garbled_finetuned_model_is_a_user_error(tmp_path: Path) -> None:
    model = BertForSequenceClassification(BertConfig(vocab_size=64, **TINY))  # 2 labels
    model.config.kdcache = {"task": "dc"}
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match=r"model/model\.safetensors: cannot be read \(.*re-save"):
        load_task_model(tmp_path)


@pytest.mark.parametrize(
    ("teacher", "problem"),
    [
        ("/moved/bert", "no such folder"),
        ("moved-bert", "no such folder, and not in the Hugging Face cache (offline); give a"),
    ],
)
def test_a_student_from_a_missing_teacher_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    meta = replace(synthetic_meta(), teacher_id=teacher)
    with pytest.raises(UserError) as err:
        build_student("from-teacher:1", meta)
    assert str(err.value).startswith(
        f"--student from-teacher:1: the store's teacher {teacher!r}: {problem}"
    )

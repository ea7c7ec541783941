"""A damaged --encoder for `kdcache similarity` is one line naming the folder or file and what to
do (exit code 2), never a traceback: real tiny models saved with save_pretrained, then damaged."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_calls import kdcache
from synthetic import synthetic_meta, synthetic_plans
from teacher_fixtures import save_tiny_bert_mlm

from logit_store import UserError
from logit_store.writer import create_store
from similarity.encoder import SentenceEncoder

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert_mlm(tmp_path_factory.mktemp("encoder") / "tiny")


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _no_tokenizer(folder: Path) -> None:
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)


def _emptied(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
    (folder / "notes.txt").write_text("not a model\n")


# damage -> (the start of the one line, after "error: ", with {d} the damaged folder; its end)
DAMAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "garbled weights": (
        lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64),
        "{d}/model.safetensors: cannot be read (",
        "; re-save it or rerun the command that wrote it",
    ),
    "truncated weights": (
        _truncate,
        "{d}/model.safetensors: cannot be read (",
        "; re-save it or rerun the command that wrote it",
    ),
    "no weights": (
        lambda d: (d / "model.safetensors").unlink(),
        "--encoder '{d}': cannot load its weights (",
        "; give a model folder with model.safetensors (or pytorch_model.bin) beside config.json",
    ),
    "garbled config": (
        lambda d: (d / "config.json").write_text("{oops"),
        "--encoder '{d}': {d}/config.json is not a readable model config (",
        "; re-save the model (save_pretrained) or give another model folder",
    ),
    "config not a mapping": (
        lambda d: (d / "config.json").write_text("[1, 2]"),
        "--encoder '{d}': {d}/config.json is not a readable model config (",
        "; re-save the model (save_pretrained) or give another model folder",
    ),
    "config without model_type": (
        lambda d: (d / "config.json").write_text("{}"),
        "--encoder '{d}': {d}/config.json is not a readable model config (",
        "; re-save the model (save_pretrained) or give another model folder",
    ),
    "no config": (
        lambda d: (d / "config.json").unlink(),
        "--encoder '{d}': neither a model folder (no config.json) nor a readable kdcache store",
        "; check the path)",
    ),
    "no tokenizer": (
        _no_tokenizer,
        "--encoder '{d}': its tokenizer has 5 tokens but the model's vocabulary has 30522",
        "; put the model's own tokenizer files (tokenizer.json or vocab) in the folder",
    ),
    "garbled tokenizer": (
        lambda d: (d / "tokenizer.json").write_text('{"version": "1.0", "model": 5}'),
        "--encoder '{d}': cannot load its tokenizer (",
        "; put the model's own tokenizer files (tokenizer.json or vocab) in the folder",
    ),
    "not a model folder": (
        _emptied,
        "--encoder '{d}': neither a model folder (no config.json) nor a readable kdcache store",
        "; check the path)",
    ),
}


def _damaged(tiny: Path, root: Path, damage: str) -> Path:
    folder = root / damage.replace(" ", "-")
    shutil.copytree(tiny, folder)
    DAMAGES[damage][0](folder)
    return folder


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_encoder_is_one_user_error(tiny: Path, tmp_path: Path, damage: str) -> None:
    folder = _damaged(tiny, tmp_path, damage)
    start, end = (part.format(d=folder) for part in DAMAGES[damage][1:])
    with pytest.raises(UserError) as raised:
        SentenceEncoder(str(folder), batch_size=8, max_length=32, threads=1)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(start) and message.endswith(end), message


@pytest.mark.parametrize("damage", ["truncated weights", "garbled config", "no tokenizer"])
def test_kdcache_similarity_with_a_damaged_encoder_is_one_line(
    tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    damage: str,
) -> None:
    folder = _damaged(tiny, tmp_path, damage)
    corpus = tmp_path / "c.txt"
    corpus.write_text("book a flight to boston\nplay some jazz\n" * 4)
    out = tmp_path / "r.json"
    args = ["similarity", "--generic", str(corpus), "--task", str(corpus), "--out", str(out)]
    code, _, err = kdcache(monkeypatch, capsys, [*args, "--encoder", str(folder)])
    start = DAMAGES[damage][1].format(d=folder)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"error: {start}"), err
    assert not out.exists()


def test_a_missing_folder_or_a_file_is_one_user_error(tiny: Path, tmp_path: Path) -> None:
    for given, expected in (
        (tmp_path / "gone", f"--encoder '{tmp_path / 'gone'}': no such folder"),
        (tiny / "config.json", f"--encoder '{tiny / 'config.json'}': is a file; give the model's"),
    ):
        with pytest.raises(UserError, match=f"^{expected}"):
            SentenceEncoder(str(given), batch_size=8, max_length=32, threads=1)


def test_a_store_whose_teacher_folder_is_damaged_names_both(tiny: Path, tmp_path: Path) -> None:
    teacher = _damaged(tiny, tmp_path, "truncated weights")
    store = tmp_path / "s.zarr"
    create_store(str(store), synthetic_meta(teacher_id=str(teacher)), [
        plan.spec for plan in synthetic_plans()
    ])  # fmt: skip
    with pytest.raises(UserError, match=f"^{teacher}/model.safetensors: cannot be read"):
        SentenceEncoder(str(store), batch_size=8, max_length=32, threads=1)
    shutil.rmtree(teacher)
    with pytest.raises(UserError) as raised:
        SentenceEncoder(str(store), batch_size=8, max_length=32, threads=1)
    assert str(raised.value) == (
        f"--encoder '{store}': the store's teacher '{teacher}': no such folder"
    )

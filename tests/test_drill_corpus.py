"""Corpus faults found by the acceptance drill: each is one `CorpusError` line naming the file.

* UTF-16 / UTF-32 text without a byte-order mark: every other byte is NUL, which is valid UTF-8,
  so it was read as texts full of NULs (`.txt`), or as a corpus whose every line is malformed
  JSON (`.jsonl`), or a CSV without a 'text' column named 't e x t'.
* A broken symbolic link inside a corpus folder was a FileNotFoundError traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teacher_infer.corpus_index import index_source
from teacher_infer.corpus_records import CorpusError

TEXTS = ["show me flights from boston", "play some music", "what is the weather like today"]


def _bodies() -> dict[str, str]:
    return {
        ".txt": "".join(f"{t}\n" for t in TEXTS),
        ".jsonl": "".join(json.dumps({"text": t}) + "\n" for t in TEXTS),
        ".csv": "text,domain\n" + "".join(f"{t},d\n" for t in TEXTS),
    }


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_a_byte_order_mark_are_refused(
    tmp_path: Path, suffix: str, encoding: str
) -> None:
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(_bodies()[suffix].encode(encoding))
    name = encoding.upper().replace("-", "").replace("UTF", "UTF-")
    name = name[:-2] + name[-2:]  # UTF-16LE, UTF-32BE, ...
    with pytest.raises(CorpusError) as caught:
        index_source(str(path), 2)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert name in message and "iconv" in message and "\n" not in message


def test_utf8_text_with_a_stray_nul_byte_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"show me flights\nplay\x00 music\nwhat is the weather\n")
    assert int(index_source(str(path), 2).units[:, 4].sum()) == 3


def test_parquet_is_not_taken_for_utf16(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": TEXTS, "n": [0, 0, 0]}), path)
    assert int(index_source(str(path), 2).units[:, 4].sum()) == 3


def test_a_broken_symbolic_link_in_a_folder_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("show me flights\n")
    (folder / "b.txt").symlink_to(tmp_path / "missing.txt")
    with pytest.raises(
        CorpusError,
        match=r"b\.txt: cannot be read \(.*\) \(a symbolic link to a missing file\?\); fix",
    ):
        index_source(str(folder), 2)

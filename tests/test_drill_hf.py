"""`hf:json:PATH` with a malformed line (acceptance drill): the one line said only
"DatasetGenerationError: An error occurred while generating the dataset"; it now carries the
loader's cause (what and where) and says how to have bad lines skipped and counted instead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teacher_infer.corpus_datasets import hf_splits
from teacher_infer.corpus_records import CorpusError


def test_a_malformed_local_json_file_names_the_cause_and_the_plain_path(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"text": f"text {i}"}) for i in range(6)]
    lines[4] = "[1, 2, 3]"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as caught:
        hf_splits(f"hf:json:{path}")
    message = str(caught.value)
    assert "row" in message.lower() and "JSON parse error" in message, message
    assert f"--corpus NAME={path}" in message and "\n" not in message

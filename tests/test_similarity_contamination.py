"""Streaming similarity: a seeded sample of a corpus larger than it, and the exact-duplicate check
of every task text against the whole generic corpus (planted duplicates found, and only they)."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from similarity import CompareSettings, SimilarityConfig, run_similarity
from similarity.lexical import normalise_text
from teacher_infer.corpora import stream_corpus
from teacher_infer.corpus_records import CorpusText
from teacher_infer.corpus_sample import TextSample, read_records

DOMAINS = ("travel", "music", "weather")
PLANTED_TEST = [0, 5, 10, 15, 20, 25, 30, 35]  # split "test" (every fifth task text)
PLANTED_TRAIN = [1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14]
WORDS = ("the", "river", "old", "town", "sea", "light", "energy", "budget", "castle", "reef")


def _task_text(i: int) -> str:
    return f"please book flight {i} from alpha{i % 7} to beta{i % 11}"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """400 task texts (JSONL, split and domain) and 5,000 generic lines (two stream units) with
    20 task texts planted, changed only in case, punctuation, spacing and ligatures."""
    root = tmp_path_factory.mktemp("contamination")
    task = root / "task.jsonl"
    rows = [
        {"text": _task_text(i), "split": "test" if i % 5 == 0 else "train"}
        | {"domain": DOMAINS[i % 3], "id": f"t{i}"}
        for i in range(400)
    ]
    task.write_text("".join(json.dumps(row) + "\n" for row in rows))
    rng = random.Random(0)
    lines = [f"{' '.join(rng.choices(WORDS, k=8))} number {j}" for j in range(4980)]
    lines += [f"  {_task_text(i).upper()} !!" for i in PLANTED_TEST + PLANTED_TRAIN[1:]]
    lines.append(_task_text(PLANTED_TRAIN[0]).replace("fl", "\ufb02") + " ...")  # NFKC: fl
    lines.append(_task_text(399) + "x")  # a near miss: one letter differs
    lines.append("!!!")  # a key-less text matches nothing
    rng.shuffle(lines)
    generic = root / "generic.txt"
    generic.write_text("\n".join(lines) + "\n")
    return task, generic


def test_normalise_text_ascii_fast_path_equals_the_unicode_rule() -> None:
    def unicode_rule(text: str) -> str:
        folded = unicodedata.normalize("NFKC", text).casefold()
        return " ".join(re.sub(r"[\W_]+", " ", folded).split())

    for code in range(128):
        text = f"Ab{chr(code)}cD 9_x"
        assert normalise_text(text) == unicode_rule(text), repr(text)
    assert normalise_text("\ufb01nd  \ufb02ights!") == "find flights"  # NFKC ligatures


def test_text_sample_is_uniform_seeded_and_bounded(tmp_path: Path) -> None:
    def sample(seed: int, chunk: int) -> tuple[list[CorpusText], np.ndarray]:
        drawn = TextSample(200, seed)
        for start in range(0, 5000, chunk):
            records = np.arange(start, min(start + chunk, 5000))
            drawn.offer([_text(int(r)) for r in records], records)
            assert len(drawn.texts()[0]) <= 200
        assert drawn.n_seen == 5000
        return drawn.texts()

    texts, records = sample(0, 4096)
    assert len(texts) == 200 and len(set(records.tolist())) == 200
    assert np.all(np.diff(records) > 0) and [t.line - 1 for t in texts] == records.tolist()
    assert records.max() > 4096 and 2000 < records.mean() < 3000  # spread, not a prefix
    assert np.array_equal(sample(0, 4096)[1], records)
    assert not np.array_equal(sample(1, 4096)[1], records)
    drawn = TextSample(200, 0)
    drawn.offer([_text(r) for r in range(5000)], np.arange(5000))
    smallest = drawn.texts(limit=50)[1]
    assert len(smallest) == 50 and set(smallest.tolist()) <= set(drawn.texts()[1].tolist())

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i}\n" if i != 4100 else "\n" for i in range(5000)))
    index = stream_corpus(str(corpus)).index
    found = read_records(index, [3, 4099, 4100, 4999])
    assert {r: t.text for r, t in found.items()} == {
        3: "line 3",
        4099: "line 4099",
        4999: "line 4999",
    }


def _text(record: int) -> CorpusText:
    return CorpusText(text=f"text {record}", id=f"c:{record + 1}", file="c", line=record + 1)


def test_similarity_samples_and_finds_exactly_the_planted_duplicates(
    corpora: tuple[Path, Path], tmp_path: Path
) -> None:
    task, generic = corpora
    config = SimilarityConfig(
        generic=str(generic), task=str(task), out=str(tmp_path / "r.json"), by="domain",
        max_per_side=200, settings=CompareSettings(bootstrap=20),
    )  # fmt: skip
    report = run_similarity(config)
    assert report["schema"] == "kdcache.similarity/2"
    assert report["sizes"]["task"] == report["sizes"]["generic"] == 200
    assert report["corpus"]["generic"]["read"] == 5002 and report["corpus"]["task"]["read"] == 400
    assert report["corpus"]["generic"]["used"] == 200
    dups = report["exact_duplicates"]
    planted = PLANTED_TEST + PLANTED_TRAIN
    assert dups["generic_scanned"] == 5002 and dups["generic_matching"] == 20
    assert dups["texts"] == 400 and dups["found"] == 20
    assert list(dups["by_split"]) == ["test", "train"]
    assert dups["by_split"]["test"] == {"texts": 80, "found": 8, "share": 0.1}
    assert dups["by_split"]["train"]["found"] == 12
    per_group = {g["name"]: g["found"] for g in dups["groups"]}
    assert per_group == {d: sum(DOMAINS[i % 3] == d for i in planted) for d in DOMAINS}
    items = dups["items"]
    assert {item["task_id"] for item in items} == {f"t{i}" for i in planted}
    assert [item["split"] for item in items] == ["test"] * 8 + ["train"] * 12
    assert len({item["group"] for item in items[:3]}) == 3  # groups take turns
    for item in items:
        assert normalise_text(item["generic_text"]) == normalise_text(item["task_text"])
        assert item["task_text"] == _task_text(int(item["task_id"][1:]))
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["exact_duplicates"] == dups


def test_cli_prints_the_exact_duplicates_table_and_can_skip_it(
    corpora: tuple[Path, Path], tmp_path: Path
) -> None:
    task, generic = corpora
    base = ["similarity", "--generic", str(generic), "--task", str(task), "--by", "domain"]
    base += ["--max-per-side", "60", "--bootstrap", "10"]
    runner = CliRunner()
    shown = runner.invoke(app, [*base, "--out", str(tmp_path / "a.json")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "exact duplicates" in shown.output and "8 / 80" in shown.output
    skipped = runner.invoke(
        app, [*base, "--out", str(tmp_path / "b.json"), "--no-exact-duplicates"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "not checked" in skipped.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["exact_duplicates"] is None and report["config"]["exact_duplicates"] is False

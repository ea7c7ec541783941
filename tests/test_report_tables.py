"""`kdcache report` on a hand-written RUNS folder: numbers recomputed from each run's
metrics.json (the rows of results.jsonl carry stale copies) match a hand computation, the
gain-vs-similarity Spearman correlation matches its textbook formula, and the PNGs are written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

import cli
from logit_store import UserError
from student_train.configs import ReportConfig
from student_train.report import print_report, run_report

DOMAINS = ("business", "politics", "sport", "tech", "weather")
SIMILARITY = {"business": 0.1, "politics": 0.2, "sport": 0.3, "tech": 0.4, "weather": 0.5}
# accuracy per domain at task share 0 and 1; the gains (1 − 0) are 0.3, 0.1, 0.2, 0.0, −0.1
LOW = {"business": 0.5, "politics": 0.6, "sport": 0.5, "tech": 0.7, "weather": 0.8}
GAIN = {"business": 0.3, "politics": 0.1, "sport": 0.2, "tech": 0.0, "weather": -0.1}
# (role, mix) -> per seed: DC accuracy, SER
SCORES = {
    ("random", None): ((0.60, 0.40), (0.70, 0.50)),
    ("distilled", 0.0): ((0.70, 0.30), (0.80, 0.40)),
    ("distilled", 1.0): ((0.80, 0.20), (0.90, 0.25)),
    ("teacher", None): ((0.90, 0.10), (0.95, 0.10)),
}


def _write_run(
    runs: Path, row: dict[str, Any], metrics: dict[str, Any], done: bool = True
) -> dict[str, Any]:
    folder = runs / row["run"]
    folder.mkdir(parents=True)
    digest = f"{len(list(runs.glob('finetune/*'))):016x}"
    if done:
        (folder / "metrics.json").write_text(json.dumps({"config_hash": digest, **metrics}))
    stale = {key: 0.0 for key in metrics if key != "per_label"}  # must never be used
    return {**row, "kind": "finetune", "config": {"config_hash": digest}, "metrics": stale}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    rows = []
    for (role, mix), seeds in SCORES.items():
        for seed, (acc, ser) in enumerate(seeds):
            student = "teacher" if role == "teacher" else "from-teacher:2"
            base = {"role": role, "student": student, "mix": mix, "seed": seed, "upstream": None}
            name = f"{role}_{mix}_{seed}"
            dc: dict[str, Any] = {"accuracy": acc, "macro_f1": acc}
            if role == "distilled":
                per_seed = 0.02 * seed  # gains averaged over seeds stay GAIN
                acc_at = {d: LOW[d] + per_seed + (GAIN[d] if mix == 1.0 else 0.0) for d in DOMAINS}
                dc["per_label"] = {d: {"n": 10, "accuracy": a} for d, a in acc_at.items()}
            icner = {"intent_accuracy": 1 - ser / 2, "slot_f1": 1 - ser, "semantic_error_rate": ser}
            target = {"task": "dc", "corpus": "task/bbc", "corpus_source": "demo:bbc"}
            rows.append(_write_run(root, {"run": f"finetune/{name}_dc", **base, **target}, dc))
            target = {"task": "icner", "corpus": "task/atis", "corpus_source": "demo:atis"}
            rows.append(_write_run(root, {"run": f"finetune/{name}_ic", **base, **target}, icner))
    missing: dict[str, Any] = {"run": "finetune/killed", "role": "random", "mix": None, "seed": 2}
    missing |= {"student": "from-teacher:2", "task": "dc", "corpus": "task/bbc"}
    missing |= {"corpus_source": "demo:bbc"}
    rows.append(_write_run(root, missing, {"accuracy": 0.0}, done=False))
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _similarity_report() -> dict[str, Any]:
    groups = [{"name": d, "metrics": {"coverage": {"value": v}}} for d, v in SIMILARITY.items()]
    groups.append({"name": "unseen", "metrics": {"coverage": {"value": 0.9}}})
    return {
        "schema": "kdcache.similarity/2",
        "config": {"task": "demo:bbc", "by": "domain"},
        "metrics": {"coverage": {"label": "coverage (Naeem et al.)"}},
        "groups": groups,
    }


def _row(report: dict[str, Any], role: str, mix: float | None) -> dict[str, Any]:
    return next(r for r in report["rows"] if r["role"] == role and r["mix"] == mix)


def test_numbers_are_recomputed_from_run_files(runs: Path) -> None:
    report = run_report(ReportConfig(str(runs)), [_similarity_report()])
    assert [r["label"] for r in report["rows"]] == [
        "random init", "KD, task 0.00", "KD, task 1.00", "teacher",
    ]  # fmt: skip
    kd = _row(report, "distilled", 1.0)["targets"]
    acc = kd["dc:task/bbc"]["metrics"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.85) and acc["n"] == 2
    assert acc["std"] == pytest.approx(math.sqrt(2 * 0.05**2))  # sample std, ddof = 1
    ser = kd["icner:task/atis"]["metrics"]["semantic_error_rate"]
    assert ser["mean"] == pytest.approx(0.225) and ser["std"] == pytest.approx(0.025 * math.sqrt(2))
    # relative error change vs random init, paired by seed: 0.2/0.4 − 1 and 0.1/0.3 − 1
    rel = kd["dc:task/bbc"]["relative_error"]
    assert rel["mean"] == pytest.approx((-0.5 - 2 / 3) / 2)
    assert rel["std"] == pytest.approx((2 / 3 - 0.5) / math.sqrt(2))
    assert kd["icner:task/atis"]["relative_error"]["mean"] == pytest.approx(-0.5)  # both seeds
    teacher = _row(report, "teacher", None)["targets"]["dc:task/bbc"]
    assert teacher["relative_error"]["mean"] == pytest.approx((0.1 / 0.4 + 0.05 / 0.3) / 2 - 1)
    scratch = _row(report, "random", None)["targets"]["dc:task/bbc"]
    assert scratch["metrics"]["accuracy"]["n"] == 2 and scratch["relative_error"] is None
    assert any("killed" in w and "metrics.json" in w for w in report["warnings"])

    (found,) = report["correlations"]
    assert found["target"] == "dc:task/bbc" and found["n"] == 5 and found["by"] == "domain"
    gains = {p["label"]: p["gain"] for p in found["points"]}
    assert gains == pytest.approx(GAIN)
    # ranks of similarity 1..5, of gain 5,3,4,2,1: ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 6·38/120
    assert found["rho"] == pytest.approx(-0.9)
    t = found["rho"] * math.sqrt(3 / (1 - found["rho"] ** 2))
    assert found["p"] == pytest.approx(2 * stats.t.sf(abs(t), df=3))


def test_unknown_metric_is_refused_and_ties_are_flagged(runs: Path) -> None:
    with pytest.raises(UserError, match=r"'density' is not in the similarity report.*coverage"):
        run_report(ReportConfig(str(runs), similarity_metric="density"), [_similarity_report()])
    tied = _similarity_report()
    for group in tied["groups"][1:]:
        group["metrics"]["coverage"]["value"] = 0.0
    report = run_report(ReportConfig(str(runs)), [tied])
    assert report["correlations"][0]["rho"] is not None  # still ranked, but the report says so
    assert any("4 of 5 domain groups share one coverage value" in w for w in report["warnings"])
    untied = run_report(ReportConfig(str(runs)), [_similarity_report()])
    assert not any("share one" in w for w in untied["warnings"])


def test_pngs_written_and_cli_prints_the_table(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 160)
    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps(_similarity_report()))
    result = CliRunner().invoke(cli.app, ["report", str(runs), "--similarity", str(similarity)])
    assert result.exit_code == 0, result.output
    assert "0.850 ±0.071" in result.output and "-58.3%" in result.output
    assert "Spearman ρ = -0.90" in result.output
    for name in ("report.png", "report_similarity.png"):
        data = (runs / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    saved = json.loads((runs / "report.json").read_text())
    assert saved["plots"]["sweep"] == str(runs / "report.png")

    missing = CliRunner().invoke(cli.app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code != 0 and "results.jsonl" in str(missing.exception)


def test_undefined_slot_f1_shows_as_n_a(runs: Path) -> None:
    """Test splits without slots have slot_f1 null: the table says n/a, the plot leaves it out."""
    for path in runs.glob("finetune/*_ic/metrics.json"):
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({**metrics, "slot_f1": None}))
    report = run_report(ReportConfig(str(runs)), [])
    kd = _row(report, "distilled", 1.0)["targets"]["icner:task/atis"]["metrics"]
    assert kd["slot_f1"] == {"mean": None, "std": None, "n": 0, "seeds": [0, 1]}
    assert kd["semantic_error_rate"]["mean"] == pytest.approx(0.225)
    console = Console(record=True, width=200)
    print_report(report, console)
    assert console.export_text().count("n/a") == len(SCORES)
    assert (runs / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_similarity_matched_by_file_hash_and_grouping_checked(runs: Path) -> None:
    """A report of the same file under another path spelling is matched by its sha256; one
    grouped by intent is not correlated with DC's per-domain scores, and the report says so."""
    path = runs / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["config"]["corpus_source_hash"] = "ab12" if row["task"] == "dc" else "cd34"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    moved = _similarity_report()
    moved["config"]["task"] = "/elsewhere/bbc.jsonl"
    moved["corpus"] = {"task": {"source_hash": "ab12"}}
    found = run_report(ReportConfig(str(runs)), [moved])
    assert [c["target"] for c in found["correlations"]] == ["dc:task/bbc"]
    moved["config"]["by"] = "intent"
    found = run_report(ReportConfig(str(runs)), [moved])
    assert found["correlations"] == []
    assert any(
        "grouped by intent, but dc:task/bbc scores per domain" in w for w in found["warnings"]
    )


def test_damaged_run_files_are_user_errors(runs: Path) -> None:
    """A corrupt metrics.json or a results.jsonl line that is not a result row: one line naming
    the file, never a traceback."""
    metrics = runs / "finetune" / "random_None_0_dc" / "metrics.json"
    metrics.write_text('{"accuracy": 0.')
    with pytest.raises(UserError, match=r"random_None_0_dc/metrics.json: not a readable run file"):
        run_report(ReportConfig(str(runs)))
    (runs / "results.jsonl").write_text('{"run": "finetune/x"}\n')
    with pytest.raises(UserError, match=r"results.jsonl:1: not a sweep result row"):
        run_report(ReportConfig(str(runs)))

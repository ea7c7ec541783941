"""FAISS search of the similarity package: approximate (IVF) against exact, streaming, config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from logit_store import UserError
from similarity import CompareSettings, GenericSide, SimilarityConfig, TaskSide, compare_embeddings
from similarity.knn import InnerProductIndex, StreamedTopK, configure_threads
from similarity.manifold import GroupQuantiles
from similarity.sampling import BottomKSample, content_keys, weighted_group_means


def clustered(seed: int, n: int, d: int = 32, n_centres: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((n_centres, d))
    x = centres[rng.integers(0, n_centres, n)] + 0.4 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_agrees_with_exact_search() -> None:
    configure_threads(2)
    database, queries = clustered(0, 6_000), clustered(1, 1_500)
    exact = InnerProductIndex(
        database, exact_max=10_000, nprobe=16, min_recall=0.95, seed=0, use_gpu=False
    )
    ivf = InnerProductIndex(
        database, exact_max=1_000, nprobe=16, min_recall=0.95, seed=0, use_gpu=False
    )
    _, exact_ids = exact.search(queries, 10)
    _, ivf_ids = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, ivf_ids, strict=True)])
    assert recall >= 0.95
    assert (
        ivf.describe()["type"] == "IndexIVFFlat" and ivf.recall is not None and ivf.recall >= 0.95
    )


def test_streamed_blocks_match_one_exact_search() -> None:
    database, queries = clustered(2, 5_000), clustered(3, 800)
    exact = InnerProductIndex(
        database, exact_max=10_000, nprobe=16, min_recall=0.95, seed=0, use_gpu=False
    )
    want_sims, want_ids = exact.search(queries, 10)
    streamed = StreamedTopK(
        queries, 10, approximate=False, nprobe=16, min_recall=0.95, use_gpu=False
    )
    for start in range(0, 5_000, 1_200):  # uneven last block
        streamed.add_block(database[start : start + 1_200], start)
    sims, ids = streamed.result()
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert (ids[:, 0] == want_ids[:, 0]).mean() > 0.999
    approx = StreamedTopK(queries, 10, approximate=True, nprobe=16, min_recall=0.95, use_gpu=False)
    for start in range(0, 5_000, 2_500):
        approx.add_block(database[start : start + 2_500], start)
    assert approx.recall() >= 0.95


def test_nprobe_is_calibrated_to_the_recall_target() -> None:
    """Starting at nprobe 1, the index doubles nprobe until sampled recall reaches the target,
    and a stricter target never gets a smaller nprobe or a lower recall."""
    database, queries = clustered(7, 8_000), clustered(8, 1_000)
    chosen = {}
    for target in (0.5, 0.99):
        ivf = InnerProductIndex(
            database, exact_max=1_000, nprobe=1, min_recall=target, seed=0, use_gpu=False
        )
        ivf.search(queries, 10)
        assert ivf.recall is not None and ivf.recall >= target
        chosen[target] = (ivf.index.nprobe, ivf.recall)
    assert chosen[0.99][0] > chosen[0.5][0] and chosen[0.99][1] >= chosen[0.5][1]
    streamed = StreamedTopK(queries, 10, approximate=True, nprobe=1, min_recall=0.99, use_gpu=False)
    for start in range(0, 8_000, 4_000):
        streamed.add_block(database[start : start + 4_000], start)
    assert streamed.recall() >= 0.97 and streamed.describe()["nprobe"] != 1


def test_ivf_report_close_to_exact_report() -> None:
    task, generic = clustered(4, 1_200), clustered(5, 3_000)
    base: dict[str, Any] = {
        "bootstrap": 10,
        "support_n": 100,
        "reference_n": 300,
        "threads": 2,
        "block_size": 1_000,
    }
    exact = compare_embeddings(
        TaskSide(task),
        GenericSide.from_array(generic, 1_000),
        CompareSettings(exact_max=5_000, **base),
    )
    approx = compare_embeddings(
        TaskSide(task),
        GenericSide.from_array(generic, 1_000),
        CompareSettings(exact_max=1_000, **base),
    )
    assert approx["index"]["task"]["type"] == "IndexIVFFlat"
    assert approx["index"]["generic_search"]["recall"] >= 0.95
    for name in ("coverage", "density", "nn_cosine_q50"):
        assert approx["global"][name]["value"] == pytest.approx(
            exact["global"][name]["value"], abs=0.02
        )


def test_bottom_k_sample_ignores_order_and_blocking() -> None:
    x = clustered(6, 3_000)
    whole, blocked = BottomKSample(200, 1), BottomKSample(200, 1)
    whole.offer(x, 0)
    perm = np.random.default_rng(0).permutation(3_000)
    for start in range(0, 3_000, 700):
        blocked.offer(x[perm[start : start + 700]], start)
    np.testing.assert_array_equal(whole.rows()[1], blocked.rows()[1])
    assert len(np.unique(content_keys(x, 1))) == 3_000


def test_resampled_group_statistics_equal_numpy_on_the_resample() -> None:
    """Counts-based quantiles / means equal np.quantile / mean of the gathered resample."""
    rng = np.random.default_rng(3)
    values = np.round(rng.random(500), 2)  # ties on purpose
    groups = rng.integers(0, 4, 500)
    groups[groups == 3] = 2  # group 3 empty
    quantiles = GroupQuantiles(values, groups, 4)
    for idx in (np.arange(500), rng.integers(0, 500, 500), rng.integers(0, 500, 37)):
        counts = np.bincount(idx, minlength=500).astype(np.float64)
        got = quantiles(counts, (0.0, 0.1, 0.5, 0.9, 1.0))
        means = weighted_group_means(values, counts, groups, 4)
        sample, sample_groups = values[idx], groups[idx]
        np.testing.assert_allclose(got[:, 0], np.quantile(sample, [0, 0.1, 0.5, 0.9, 1]))
        assert means[0] == pytest.approx(sample.mean())
        for g in range(4):
            members = sample[sample_groups == g]
            if len(members) == 0:
                assert np.isnan(got[:, 1 + g]).all() and np.isnan(means[1 + g])
                continue
            np.testing.assert_allclose(got[:, 1 + g], np.quantile(members, [0, 0.1, 0.5, 0.9, 1]))
            assert means[1 + g] == pytest.approx(members.mean())


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="bootstrap"):
        CompareSettings(bootstrap=1)
    with pytest.raises(UserError, match="--by"):
        SimilarityConfig(generic="g.txt", task="t.txt", out="r.json", by="topic")  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"\.json"):
        SimilarityConfig(generic="g.txt", task="t.txt", out="r.txt")

"""FAISS search of the similarity package: approximate (IVF) against exact, streaming, config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from logit_store import UserError
from similarity import CompareSettings, GenericSide, SimilarityConfig, TaskSide, compare_embeddings
from similarity.knn import InnerProductIndex, StreamedTopK, configure_threads
from similarity.sampling import BottomKSample, content_keys


def clustered(seed: int, n: int, d: int = 32, n_centres: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((n_centres, d))
    x = centres[rng.integers(0, n_centres, n)] + 0.4 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_agrees_with_exact_search() -> None:
    configure_threads(2)
    database, queries = clustered(0, 6_000), clustered(1, 1_500)
    exact = InnerProductIndex(database, exact_max=10_000, nprobe=16, seed=0, use_gpu=False)
    ivf = InnerProductIndex(database, exact_max=1_000, nprobe=16, seed=0, use_gpu=False)
    _, exact_ids = exact.search(queries, 10)
    _, ivf_ids = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, ivf_ids, strict=True)])
    assert recall >= 0.95
    assert (
        ivf.describe()["type"] == "IndexIVFFlat" and ivf.recall is not None and ivf.recall >= 0.95
    )


def test_streamed_blocks_match_one_exact_search() -> None:
    database, queries = clustered(2, 5_000), clustered(3, 800)
    exact = InnerProductIndex(database, exact_max=10_000, nprobe=16, seed=0, use_gpu=False)
    want_sims, want_ids = exact.search(queries, 10)
    streamed = StreamedTopK(queries, 10, approximate=False, nprobe=16, use_gpu=False)
    for start in range(0, 5_000, 1_200):  # uneven last block
        streamed.add_block(database[start : start + 1_200], start)
    sims, ids = streamed.result()
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert (ids[:, 0] == want_ids[:, 0]).mean() > 0.999
    approx = StreamedTopK(queries, 10, approximate=True, nprobe=16, use_gpu=False)
    for start in range(0, 5_000, 2_500):
        approx.add_block(database[start : start + 2_500], start)
    assert approx.recall() >= 0.95


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


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="bootstrap"):
        CompareSettings(bootstrap=1)
    with pytest.raises(UserError, match="--by"):
        SimilarityConfig(generic="g.txt", task="t.txt", out="r.json", by="topic")  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"\.json"):
        SimilarityConfig(generic="g.txt", task="t.txt", out="r.txt")

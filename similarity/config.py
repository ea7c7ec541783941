"""The one frozen, validated configuration of a similarity run (DESIGN §6).

`SimilarityConfig` drives `run_similarity` (corpora in, report out); `CompareSettings` is the
part the vector-level core (`compare_embeddings`) needs, so tests can run the core on synthetic
vectors without corpora or an encoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from logit_store import UserError

GroupField = Literal["domain", "intent", "locale", "split"]
GROUP_FIELDS: tuple[GroupField, ...] = ("domain", "intent", "locale", "split")


def available_threads() -> int:
    """CPU cores this process may use (affinity-aware)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class CompareSettings:
    """Settings of the vector-level comparison.

    k: neighbourhood size of the coverage/density manifolds (Naeem et al. 2020 use k = 5).
    bootstrap: replicates for every interval (task side resampled, generic side held fixed).
    ci: two-sided interval level.
    reference_n: cap on each side of the matched-size references (split-half and unrelated).
    support_n: cap per side for centroid / Fréchet / MMD / classifier metrics.
    near_dup_cosine: a task text with a generic neighbour at cosine >= this is a near-duplicate.
    block_size: generic vectors per streamed block (memory is O(block_size * d)).
    exact_max: database sizes above this use an IVF index (with a recall check) instead of exact.
    nprobe: IVF lists visited per query at first; doubled until the recall@k of sampled queries
    against exact search reaches min_recall (see `similarity.knn`).
    min_recall: recall@k an approximate index is calibrated to.
    threads: FAISS / torch threads, set explicitly.
    use_gpu: use faiss-gpu when it is installed and a GPU is visible.
    """

    k: int = 5
    bootstrap: int = 200
    ci: float = 0.95
    seed: int = 0
    reference_n: int = 5_000
    support_n: int = 4_000
    near_dup_cosine: float = 0.95
    block_size: int = 65_536
    exact_max: int = 20_000
    nprobe: int = 4
    min_recall: float = 0.98
    threads: int = field(default_factory=available_threads)
    use_gpu: bool = True

    def __post_init__(self) -> None:
        checks = {
            "k": self.k >= 1,
            "bootstrap": self.bootstrap >= 10,
            "ci": 0.0 < self.ci < 1.0,
            "reference_n": self.reference_n >= 2 * self.k + 2,
            "support_n": self.support_n >= 20,
            "near_dup_cosine": 0.0 < self.near_dup_cosine <= 1.0,
            "block_size": self.block_size >= 1_000,
            "exact_max": self.exact_max >= 1_000,
            "nprobe": self.nprobe >= 1,
            "min_recall": 0.0 < self.min_recall <= 1.0,
            "threads": self.threads >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise UserError(
                    f"similarity setting {name}={getattr(self, name)!r} is out of range"
                )


@dataclass(frozen=True)
class SimilarityConfig:
    """One `kdcache similarity` run.

    generic, task: corpus SOURCEs (`teacher_infer.corpora.read_corpus` syntax: a file, folder,
    ``hf:...`` or ``demo:wikipedia|atis|bbc``).
    by: label that splits the task into groups; None picks the first of domain/intent/locale/split
    with at least two values.
    encoder: sentence-encoder path or name, or a kdcache store (its teacher; a local path or an
    fsspec URL such as s3://bucket/cache.zarr); None = the packaged all-MiniLM-L6-v2.
    storage_options: fsspec options (KEY=VALUE strings) for an `encoder` store URL.
    max_per_side: texts sampled (seeded, uniformly at random) from each side, in one streaming
    pass over each corpus (memory O(max_per_side)).
    exact_duplicates: look every task text up in the whole generic corpus (normalised-text
    digests, `similarity.contamination`) during that pass; False skips it (the pass then reads
    ~300k instead of ~180k generic lines/s on one core).
    out: report JSON path; plot: optional PNG path.
    """

    generic: str
    task: str
    out: str
    by: GroupField | None = None
    encoder: str | None = None
    max_per_side: int = 10_000
    exact_duplicates: bool = True
    plot: str | None = None
    batch_size: int = 64
    max_length: int = 128
    settings: CompareSettings = field(default_factory=CompareSettings)
    storage_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.by is not None and self.by not in GROUP_FIELDS:
            raise UserError(f"--by {self.by!r}: expected one of {', '.join(GROUP_FIELDS)}")
        if self.max_per_side < 2 * self.settings.k + 2:
            raise UserError(
                f"--max-per-side {self.max_per_side}: need at least {2 * self.settings.k + 2}"
            )
        if not self.out.endswith(".json"):
            raise UserError(f"--out {self.out!r}: the report is JSON; give a path ending in .json")
        if self.plot is not None and not self.plot.endswith(".png"):
            raise UserError(f"--plot {self.plot!r}: give a path ending in .png")
        if self.batch_size < 1 or self.max_length < 8:
            raise UserError("batch_size must be >= 1 and max_length >= 8")

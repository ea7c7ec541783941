"""Similarity of a task corpus to a generic corpus in a sentence-embedding space (DESIGN §6).

Library entry: `run_similarity(SimilarityConfig) -> dict`; the vector-level core is
`compare_embeddings(TaskSide, GenericSide, CompareSettings)`.
"""

from similarity.compare import METRICS, GenericSide, TaskSide, compare_embeddings
from similarity.config import CompareSettings, SimilarityConfig
from similarity.report import SCHEMA, load_report, run_similarity

__all__ = [
    "METRICS",
    "SCHEMA",
    "CompareSettings",
    "GenericSide",
    "SimilarityConfig",
    "TaskSide",
    "compare_embeddings",
    "load_report",
    "run_similarity",
]

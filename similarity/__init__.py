"""Similarity of a task corpus to a generic corpus in a sentence-embedding space (DESIGN §6).

Library entry: `run_similarity(SimilarityConfig) -> dict`; the vector-level core is
`compare_embeddings(TaskSide, GenericSide, CompareSettings)`.

The names below are imported on first use, so `import similarity.commands` (the CLI) does not
load FAISS, torch and transformers before a command needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from similarity.compare import GenericSide, TaskSide, compare_embeddings
    from similarity.config import CompareSettings, SimilarityConfig
    from similarity.metric_tables import METRICS
    from similarity.report import SCHEMA, load_report, run_similarity

_HOMES = {
    "METRICS": "metric_tables",
    "GenericSide": "compare",
    "TaskSide": "compare",
    "compare_embeddings": "compare",
    "CompareSettings": "config",
    "SimilarityConfig": "config",
    "SCHEMA": "report",
    "load_report": "report",
    "run_similarity": "report",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'similarity' has no attribute {name!r}")
    return getattr(import_module(f"similarity.{_HOMES[name]}"), name)

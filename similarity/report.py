"""`run_similarity`: corpora in, a schema-versioned JSON report (+ table, + PNG) out.

Both SOURCEs are read with `teacher_infer.corpora.read_corpus`, sampled (seeded, uniformly at
random, at most ``max_per_side`` texts each), embedded with the sentence encoder (the generic side
block by block, so its vectors are never all in memory) and compared by `compare_embeddings`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from logit_store import UserError
from similarity.compare import GenericSide, TaskSide, compare_embeddings
from similarity.config import GROUP_FIELDS, GroupField, SimilarityConfig
from similarity.encoder import SentenceEncoder
from similarity.knn import gpu_count
from teacher_infer.corpora import CorpusText, read_corpus

SCHEMA = "kdcache.similarity/1"


def _sample(texts: list[CorpusText], limit: int, seed: int) -> list[CorpusText]:
    """A seeded uniform random sample of at most ``limit`` texts (never a prefix), in order."""
    if len(texts) <= limit:
        return texts
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep]


def pick_group_field(texts: list[CorpusText], by: GroupField | None) -> GroupField | None:
    """``by`` if given, else the first label with at least two distinct values (None if none)."""
    if by is not None:
        if all(getattr(text, by) is None for text in texts):
            raise UserError(
                f"--by {by}: the task corpus has no {by} labels; "
                f"choose one of {', '.join(GROUP_FIELDS)} that it has"
            )
        return by
    for name in GROUP_FIELDS:
        if len({getattr(text, name) for text in texts} - {None}) >= 2:
            return name
    return None


def _corpus_stats(texts: list[CorpusText], used: list[CorpusText], report: Any) -> dict[str, Any]:
    words = [len(text.text.split()) for text in used]
    return {
        "source": report.source,
        "source_hash": report.source_hash,
        "read": len(texts),
        "used": len(used),
        "skipped": dict(report.skipped),
        "mean_words": round(float(np.mean(words)), 2) if words else 0.0,
        "splits": dict(Counter(text.split for text in used)),
    }


def _read(source: str, seed: int, side: str, minimum: int) -> tuple[list[CorpusText], Any]:
    texts, report = read_corpus(source, seed=seed)
    if len(texts) < minimum:
        raise UserError(
            f"--{side} {source}: only {len(texts)} texts were read; need at least {minimum}"
        )
    return texts, report


def check_writable(path: str | None, flag: str) -> None:
    """Refuse an output path that cannot be written, before any text is embedded."""
    if path is None:
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot create its folder ({err})") from err
    if target.is_dir() or not os.access(target.parent, os.W_OK):
        raise UserError(f"{flag} {path}: not a writable file path")


def run_similarity(config: SimilarityConfig) -> dict[str, Any]:
    """Compare ``config.task`` with ``config.generic``; write JSON (and PNG); return the report."""
    started = time.perf_counter()
    settings = config.settings
    check_writable(config.out, "--out")
    check_writable(config.plot, "--plot")
    generic_all, generic_read = _read(config.generic, settings.seed, "generic", 4)
    # each split half of the task side needs k neighbours besides itself (the references)
    task_all, task_read = _read(config.task, settings.seed, "task", 2 * settings.k + 2)
    generic = _sample(generic_all, config.max_per_side, settings.seed)
    task = _sample(task_all, config.max_per_side, settings.seed + 1)
    by = pick_group_field(task, config.by)
    encoder = SentenceEncoder(
        config.encoder,
        batch_size=config.batch_size,
        max_length=config.max_length,
        threads=settings.threads,
        storage_options=config.storage_options,
    )
    generic_texts = [text.text for text in generic]

    def generic_blocks() -> Iterator[np.ndarray]:
        return encoder.encode_blocks(generic_texts, settings.block_size)

    task_side = TaskSide(
        vectors=encoder.encode([text.text for text in task]),
        groups=None if by is None else [str(getattr(text, by)) for text in task],
        texts=[text.text for text in task],
        ids=[text.id for text in task],
        splits=[text.split for text in task],
    )
    generic_side = GenericSide(
        len(generic), generic_blocks, generic_texts, [text.id for text in generic]
    )
    result = compare_embeddings(task_side, generic_side, settings)
    report = {
        "schema": SCHEMA,
        "config": {
            "generic": config.generic,
            "task": config.task,
            "by": by,
            "encoder": encoder.description,
            "encoder_sha256": encoder.fingerprint(),
            "max_per_side": config.max_per_side,
            "faiss_version": faiss.__version__,
            "faiss_gpus": gpu_count(),
            **{key: value for key, value in asdict(settings).items()},
        },
        "corpus": {
            "generic": _corpus_stats(generic_all, generic, generic_read),
            "task": _corpus_stats(task_all, task, task_read),
        },
        **result,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(report, config.out)
    if config.plot is not None:
        from similarity.render import plot_report

        plot_report(report, config.plot)
    return report


def write_report(report: dict[str, Any], path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_report(path: str) -> dict[str, Any]:
    """Read a saved report, checking it is a kdcache similarity report of this schema."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read a similarity report ({err})") from err
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        found = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise UserError(f"{path}: schema {found!r} is not {SCHEMA!r}; rerun kdcache similarity")
    return report

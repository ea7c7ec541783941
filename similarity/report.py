"""`run_similarity`: corpora in, a schema-versioned JSON report (+ table, + PNG) out.

Both SOURCEs are streamed unit by unit (`teacher_infer.corpora.stream_corpus`), the task first,
each in one pass that draws a seeded uniform sample of at most ``max_per_side`` texts
(`teacher_infer.corpus_sample.TextSample`); memory is O(max_per_side), not O(corpus). The task
pass also keeps a digest per text and the generic pass looks every generic text up in them: the
exact duplicates of the task in the whole generic corpus (`contamination`; ~180k generic lines/s
on one core, ~300k/s with ``exact_duplicates=False``). The samples are embedded with the sentence
encoder (the generic side block by block, so its vectors are never all in memory) and compared by
`compare_embeddings`.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from logit_store import UserError
from similarity.compare import GenericSide, TaskSide, compare_embeddings
from similarity.config import GROUP_FIELDS, GroupField, SimilarityConfig
from similarity.contamination import GenericMatches, TaskKeys, exact_duplicates
from similarity.encoder import SentenceEncoder
from similarity.knn import gpu_count
from teacher_infer.corpora import CorpusText, ReadReport, stream_corpus
from teacher_infer.corpus_index import CorpusIndex, UnitTexts
from teacher_infer.corpus_records import printable_name
from teacher_infer.corpus_sample import TextSample
from teacher_infer.output_files import write_json_atomic

SCHEMA = "kdcache.similarity/2"


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


def _corpus_stats(used: list[CorpusText], report: ReadReport) -> dict[str, Any]:
    words = [len(text.text.split()) for text in used]
    return {
        "source": printable_name(report.source),
        "source_hash": report.source_hash,
        "read": report.n_read,
        "used": len(used),
        "skipped": dict(report.skipped),
        "mean_words": round(float(np.mean(words)), 2) if words else 0.0,
        "splits": dict(Counter(text.split for text in used)),
    }


def _stream(
    source: str,
    seeds: tuple[int, int],
    side: str,
    minimum: int,
    limit: int,
    on_unit: Callable[[UnitTexts], None] | None,
) -> tuple[list[CorpusText], ReadReport, CorpusIndex]:
    """One pass over ``source``: (sample of <= limit texts in corpus order, report, index).

    seeds: (corpus seed of the demo splits, sample seed); on_unit sees every unit as it passes.
    """
    stream = stream_corpus(source, seed=seeds[0])
    sample = TextSample(limit, seeds[1])
    for unit in stream.units():
        sample.offer(unit.texts, unit.record_ids)
        if on_unit is not None:
            on_unit(unit)
    report = stream.report()
    if report.n_read < minimum:
        raise UserError(
            f"--{side} {source}: only {report.n_read} texts were read; need at least {minimum}"
        )
    return sample.texts()[0], report, stream.index


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
    encoder = SentenceEncoder(  # loaded first: a bad --encoder fails before the corpus passes
        config.encoder,
        batch_size=config.batch_size,
        max_length=config.max_length,
        threads=settings.threads,
        storage_options=config.storage_options,
    )
    seed, limit = settings.seed, config.max_per_side
    task_keys = TaskKeys() if config.exact_duplicates else None
    # each split half of the task side needs k neighbours besides itself (the references)
    task, task_read, task_index = _stream(
        config.task, (seed, seed + 1), "task", 2 * settings.k + 2, limit,
        None if task_keys is None else task_keys.add,
    )  # fmt: skip
    by = pick_group_field(task, config.by)
    matches = None if task_keys is None else GenericMatches(task_keys)
    generic, generic_read, generic_index = _stream(
        config.generic, (seed, seed), "generic", 4, limit, None if matches is None else matches.add
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
            "generic": printable_name(config.generic),
            "task": printable_name(config.task),
            "by": by,
            "encoder": encoder.description,
            "encoder_sha256": encoder.fingerprint(),
            "max_per_side": config.max_per_side,
            "exact_duplicates": config.exact_duplicates,
            "faiss_version": faiss.__version__,
            "faiss_gpus": gpu_count(),
            **{key: value for key, value in asdict(settings).items()},
        },
        "corpus": {
            "generic": _corpus_stats(generic, generic_read),
            "task": _corpus_stats(task, task_read),
        },
        **result,
        "exact_duplicates": None
        if task_keys is None or matches is None
        else exact_duplicates(task_keys, matches, by, task_index, generic_index),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_report(report, config.out)
    if config.plot is not None:
        from similarity.render import plot_report

        plot_report(report, config.plot)
    return report


def write_report(report: dict[str, Any], path: str) -> None:
    """The report as UTF-8 JSON at `path`, whole or not at all (`write_json_atomic`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, report, ensure_ascii=False)


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

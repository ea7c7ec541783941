"""Read a corpus SOURCE into `CorpusText`s plus a `ReadReport` (DESIGN §4, input).

SOURCE is one of:

* a file: ``.txt`` (one text per line), ``.jsonl`` (field ``text``; optional ``id, split,
  domain, intent, locale, tags``), ``.csv`` / ``.tsv`` (header with a ``text`` column, same
  optional columns), ``.parquet`` (same columns). ``tags`` are word-level BIO tags for
  ``text.split()``, a list or a space-separated string. A file in the MASSIVE format (``utt``,
  ``annot_utt``, ``scenario``, ``intent``, ``partition``, ``locale``) is recognised by its
  fields and read natively (see `teacher_infer.massive`).
* a folder: every file with one of those suffixes below it, in sorted order of relative path.
* ``hf:NAME[:CONFIG][:SPLIT]``: ``datasets.load_dataset(NAME, CONFIG, split=SPLIT)`` — a hub
  name (needs the hub or its cache) or a local dataset folder. For the packaged builders
  ``json, csv, parquet, text, arrow`` the second part is the data file path:
  ``hf:json:PATH[:SPLIT]``, i.e. ``load_dataset("json", data_files=PATH)``, split "train"
  unless given. Without SPLIT every split of the dataset is read, and a row's ``split`` is its
  dataset split (unless it has a ``split`` column). ClassLabel columns become their names.
* ``demo:wikipedia``, ``demo:atis``, ``demo:bbc``: the packaged demo corpora
  (`teacher_infer.demo_corpora`), checksum-verified.

Bad input policy — never a silent drop, never a raw traceback:

* skipped and counted in ``ReadReport.skipped`` (first few in ``examples`` as
  "FILE:LINE: reason: detail"): "empty_line" (empty or whitespace-only line), "invalid_utf8"
  (the line), "malformed_json", "not_an_object", "malformed_row" (CSV field count), and per row
  "missing_text" / "empty_text" (row without a text value), "bad_field" (wrong type),
  "bad_split", "tag_count_mismatch" (BIO tags ≠ words), "unknown_tag" (not O / B-x / I-x),
  "bad_annotation" / "annotation_mismatch" (MASSIVE markup); in a folder, "unsupported_file"
  (a file with another suffix), "hidden_file" (a file or folder whose name starts with '.',
  e.g. .ipynb_checkpoints copies) and "empty_file".
* stops with `CorpusError` ("FILE:LINE: what is wrong"): a path that does not exist, a file with
  an unsupported suffix, a structured file whose header / first row has no ``text`` field (nor
  the MASSIVE fields), a CSV quote that never closes, an unreadable Parquet file, an ``hf:``
  dataset that cannot be loaded or has no text column, a missing or altered demo package, and a
  source that yields no text.

``seed`` fixes the hashed train/test splits of the demo corpora; other sources keep the
split they state (default "train").
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from teacher_infer.corpus_formats import FILE_SUFFIXES, READERS, row_converter
from teacher_infer.corpus_records import CorpusError, CorpusText, ReadReport, RowProblem, SkipLog
from teacher_infer.demo_corpora import read_demo

__all__ = ["CorpusError", "CorpusText", "ReadReport", "read_corpus"]

HF_FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


def read_corpus(source: str, *, seed: int = 0) -> tuple[list[CorpusText], ReadReport]:
    """Read every text of ``source`` (see the module docstring for the forms and the policy)."""
    log = SkipLog()
    if source.startswith("demo:"):
        texts, source_hash = read_demo(source.removeprefix("demo:"), seed, log)
    elif source.startswith("hf:"):
        texts, source_hash = _read_hf(source, log)
    else:
        texts, source_hash = _read_path(Path(source), log)
    report = log.report(source, source_hash, len(texts))
    if not texts:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in report.skipped.items())
        raise CorpusError(
            f"{source}: no text could be read"
            + (f" (skipped {reasons}; e.g. {report.examples[0]})" if reasons else "")
        )
    return texts, report


def write_sample(source: str, per_split: dict[str, int], path: Path, seed: int = 0) -> str:
    """A seeded sample of `source` (at most per_split[split] texts per split) as JSONL at path.

    Kept when it already exists, so a rerun reuses the same sample.
    """
    if not path.is_file():
        texts, _ = read_corpus(source)
        rng, rows = random.Random(seed), []
        for split, limit in per_split.items():
            pool = [t for t in texts if t.split == split]
            rows += rng.sample(pool, min(limit, len(pool)))
        fields = ("id", "text", "split", "domain", "intent", "tags")
        lines = [
            json.dumps({f: getattr(t, f) for f in fields if getattr(t, f) is not None})
            for t in rows
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return str(path)


def _read_path(path: Path, log: SkipLog) -> tuple[list[CorpusText], str]:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    hasher = hashlib.sha256()
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise CorpusError(
                f"{path}: unsupported file type {path.suffix!r}; "
                f"use one of {', '.join(FILE_SUFFIXES)}"
            )
        return READERS[path.suffix.lower()](path, str(path), hasher, log), hasher.hexdigest()
    texts: list[CorpusText] = []
    files = sorted(
        (p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()
    )
    supported = [p for p in files if p.suffix.lower() in READERS]
    if not supported:
        raise CorpusError(f"{path}: no {', '.join(FILE_SUFFIXES)} files in this folder")
    for file in files:
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            log.skip(str(file), 1, "hidden_file", "names starting with '.' are not read")
            continue
        if file.suffix.lower() not in READERS:
            log.skip(str(file), 1, "unsupported_file", f"suffix {file.suffix!r}")
            continue
        before = len(texts)
        texts.extend(READERS[file.suffix.lower()](file, str(file), hasher, log))
        if len(texts) == before and file.stat().st_size == 0:
            log.skip(str(file), 1, "empty_file")
    return texts, hasher.hexdigest()


def _parse_hf(spec: str) -> tuple[str, dict[str, Any], str | None]:
    """``hf:...`` -> (path argument, other load_dataset kwargs, split or None)."""
    parts = spec.removeprefix("hf:").split(":")
    if not parts[0]:
        raise CorpusError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT] or hf:json:PATH[:SPLIT]")
    if parts[0] in HF_FILE_BUILDERS:
        rest = ":".join(parts[1:])
        split: str | None = "train"
        if not Path(rest).exists() and ":" in rest and Path(rest.rpartition(":")[0]).exists():
            rest, _, split = rest.rpartition(":")
        if not Path(rest).exists():
            raise CorpusError(f"{spec}: data file {rest!r} does not exist")
        return parts[0], {"data_files": rest}, split
    if len(parts) > 3:
        raise CorpusError(f"{spec}: expected hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = [*parts, None, None][:3]
    assert name is not None
    return name, {"name": config or None}, split or None


def _read_hf(spec: str, log: SkipLog) -> tuple[list[CorpusText], str]:
    import datasets

    path, kwargs, split = _parse_hf(spec)
    try:
        loaded = datasets.load_dataset(path, split=split, **kwargs)
    except Exception as error:  # any loader failure is the user's dataset spec: report it
        raise CorpusError(
            f"{spec}: datasets.load_dataset failed: {type(error).__name__}: {error}"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        parts = sorted(loaded.items())
    elif isinstance(loaded, datasets.Dataset):
        parts = [(split or "train", loaded)]
    else:
        raise CorpusError(
            f"{spec}: streaming datasets are not supported; give a non-streaming dataset"
        )
    hasher = hashlib.sha256()
    texts: list[CorpusText] = []
    for split_name, dataset in parts:
        hasher.update(dataset._fingerprint.encode())
        file = f"{spec}[{split_name}]"
        convert = row_converter(dataset.column_names, file)
        label_columns = {
            column: feature
            for column, feature in dataset.features.items()
            if isinstance(feature, datasets.ClassLabel)
        }
        for row_index, row in enumerate(dataset, start=1):
            for column, feature in label_columns.items():
                if isinstance(row.get(column), int) and row[column] >= 0:
                    row[column] = feature.int2str(row[column])
            try:
                texts.append(convert(row, file, row_index, split_name))
            except RowProblem as problem:
                log.skip(file, row_index, problem.reason, problem.detail)
    return texts, hasher.hexdigest()

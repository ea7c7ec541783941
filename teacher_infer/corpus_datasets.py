"""Rows of ``demo:`` and ``hf:`` sources, read by index range (no file offsets to keep).

A demo corpus (small, packaged, checksum-verified) is read once per process; an ``hf:`` dataset
is arrow-backed, so a unit's rows are a slice of it (ClassLabel columns become their names).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from teacher_infer.corpus_formats import row_converter
from teacher_infer.corpus_records import CorpusError, CorpusText, SkipLog
from teacher_infer.demo_corpora import read_demo
from teacher_infer.massive import massive_row

HF_FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


def rows_slice(rows: Any, start: int, stop: int) -> list[Any]:
    """Rows [start, stop) of a demo split (CorpusTexts as records) or an hf split (dicts)."""
    if isinstance(rows, LabelledRows):
        return rows.slice(start, stop)
    return [r.to_record().to_dict() for r in rows[start:stop]]


@lru_cache(maxsize=4)
def demo_texts(name: str, seed: int) -> tuple[tuple[CorpusText, ...], SkipLog]:
    """A packaged demo corpus (small, checksum-verified), read once per process."""
    log = SkipLog()
    texts, _ = read_demo(name, seed, log)
    return tuple(texts), log


def row_source(source: str, seed: int, log: SkipLog) -> list[tuple[str, Any]]:
    """(file name, rows) per split of a demo or hf source."""
    if source.startswith("demo:"):
        texts, demo_log = demo_texts(source.removeprefix("demo:"), seed)
        log.counts.update(demo_log.counts)
        log.examples.extend(demo_log.examples)
        return [(source, texts)]
    return list(hf_splits(source))


@lru_cache(maxsize=4)
def hf_splits(spec: str) -> tuple[tuple[str, Any], ...]:
    import datasets

    path, kwargs, split = parse_hf(spec)
    try:
        loaded = datasets.load_dataset(path, split=split, **kwargs)
    except Exception as error:  # any loader failure is the user's dataset spec: report it
        raise CorpusError(
            f"{spec}: datasets.load_dataset failed: {_cause(error)}{_hint(spec)}"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        parts = sorted(loaded.items())
    elif isinstance(loaded, datasets.Dataset):
        parts = [(split or "train", loaded)]
    else:
        raise CorpusError(
            f"{spec}: streaming datasets are not supported; give a non-streaming dataset"
        )
    out = []
    for split_name, dataset in parts:
        labels = {c: f for c, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)}
        convert = row_converter(dataset.column_names, f"{spec}[{split_name}]")
        kind = "massive" if convert is massive_row else "text"
        out.append((f"{spec}[{split_name}]", LabelledRows(dataset, labels, kind)))
    return tuple(out)


class LabelledRows:
    """A `datasets.Dataset` as a sequence of row dicts, ClassLabel columns as their names."""

    def __init__(self, dataset: Any, labels: dict[str, Any], rows_kind: str) -> None:
        self.dataset, self.labels, self.rows_kind = dataset, labels, rows_kind

    def __len__(self) -> int:
        return len(self.dataset)

    def slice(self, start: int, stop: int) -> list[dict[str, Any]]:
        block = self.dataset[start:stop]
        rows = [
            dict(zip(block, values, strict=True)) for values in zip(*block.values(), strict=True)
        ]
        for row in rows:
            for column, feature in self.labels.items():
                if isinstance(row.get(column), int) and row[column] >= 0:
                    row[column] = feature.int2str(row[column])
        return rows


def _cause(error: BaseException) -> str:
    """The error and the causes it wraps (datasets hides a file's parse error behind "An error
    occurred while generating the dataset"), on one line."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(" ".join(p.split()) for p in parts[:3])


def _hint(spec: str) -> str:
    """For a local file read through a `datasets` builder: kdcache's own reader skips and
    counts bad lines, datasets refuses the whole file."""
    path, kwargs, _ = parse_hf(spec)
    if path in HF_FILE_BUILDERS and Path(str(kwargs.get("data_files", ""))).suffix.lower() in (
        ".jsonl",
        ".csv",
        ".tsv",
        ".txt",
        ".parquet",
    ):
        return (
            f"; to skip and count bad rows instead, pass the file itself: "
            f"--corpus NAME={kwargs['data_files']}"
        )
    return ""


def parse_hf(spec: str) -> tuple[str, dict[str, Any], str | None]:
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

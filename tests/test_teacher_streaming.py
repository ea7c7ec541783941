"""Precompute at corpus scale: unit-local plans, worker pipelines, source identity on resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from synthetic import assert_same_store
from teacher_fixtures import precompute_inputs

from logit_store import consolidate_store, open_store
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.corpus_records import CorpusError
from teacher_infer.precompute import (
    compute_units,
    corpus_indexes,
    load_teacher_for,
    open_writer,
    run_precompute,
    unit_source,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return precompute_inputs(tmp_path_factory.mktemp("streaming"), n_generic=200)


def _config(files: dict[str, Path], out: Path, **overrides: Any) -> PrecomputeConfig:
    fields: dict[str, Any] = dict(
        teacher=str(files["bert"]),
        corpora=(("generic", str(files["generic"])), ("task", str(files["task"]))),
        out=str(out),
        max_length=48,
        unit_size=8,
        token_budget=256,
        device="cpu",
        progress=False,
        workers=0,
    )
    return PrecomputeConfig(**{**fields, **overrides})


class CountingTokenizer:
    """The real tokenizer, counting the texts it is asked to tokenize (through its Python call:
    the plan uses the Rust backend only when the tokenizer exposes one)."""

    backend_tokenizer = None

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.texts = tokenizer, 0

    def __call__(self, inputs: list[Any], **kwargs: Any) -> Any:
        self.texts += len(inputs)
        return self.tokenizer(inputs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_worker_processes_give_the_single_process_arrays(files, tmp_path: Path) -> None:
    one = run_precompute(_config(files, tmp_path / "w0.zarr", workers=0))
    two = run_precompute(_config(files, tmp_path / "w2.zarr", workers=2))
    assert one["corpora"] == two["corpora"] and one["corpora"]["generic"]["sequences"] == 200
    assert_same_store(str(tmp_path / "w0.zarr"), str(tmp_path / "w2.zarr"))


def test_a_rank_reads_and_tokenizes_only_its_own_units(files, tmp_path: Path) -> None:
    """Two ranks' shares (pending[r::2]) computed by two writers: each tokenizes exactly the
    records of its own units, and together they equal a single-process run."""
    reference = tmp_path / "ref.zarr"
    run_precompute(_config(files, reference))
    out = tmp_path / "ranks.zarr"
    config = _config(files, out)
    teacher, meta, masking = load_teacher_for(config, "cpu")
    indexes = corpus_indexes(config)
    counted = []
    for rank in (0, 1):
        writer = open_writer(config, meta, indexes)
        source = unit_source(teacher, config, masking, indexes)
        tokenizer = CountingTokenizer(source.tokenizer)
        source = type(source)(**{**vars(source), "tokenizer": tokenizer})
        mine = [(name, u.index) for name in indexes for u in writer.pending(name)[rank::2]]
        if rank == 1:  # rank 0 has written its share: what is pending now is rank 1's
            mine = [(name, u.index) for name in indexes for u in writer.pending(name)]
        compute_units(teacher, config, source, mine, writer)
        own = sum(int(indexes[name].units[u, 4]) for name, u in mine)
        counted.append((tokenizer.texts, own))
    assert [texts for texts, _ in counted] == [own for _, own in counted]
    assert 0 < counted[0][0] < 240
    consolidate_store(str(out))  # what rank 0 does after the final barrier
    assert_same_store(str(reference), str(out))


def test_a_changed_source_is_refused_on_resume_naming_the_line(files, tmp_path: Path) -> None:
    corpus = tmp_path / "generic.txt"
    corpus.write_bytes(files["generic"].read_bytes())
    config = _config(files, tmp_path / "s.zarr", corpora=(("generic", str(corpus)),))
    teacher, meta, masking = load_teacher_for(config, "cpu")
    indexes = corpus_indexes(config)
    writer = open_writer(config, meta, indexes)
    source = unit_source(teacher, config, masking, indexes)
    compute_units(teacher, config, source, [("generic", 0), ("generic", 1)], writer)
    lines = corpus.read_text().splitlines()
    lines[20] = lines[20].upper()  # same size, another text: a line of unit 2 (not yet done)
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=rf"{corpus}:17: the source changed .*unit 2"):
        run_precompute(config)
    stat = corpus.stat()
    corpus.write_bytes(files["generic"].read_bytes())  # restored content, new time stamp
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    summary = run_precompute(config)  # re-indexed: the content is the store's, so it resumes
    assert summary["corpora"]["generic"]["units_computed"] == 23
    assert open_store(config.out)["generic"].complete


def test_k_beyond_the_classes_is_recorded_as_the_k_stored(files, tmp_path: Path) -> None:
    run_precompute(_config(files, tmp_path / "k.zarr", k=40000))
    store = open_store(str(tmp_path / "k.zarr"))
    assert store.meta.k == store.meta.vocab_size == 30522 == store.meta.width

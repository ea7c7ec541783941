"""Seeded synthetic stores for tests: Zipf-shaped teacher logits, real top-k/sampled targets.

Also runnable as a writer process (used by the kill/resume and concurrent-writer tests):
    python tests/synthetic.py URL ENCODING [--units 0,2,4] [--sleep SECONDS]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import zarr

from logit_store import (
    CorpusSpec,
    SequenceInfo,
    SparseTargets,
    StoreMeta,
    StoreWriter,
    Unit,
    UnitData,
    create_store,
)

VOCAB = 500
T = TypeVar("T", bound=SparseTargets)


def synthetic_meta(encoding: str = "topk", **overrides: object) -> StoreMeta:
    fields: dict[str, object] = dict(
        teacher_id="synthetic-teacher",
        teacher_hash="t" * 64,
        tokenizer_id="synthetic-tok",
        tokenizer_hash="a" * 64,
        vocab_size=VOCAB,
        pad_token_id=0,
        mask_token_id=4,
        encoding=encoding,
        k=8,
        n_samples=20 if encoding == "sampled" else 0,
        masking={"scheme": "bert-80-10-10", "mask_prob": 0.15, "seed": 0, "positions": "masked"},
        max_length=32,
    )
    fields.update(overrides)
    return StoreMeta(**fields)  # type: ignore[arg-type]


def sequence_spec(name: str, n: int, unit_size: int, **fields: Any) -> CorpusSpec:
    """A corpus of `n` sequences cut into units of `unit_size` consecutive sequences."""
    return CorpusSpec(name=name, n_units=-(-n // unit_size), unit_size=unit_size, **fields)


def unit_rows(unit: Unit, unit_size: int, n: int) -> range:
    """The sequences of `unit` in a corpus of `n` (see `sequence_spec`)."""
    return range(unit.index * unit_size, min((unit.index + 1) * unit_size, n))


@dataclass(frozen=True)
class SyntheticCorpus:
    spec: CorpusSpec
    lengths: np.ndarray
    n_positions: np.ndarray

    @property
    def name(self) -> str:
        return self.spec.name

    def rows(self, unit: Unit) -> range:
        return unit_rows(unit, self.spec.unit_size, len(self.lengths))


def synthetic_plans(
    n_task: int = 40, n_generic: int = 30, unit_size: int = 8
) -> list[SyntheticCorpus]:
    plans = []
    for name, n, seed in (("generic", n_generic, 1), ("task", n_task, 2)):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, 32, n)
        spec = sequence_spec(
            name, n, unit_size, source=f"synthetic:{name}", source_hash=f"{seed:064d}"
        )
        plans.append(SyntheticCorpus(spec, lengths, np.maximum(1, lengths // 6)))
    return plans


def synthetic_specs(**kwargs: int) -> list[CorpusSpec]:
    return [p.spec for p in synthetic_plans(**kwargs)]


def store_arrays(url: str) -> dict[str, np.ndarray]:
    """Every array of a store, by path, fully read."""
    found: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, arr in group.arrays():
            found[prefix + name] = np.asarray(arr[...])
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(url, mode="r"), "")
    for name, values in found.items():
        if name.endswith("/done"):  # each store has its own id; the rest must be equal
            found[name] = np.array([_without_store_id(v) for v in values.tolist()], dtype=object)
    return found


def _without_store_id(record: str) -> str:
    return (
        json.dumps({k: v for k, v in json.loads(record).items() if k != "store_id"})
        if record
        else ""
    )


def assert_same_store(a: str, b: str) -> None:
    """Two stores hold the same arrays with identical contents (targets included)."""
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right) and any("target_values" in k for k in left)
    for name, values in left.items():
        same = np.array_equal(values, right[name])
        assert same, f"{name}: {np.sum(values != right[name])} of {values.size} entries differ"


def numpy_targets(t: T) -> T:
    return t.map(lambda x: x.numpy())


def zipf_logits(
    rows: int, vocab: int, generator: torch.Generator, spread: float = 2.0
) -> torch.Tensor:
    """Logits with a Zipf-shaped prior over a fixed token order plus per-row noise."""
    rank = torch.arange(1, vocab + 1, dtype=torch.float32)
    prior = -1.1 * torch.log(rank)
    return prior + spread * torch.randn(rows, vocab, generator=generator)


def unit_data(meta: StoreMeta, plan: SyntheticCorpus, start: int, stop: int) -> UnitData:
    """Deterministic data of sequences [start, stop): same inputs give identical arrays."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{plan.name}:{start}".encode()))
    rng = np.random.default_rng([start, len(plan.name)])
    lengths = plan.lengths[start:stop]
    n_pos = plan.n_positions[start:stop]
    input_ids = rng.integers(5, meta.vocab_size, int(lengths.sum()))
    positions = np.concatenate(
        [rng.choice(int(n), int(p), replace=False) for n, p in zip(lengths, n_pos, strict=True)]
    )
    logits = zipf_logits(int(n_pos.sum()), meta.vocab_size, gen)
    targets = numpy_targets(meta.target_encoding.from_logits(logits, gen))
    records = [
        SequenceInfo(
            id=f"{plan.name}-{i}",
            line=i + 1,
            split="test" if i % 5 == 0 else "train",
            domain="ab"[i % 2],
            text=f"sentence {i}",
        )
        for i in range(start, stop)
    ]
    word_ids = np.concatenate([np.arange(int(n)) for n in lengths])
    return UnitData(
        input_ids=input_ids,
        word_ids=word_ids,
        lengths=lengths,
        positions=positions,
        masked_ids=np.full(len(positions), meta.mask_token_id),
        n_positions=n_pos,
        targets=targets,
        records=records,
    )


def write_synthetic(
    url: str,
    encoding: str = "topk",
    units: list[int] | None = None,
    sleep: float = 0.0,
    **plan_kwargs: int,
) -> StoreWriter:
    meta, plans = synthetic_meta(encoding), synthetic_plans(**plan_kwargs)
    writer = create_store(url, meta, [p.spec for p in plans])
    for plan in plans:
        for unit in writer.pending(plan.name):
            if units is not None and unit.index not in units:
                continue
            rows = plan.rows(unit)
            writer.write_unit(unit, unit_data(meta, plan, rows.start, rows.stop))
            time.sleep(sleep)
    return writer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("encoding")
    parser.add_argument("--units", default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    chosen = [int(u) for u in args.units.split(",")] if args.units else None
    write_synthetic(args.url, args.encoding, chosen, args.sleep)

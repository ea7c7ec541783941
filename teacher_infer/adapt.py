"""`kdcache teacher-adapt`: second-stage MLM pretraining of a teacher on in-domain text.

    metrics = run_adapt(AdaptConfig(base="path", corpora=(("task", "demo:atis"),), out="teacher"))

The base checkpoint is loaded with `AutoModelForMaskedLM`; a checkpoint without an MLM head (e.g.
the packaged sentence-transformers MiniLM, a bare `BertModel`) gets a freshly initialised head,
which is logged. Training: dynamic BERT masking (80/10/10, a seeded generator), AdamW (fused on
CPU/CUDA) with linear warm-up (10 %) and decay over a fixed step budget; `head_only` freezes the
encoder (and the tied embeddings). The loss is the mean cross-entropy at the masked positions,
and the MLM head (its vocabulary projection is most of a step's compute) runs at those positions
only (`teacher.mlm_logits_at`), unless the model's head cannot be split off (`head_split_holds`).

Corpora stream (`corpora.stream_corpus`: an index, then one unit of 4,096 records at a time), so
memory does not grow with their size. Batches approximate uniform draws from the pooled training
texts of all corpora: the units of all corpora are read in a fresh seeded random order each epoch,
tokenized unit by unit (`plan.plan_texts`) into a `ShuffleBuffer` of ``shuffle_buffer`` sequences,
and each batch draws slots of that buffer uniformly (then refilled from the stream). A text is
therefore drawn near the time its unit is read, not anywhere in the run, and corpora mix in
proportion to their sizes.

Held-out evaluation before and after, per corpus (`hold_out`): masked-token accuracy and
cross-entropy (nats) at the fixed, seeded masks of `plan.py` on at most ``eval_size`` texts: a
seeded sample of the corpus's non-train split when it has one (found among the first units of a
seeded order), else a seeded sample of train texts. Held-out texts are kept out of training by
record number, and texts of a non-train split are never trained on. Output: a Hugging Face folder
(safetensors + tokenizer) and ``adapt_metrics.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from transformers import get_linear_schedule_with_warmup

from logit_store import UserError
from teacher_infer.configs import AdaptConfig
from teacher_infer.corpora import CorpusText, stream_corpus
from teacher_infer.corpus_index import CorpusIndex, read_unit
from teacher_infer.corpus_sample import TextSample
from teacher_infer.plan import MaskingSpec, PlannedUnit, bert_masked, plan_texts
from teacher_infer.teacher import (
    FUSED_ADAMW_DEVICES,
    check_max_length,
    check_tokenizer_fits,
    head_split_holds,
    load_config,
    load_model,
    load_tokenizer,
    mlm_logits_at,
    resolve_device,
)

log = logging.getLogger(__name__)
EVAL_BATCH = 64
HELD_OUT_SCAN = 100  # texts scanned per held-out text at most, looking for a non-train split


@dataclass(frozen=True)
class HeldOut:
    """A corpus's evaluation set, planned at the fixed masks, and what it keeps out of training.

    records: (n,) sorted record numbers of the held-out texts (never trained on, nor are texts of
    another split than "train").
    """

    name: str
    index: CorpusIndex
    planned: PlannedUnit
    records: np.ndarray


@dataclass(frozen=True)
class TrainingUnit:
    """The training texts of one unit: their record numbers and token ids (one array each)."""

    corpus: str
    records: np.ndarray
    sequences: list[np.ndarray]


Planner = Callable[[str, list[CorpusText], np.ndarray], PlannedUnit]


def hold_out(name: str, index: CorpusIndex, eval_size: int, seed: int, plan: Planner) -> HeldOut:
    """The held-out set of one corpus, from units read in a seeded random order.

    Units are scanned until ``eval_size`` texts of a non-train split were seen, or
    HELD_OUT_SCAN · eval_size texts in all (or the corpus ends); held out: a seeded sample of at
    most eval_size of the scanned non-train texts if there were any, else of
    min(eval_size, max(1, scanned // 10)) scanned texts. Memory O(eval_size + one unit).
    """
    other, train = TextSample(eval_size, seed), TextSample(eval_size, seed + 1)
    for u in np.random.default_rng(seed).permutation(index.n_units).tolist():
        unit = read_unit(index, u)
        is_train = [text.split == "train" for text in unit.texts]
        for sample, wanted in ((other, False), (train, True)):
            picks = [i for i, flag in enumerate(is_train) if flag is wanted]
            sample.offer([unit.texts[i] for i in picks], unit.record_ids[picks])
        if other.n_seen >= eval_size or other.n_seen + train.n_seen >= HELD_OUT_SCAN * eval_size:
            break
    if other.n_seen:
        texts, records = other.texts()
    else:
        texts, records = train.texts(limit=min(eval_size, max(1, train.n_seen // 10)))
    return HeldOut(name, index, plan(name, texts, records), records)


def training_units(corpora: list[HeldOut], seed: int, plan: Planner) -> Iterator[TrainingUnit]:
    """Endless: the training texts of every unit of every corpus, pooled, in a fresh seeded
    random order each epoch, tokenized unit by unit (one unit in memory)."""
    pooled = np.array([(c, u) for c, held in enumerate(corpora) for u in range(held.index.n_units)])
    for epoch in itertools.count():
        found = False
        for c, u in pooled[np.random.default_rng([seed, epoch]).permutation(len(pooled))].tolist():
            held = corpora[c]
            unit = read_unit(held.index, u)
            unheld = ~np.isin(unit.record_ids, held.records)
            keep = [i for i, t in enumerate(unit.texts) if t.split == "train" and unheld[i]]
            if not keep:
                continue
            found = True
            records = unit.record_ids[keep]
            planned = plan(held.name, [unit.texts[i] for i in keep], records)
            offsets = planned.token_offsets
            sequences = [planned.input_ids[a:b] for a, b in itertools.pairwise(offsets.tolist())]
            yield TrainingUnit(held.name, records, sequences)
        if not found:
            raise UserError("no training texts left after holding out the evaluation sets")


class ShuffleBuffer:
    """Sequences of a stream in random order: `draw(n)` picks n slots of the buffer uniformly
    (with replacement, like uniform draws from the pooled texts) and refills them from the stream.
    """

    def __init__(self, sequences: Iterator[np.ndarray], capacity: int, gen: torch.Generator):
        self.sequences, self.gen = sequences, gen
        self.rows = list(itertools.islice(sequences, capacity))

    def draw(self, n: int) -> list[np.ndarray]:
        picks = torch.randint(len(self.rows), (n,), generator=self.gen).tolist()
        batch = [self.rows[i] for i in picks]
        for i in dict.fromkeys(picks):
            self.rows[i] = next(self.sequences)
        return batch


def _pad(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Lmax) ids padded with pad_id and the attention mask."""
    lmax = max(len(r) for r in rows)
    ids = torch.full((len(rows), lmax), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), lmax), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.from_numpy(r)
        mask[i, : len(r)] = 1
    return ids, mask


def masked_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    attention: torch.Tensor,
    labels: torch.Tensor,
    split: bool,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((P, V) logits, (P,) gold ids) at the P positions where `labels` != -100."""
    batch_index, positions = (labels != -100).nonzero(as_tuple=True)
    logits = mlm_logits_at(
        model, inputs.to(device), attention.to(device), batch_index.to(device),
        positions.to(device), head_at_positions=split,
    )  # fmt: skip
    return logits.float(), labels[batch_index, positions].to(device)


@torch.inference_mode()
def evaluate(
    model: nn.Module, corpus: PlannedUnit, pad_id: int, split: bool, device: torch.device
) -> dict[str, float]:
    """Masked-token accuracy and mean cross-entropy at the plan's fixed masks of `corpus`."""
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for lo in range(0, len(corpus), EVAL_BATCH):
        seqs = range(lo, min(lo + EVAL_BATCH, len(corpus)))
        ids, mask = _pad([corpus.teacher_input(s) for s in seqs], pad_id)
        labels = torch.full_like(ids, -100)
        for row, s in enumerate(seqs):
            p0, p1 = corpus.position_offsets[s], corpus.position_offsets[s + 1]
            pos = corpus.positions[p0:p1]
            original = corpus.input_ids[corpus.token_offsets[s] + pos]
            labels[row, torch.from_numpy(pos)] = torch.from_numpy(original)
        logits, gold = masked_logits(model, ids, mask, labels, split, device)
        loss += float(nn.functional.cross_entropy(logits, gold, reduction="sum"))
        correct += int((logits.argmax(-1) == gold).sum())
        count += int(gold.numel())
    return {
        "accuracy": correct / max(count, 1),
        "cross_entropy": loss / max(count, 1),
        "positions": count,
    }


def mask_batch(
    ids: torch.Tensor,
    special: torch.Tensor,
    mask_prob: float,
    mask_id: int,
    vocab: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic BERT masking of (B, L) ids: (inputs, labels with -100 where not selected)."""
    u = torch.rand(ids.shape, generator=gen)
    selected = (u < mask_prob) & ~special
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    action = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(vocab, ids.shape, generator=gen)
    return bert_masked(ids, selected, action, random_ids, mask_id), labels


def run_adapt(config: AdaptConfig) -> dict[str, Any]:
    """Adapt `config.base` on the corpora; save the model to `config.out`; return the metrics."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    load_config(config.base, "--base")  # a damaged config.json named as such
    tokenizer = load_tokenizer(config.base, "--base")
    if tokenizer.mask_token_id is None:
        raise UserError(f"--base {config.base!r}: its tokenizer has no mask token")
    model, new_weights = load_model(config.base, "mlm", allow_new_weights=True)
    check_max_length(model, config.base, config.max_length)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, f"--base {config.base!r}")
    if new_weights:
        log.warning(
            "%s has no MLM head weights; initialised %s", config.base, ", ".join(new_weights)
        )
    model.to(device)
    vocab = int(model.config.vocab_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    spec = MaskingSpec("mlm", None, config.mask_prob, config.seed, "masked")

    def plan(name: str, texts: list[CorpusText], records: np.ndarray) -> PlannedUnit:
        return plan_texts(name, texts, records, tokenizer, spec, config.max_length, vocab)

    corpora = [
        hold_out(name, stream_corpus(source, seed=config.seed).index, config.eval_size,
                 config.seed, plan)
        for name, source in config.corpora
    ]  # fmt: skip
    gen = torch.Generator().manual_seed(config.seed)
    n_records = sum(int(c.index.units[:, 4].sum()) for c in corpora)  # >= the training texts
    sequences = (s for unit in training_units(corpora, config.seed, plan) for s in unit.sequences)
    buffer = ShuffleBuffer(sequences, min(config.shuffle_buffer, n_records), gen)
    split = head_split_holds(model, vocab, device)

    def scores() -> dict[str, dict[str, float]]:
        return {c.name: evaluate(model, c.planned, pad_id, split, device) for c in corpora}

    before = scores()
    if config.head_only:
        for p in model.base_model.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in FUSED_ADAMW_DEVICES
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01, fused=fused)
    schedule = get_linear_schedule_with_warmup(
        optimizer, max(1, config.steps // 10), max(1, config.steps)
    )
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    model.train()
    for _ in range(config.steps):
        ids, attention = _pad(buffer.draw(config.batch_size), pad_id)
        special = torch.isin(ids, special_ids) | (attention == 0)
        inputs, labels = mask_batch(
            ids, special, config.mask_prob, tokenizer.mask_token_id, vocab, gen
        )
        logits, gold = masked_logits(model, inputs, attention, labels, split, device)
        nn.functional.cross_entropy(logits, gold).backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    after = scores()

    out_dir = Path(config.out)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "base": config.base,
        "steps": config.steps,
        "head_only": config.head_only,
        "initialised_weights": new_weights,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "before": before,
        "after": after,
    }
    (out_dir / "adapt_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def print_metrics(metrics: dict[str, Any], console: Console) -> None:
    """Held-out accuracy and cross-entropy before -> after, one row per corpus."""
    if metrics["initialised_weights"]:
        console.print(f"initialised a new MLM head: {', '.join(metrics['initialised_weights'])}")
    table = Table(title=f"teacher-adapt: {metrics['steps']} steps in {metrics['elapsed_s']:.0f} s")
    for col in ("corpus", "positions", "accuracy before -> after", "cross-entropy before -> after"):
        table.add_column(col)
    for name, before in metrics["before"].items():
        after = metrics["after"][name]
        table.add_row(
            name,
            str(before["positions"]),
            f"{before['accuracy']:.3f} -> {after['accuracy']:.3f}",
            f"{before['cross_entropy']:.3f} -> {after['cross_entropy']:.3f}",
        )
    console.print(table)

"""`kdcache teacher-adapt`: second-stage MLM pretraining of a teacher on in-domain text.

    metrics = run_adapt(AdaptConfig(base="path", corpora=(("task", "demo:atis"),), out="teacher"))

The base checkpoint is loaded with `AutoModelForMaskedLM`; a checkpoint without an MLM head (e.g.
the packaged sentence-transformers MiniLM, a bare `BertModel`) gets a freshly initialised head,
which is logged. Training: dynamic BERT masking (80/10/10, a seeded generator), AdamW (fused on
CPU/CUDA) with linear warm-up (10 %) and decay over a fixed step budget, batches drawn uniformly
from the pooled training texts of all corpora; `head_only` freezes the encoder (and the tied
embeddings). The loss is the mean cross-entropy at the masked positions, and the MLM head (its
vocabulary projection is most of a step's compute) runs at those positions only
(`teacher.mlm_logits_at`), unless the model's head cannot be split off (`head_split_holds`).

Held-out evaluation before and after, per corpus: masked-token accuracy and cross-entropy (nats)
at the fixed, seeded masks of `plan.py`, on the corpus's non-train split when it has one, else on
a seeded sample kept out of training. Output: a Hugging Face folder (safetensors + tokenizer) and
``adapt_metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
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
from teacher_infer.corpora import read_corpus
from teacher_infer.plan import MaskingSpec, PlannedCorpus, plan_corpus
from teacher_infer.teacher import (
    check_max_length,
    check_tokenizer_fits,
    head_split_holds,
    load_model,
    load_tokenizer,
    mlm_logits_at,
    resolve_device,
)

log = logging.getLogger(__name__)
EVAL_BATCH = 64
FUSED_DEVICES = ("cpu", "cuda")  # devices with a fused AdamW kernel (torch >= 2.4)


@dataclass(frozen=True)
class AdaptConfig:
    """Teacher adaptation settings; `eval_size` caps held-out sequences per corpus."""

    base: str
    corpora: tuple[tuple[str, str], ...]
    out: str
    steps: int = 500
    head_only: bool = False
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0
    max_length: int = 64
    mask_prob: float = 0.15
    eval_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.corpora:
            raise UserError("give at least one --corpus NAME=SOURCE")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("--steps must be >= 0, --batch-size >= 1 and --lr > 0")
        if not 0.0 < self.mask_prob < 1.0 or self.max_length < 3 or self.eval_size < 1:
            raise UserError("need 0 < mask-prob < 1, max-length >= 3 and eval-size >= 1")


def _split(corpus: PlannedCorpus, eval_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): the non-train split if any, else a seeded sample."""
    n = corpus.plan.num_sequences
    is_train = np.array([r["split"] == "train" for r in corpus.records])
    rng = np.random.default_rng(seed)
    if is_train.all():
        perm = rng.permutation(n)
        held = perm[: min(eval_size, max(1, n // 10))]
        return np.setdiff1d(np.arange(n), held), np.sort(held)
    held = rng.permutation(np.flatnonzero(~is_train))[:eval_size]
    return np.flatnonzero(is_train), np.sort(held)


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
    model: nn.Module,
    corpus: PlannedCorpus,
    held: np.ndarray,
    pad_id: int,
    split: bool,
    device: torch.device,
) -> dict[str, float]:
    """Masked-token accuracy and mean cross-entropy at the plan's fixed masks of `held`."""
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for lo in range(0, len(held), EVAL_BATCH):
        seqs = held[lo : lo + EVAL_BATCH]
        ids, mask = _pad([corpus.teacher_input(int(s)) for s in seqs], pad_id)
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
    inputs = torch.where(selected & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def run_adapt(config: AdaptConfig) -> dict[str, Any]:
    """Adapt `config.base` on the corpora; save the model to `config.out`; return the metrics."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
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
    corpora, held_out, train_rows = [], {}, []
    for name, source in config.corpora:
        texts, report = read_corpus(source, seed=config.seed)
        corpus = plan_corpus(name, texts, report, tokenizer, spec, config.max_length, vocab, 1024)
        train, held = _split(corpus, config.eval_size, config.seed)
        corpora.append(corpus)
        held_out[name] = held
        train_rows += [
            corpus.input_ids[corpus.token_offsets[i] : corpus.token_offsets[i + 1]] for i in train
        ]
    if not train_rows:
        raise UserError("no training texts left after holding out the evaluation sets")

    split = head_split_holds(model, vocab, device)

    def scores() -> dict[str, dict[str, float]]:
        return {
            c.name: evaluate(model, c, held_out[c.name], pad_id, split, device) for c in corpora
        }

    before = scores()
    if config.head_only:
        for p in model.base_model.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in FUSED_DEVICES
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01, fused=fused)
    schedule = get_linear_schedule_with_warmup(
        optimizer, max(1, config.steps // 10), max(1, config.steps)
    )
    gen = torch.Generator().manual_seed(config.seed)
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    model.train()
    for _ in range(config.steps):
        pick = torch.randint(len(train_rows), (config.batch_size,), generator=gen).tolist()
        ids, attention = _pad([train_rows[i] for i in pick], pad_id)
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

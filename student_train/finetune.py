"""Finetune an encoder on DC or ICNER from the store's task corpus and evaluate on its test split.

The encoder is a distilled student (a run folder), any Hugging Face folder (the teacher, for
the teacher baseline) or that architecture randomly initialised (`init="random"`, the
no-distillation baseline); all three get the same budget, optimiser and data. Training uses
split "train" only, evaluation split "test" only. A run folder holds::

    OUT/config.json        the config + "config_hash" (written first)
    OUT/heads.safetensors  the head weights (label names in the safetensors metadata)
    OUT/metrics.json       test metrics, sizes and timings (written last: the run is complete);
                           "per_label": {label: {"n", "accuracy"}} per gold domain (DC) or
                           intent (ICNER) of the test split, named like the groups of
                           `kdcache similarity --by domain|intent`

A rerun with an identical config over a completed folder returns the stored metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file
from transformers import get_linear_schedule_with_warmup

from logit_store import UserError, open_store
from student_train.device import adamw, autocast, resolve_device
from student_train.evaluate import dc_metrics, icner_metrics, per_label_accuracy
from student_train.heads import (
    INITS,
    POOLINGS,
    Init,
    Pooling,
    TaskModel,
    check_tokenizer,
    load_encoder,
    model_fingerprint,
    resolve_model_dir,
    task_loss,
)
from student_train.runs import finish_run, open_run, read_metrics, run_status
from student_train.task_data import (
    TASKS,
    Task,
    TaskSplit,
    check_task_corpus,
    collate,
    label_vocab,
    length_grouped_batches,
    read_task_split,
    sorted_batches,
    word_level_tags,
)

log = logging.getLogger(__name__)
TEACHER = "teacher"  # --student teacher: finetune the store's teacher (meta.teacher_id)
SCORE_KEYS = {
    "dc": ("accuracy", "macro_f1"),
    "icner": (
        "intent_accuracy", "slot_f1", "slot_precision", "slot_recall",
        "semantic_error_rate", "exact_match",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class FinetuneConfig:
    """One finetune-and-evaluate run.

    student: run folder (RUN/model), Hugging Face model folder, or "teacher" for the store's
    teacher (meta.teacher_id, the teacher baseline); task: "dc" | "icner";
    store/corpus: the store URL and its task corpus; out: the run folder to write.
    Budget: `steps` optimiser steps if set, else `epochs` passes over the train split.
    lr peaks after `warmup_ratio` of the steps, then decays linearly to 0 (AdamW).
    """

    student: str
    task: Task
    store: str
    corpus: str
    out: str
    epochs: float = 3.0
    steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 0
    init: Init = "pretrained"
    pooling: Pooling = "mean"
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    save_encoder: bool = False
    device: str = "auto"
    storage_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.init not in INITS:
            raise UserError(f"--init must be one of {INITS}, got {self.init!r}")
        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if self.steps is None and not self.epochs > 0:
            raise UserError(f"--epochs must be > 0, got {self.epochs}")
        if not self.lr > 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("--lr must be > 0 and --batch-size >= 1")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.dropout < 1:
            raise UserError("warmup_ratio and dropout must be in [0, 1)")

    def hashed_fields(self) -> dict[str, Any]:
        """What determines the result: everything but where it goes and how it is reached. The
        student enters by its fingerprint (`heads.model_fingerprint`), not by its path, so a
        moved RUNS folder resumes."""
        skip = {"student", "out", "device", "storage_options", "save_encoder"}
        if self.steps is not None:
            skip.add("epochs")  # --steps overrides --epochs
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def train(
    model: TaskModel,
    data: TaskSplit,
    cfg: FinetuneConfig,
    label_ids: dict[str, int],
    tag_ids: dict[str, int] | None,
    pad_token_id: int,
    device: torch.device,
) -> dict[str, float]:
    """The finetuning loop: length-grouped shuffled batches, summed task losses, AdamW with
    linear warmup/decay, gradient clipping. Returns steps, epochs and the final loss."""
    batches_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = cfg.steps or max(1, round(cfg.epochs * batches_per_epoch))
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    rng = np.random.default_rng(cfg.seed)
    lengths = data.lengths
    losses: list[float] = []
    model.train()
    step = 0
    while step < total:
        for rows in length_grouped_batches(lengths, cfg.batch_size, rng):
            batch = collate(data, rows, pad_token_id, label_ids, tag_ids).to(device)
            with autocast(device):
                class_logits, tag_logits = model(batch.input_ids, batch.attention_mask)
            loss = task_loss(class_logits, tag_logits, batch.labels, batch.tag_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % 50 == 0 or step == total:
                log.info("step %d/%d loss %.4f", step, total, np.mean(losses[-50:]))
            if step == total:
                break
    return {
        "steps": float(total),
        "epochs": total * cfg.batch_size / len(data),
        "final_train_loss": float(np.mean(losses[-50:])),
    }


@torch.no_grad()
def predict(
    model: TaskModel,
    data: TaskSplit,
    class_names: tuple[str, ...],
    tag_names: tuple[str, ...] | None,
    pad_token_id: int,
    batch_size: int,
    device: torch.device,
) -> tuple[list[str], list[list[str]] | None, int]:
    """Predicted labels (N,), word-level tags per sequence (ICNER) and the number of words
    that had no token (truncated by the store's max_length; predicted "O")."""
    model.eval()
    label_ids = {name: i for i, name in enumerate(class_names)}
    labels: list[str] = [""] * len(data)
    tags: list[list[str]] = [[] for _ in range(len(data))]
    truncated = 0
    for rows in sorted_batches(data.lengths, batch_size):
        batch = collate(data, rows, pad_token_id, label_ids, None).to(device)
        with autocast(device):
            class_logits, tag_logits = model(batch.input_ids, batch.attention_mask)
        class_pred = class_logits.argmax(-1).cpu().tolist()
        tag_pred = None if tag_logits is None else tag_logits.argmax(-1).cpu().numpy()
        for b, r in enumerate(rows):
            labels[r] = class_names[class_pred[b]]
            if tag_pred is not None and tag_names is not None and data.tags is not None:
                token_tags = [tag_names[t] for t in tag_pred[b]]
                tags[r], missing = word_level_tags(data.word_ids[r], token_tags, len(data.tags[r]))
                truncated += missing
    return labels, (tags if tag_names is not None else None), truncated


def _check_vocab(model: TaskModel, splits: list[TaskSplit], model_dir: Path) -> None:
    vocab = int(model.encoder.config.vocab_size)
    top = max(int(ids.max()) for split in splits for ids in split.input_ids)
    if top >= vocab:
        raise UserError(
            f"{model_dir}: embedding has {vocab} rows but the store holds token id {top}; the "
            "student must use the store's tokenizer (the teacher's)"
        )


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Finetune `cfg.student` on `cfg.task` and evaluate on the test split; returns the metrics
    written to OUT/metrics.json (or the stored ones if this exact config already completed)."""
    out, device = Path(cfg.out), resolve_device(cfg.device)
    store = open_store(cfg.store, storage_options=dict(cfg.storage_options) or None)
    if cfg.corpus not in store.corpora:
        raise UserError(f"--corpus {cfg.corpus!r} is not in {cfg.store} (corpora: {store.corpora})")
    corpus = store[cfg.corpus]
    model_dir = resolve_model_dir(store.meta.teacher_id if cfg.student == TEACHER else cfg.student)
    record = {
        **cfg.hashed_fields(),
        "student_fingerprint": model_fingerprint(model_dir, weights=cfg.init == "pretrained"),
        "tokenizer_hash": store.meta.tokenizer_hash,
        "corpus_source_hash": corpus.info.get("source_hash", ""),
        "n_sequences": len(corpus),
    }
    if run_status(out, record) == "done":
        log.info("%s: identical config already completed, skipping", out)
        return read_metrics(out)

    started = time.perf_counter()
    check_task_corpus(corpus, cfg.corpus, cfg.task)
    if cfg.init == "pretrained":
        check_tokenizer(model_dir, store.meta)
    train_split = read_task_split(corpus, cfg.corpus, cfg.task, "train")
    test_split = read_task_split(corpus, cfg.corpus, cfg.task, "test")
    class_names = label_vocab(train_split.labels)
    tag_names = None
    if train_split.tags is not None:
        tag_names = label_vocab([t for seq in train_split.tags for t in seq])
    encoder = load_encoder(model_dir, cfg.init, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = TaskModel(encoder, len(class_names), len(tag_names or ()), cfg.pooling, cfg.dropout)
    _check_vocab(model, [train_split, test_split], model_dir)
    open_run(out, record)  # valid inputs: claim the folder ("resume" == "new": restart)
    model.to(device)
    pad = store.meta.pad_token_id
    label_ids = {name: i for i, name in enumerate(class_names)}
    tag_ids = None if tag_names is None else {name: i for i, name in enumerate(tag_names)}
    loaded = time.perf_counter()
    train_stats = train(model, train_split, cfg, label_ids, tag_ids, pad, device)
    trained = time.perf_counter()
    labels, tags, truncated = predict(
        model, test_split, class_names, tag_names, pad, cfg.eval_batch_size, device
    )
    if cfg.task == "dc":
        scores = dc_metrics(test_split.labels, labels)
    else:
        assert tags is not None and test_split.tags is not None
        scores = icner_metrics(test_split.labels, labels, test_split.tags, tags)
    finished = time.perf_counter()

    known_tags = set(tag_names or ())
    metrics: dict[str, Any] = {
        "task": cfg.task,
        "corpus": cfg.corpus,
        "student": str(model_dir),
        "init": cfg.init,
        **scores,
        "per_label": per_label_accuracy(test_split.labels, labels),
        "n_train": len(train_split),
        "n_test": len(test_split),
        "n_classes": len(class_names),
        "n_tags": len(tag_names or ()),
        "test_unknown_labels": sum(label not in label_ids for label in test_split.labels),
        "test_unknown_tags": sum(
            t not in known_tags for seq in (test_split.tags or []) for t in seq
        ),
        "truncated_words": truncated,
        **train_stats,
        "device": str(device),
        "load_seconds": loaded - started,
        "train_seconds": trained - loaded,
        "eval_seconds": finished - trained,
        "time_seconds": finished - started,
        "label_names": {"classes": list(class_names), "tags": list(tag_names or ())},
    }
    save_file(
        model.head_state_dict(),
        str(out / "heads.safetensors"),
        metadata={"classes": json.dumps(class_names), "tags": json.dumps(tag_names or ())},
    )
    if cfg.save_encoder:
        model.encoder.save_pretrained(out / "encoder")
    finish_run(out, metrics)
    return read_metrics(out)


def print_metrics(metrics: dict[str, Any], console: Console) -> None:
    """One table: the task scores, then sizes, budget and time."""
    table = Table(title=f"finetune {metrics['task']} on {metrics['corpus']} ({metrics['init']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SCORE_KEYS[metrics["task"]]:
        table.add_row(key, "n/a" if metrics[key] is None else f"{metrics[key]:.4f}")
    for key in ("n_train", "n_test", "test_unknown_labels", "truncated_words", "steps"):
        table.add_row(key, str(int(metrics[key])))
    table.add_row("epochs", f"{metrics['epochs']:.2f}")
    table.add_row("time", f"{metrics['time_seconds']:.1f} s")
    table.add_row("config_hash", metrics["config_hash"])
    console.print(table)

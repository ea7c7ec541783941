"""Finetune an encoder on DC or ICNER from the store's task corpus and evaluate on its test split.

The encoder is a distilled student (a run folder), any Hugging Face folder (the teacher, for
the teacher baseline) or that architecture randomly initialised (`init="random"`, the
no-distillation baseline); all three get the same budget, optimiser and data. Training uses
split "train" only, evaluation split "test" only. A run folder holds::

    OUT/config.json        the config + "config_hash" (written first)
    OUT/model/             the finetuned model as plain Hugging Face folders with the store's
                           tokenizer (`saved_model`): AutoModelForSequenceClassification for
                           the domain / intent, ICNER slots in OUT/model/slots/
                           (AutoModelForTokenClassification)
    OUT/test_predictions.jsonl  per test sequence: id, gold and predicted label, the class
                           logits, and (ICNER) gold and predicted word-level tags
    OUT/metrics.json       test metrics, sizes and timings (written last: the run is complete);
                           "per_label": {label: {"n", "accuracy"}} per gold domain (DC) or
                           intent (ICNER) of the test split, named like the groups of
                           `kdcache similarity --by domain|intent`

A rerun with an identical config over a completed folder returns the stored metrics; a
completed folder without its model (written before models were always saved, or deleted) is
run again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from logit_store import UserError, open_store
from student_train.configs import FinetuneConfig
from student_train.device import adamw, autocast
from student_train.evaluate import dc_metrics, icner_metrics, per_label_accuracy
from student_train.heads import (
    TaskModel,
    check_token_classifier,
    check_tokenizer,
    label_config,
    load_classifier,
    resolve_model_dir,
    task_loss,
)
from student_train.identity import run_identity
from student_train.runs import (
    MODEL_DIR,
    config_hash,
    finish_run,
    open_run,
    read_metrics,
    run_status,
)
from student_train.saved_model import save_task_model, saved_model_complete, store_tokenizer
from student_train.task_batches import collate
from student_train.task_data import (
    TaskSplit,
    check_task_corpus,
    label_vocab,
    length_grouped_batches,
    read_task_split,
    sorted_batches,
    word_level_tags,
)
from teacher_infer.teacher import resolve_device

log = logging.getLogger(__name__)
PREDICTIONS_FILE = "test_predictions.jsonl"
SCORE_KEYS = {
    "dc": ("accuracy", "macro_f1"),
    "icner": (
        "intent_accuracy", "slot_f1", "slot_precision", "slot_recall",
        "semantic_error_rate", "exact_match",
    ),
}  # fmt: skip


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
) -> tuple[list[str], list[list[str]] | None, list[list[float]], int]:
    """Predicted labels (N,), word-level tags per sequence (ICNER), class logits (N, C) and
    the number of words that had no token (truncated by the store's max_length; "O"). In fp32
    on every device (no bf16 autocast): the precision of the saved model, so reloading it
    reproduces these predictions."""
    model.eval()
    label_ids = {name: i for i, name in enumerate(class_names)}
    labels: list[str] = [""] * len(data)
    tags: list[list[str]] = [[] for _ in range(len(data))]
    logits: list[list[float]] = [[] for _ in range(len(data))]
    truncated = 0
    for rows in sorted_batches(data.lengths, batch_size):
        batch = collate(data, rows, pad_token_id, label_ids, None).to(device)
        class_logits, tag_logits = model(batch.input_ids, batch.attention_mask)
        class_pred = class_logits.argmax(-1).cpu().tolist()
        tag_pred = None if tag_logits is None else tag_logits.argmax(-1).cpu().numpy()
        for b, r in enumerate(rows):
            labels[r] = class_names[class_pred[b]]
            logits[r] = class_logits[b].float().cpu().tolist()
            if tag_pred is not None and tag_names is not None and data.tags is not None:
                token_tags = [tag_names[t] for t in tag_pred[b]]
                tags[r], missing = word_level_tags(data.word_ids[r], token_tags, len(data.tags[r]))
                truncated += missing
    return labels, (tags if tag_names is not None else None), logits, truncated


def write_test_predictions(
    path: Path,
    data: TaskSplit,
    ids: list[Any],
    labels: list[str],
    logits: list[list[float]],
    tags: list[list[str]] | None,
) -> None:
    """One JSON line per test sequence (module docstring), in the store's order."""
    lines = []
    for r in range(len(data)):
        row: dict[str, Any] = {"id": ids[r], "label": data.labels[r], "predicted": labels[r]}
        row["logits"] = logits[r]
        if tags is not None and data.tags is not None:
            row["tags"], row["predicted_tags"] = data.tags[r], tags[r]
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")


def _check_vocab(model: PreTrainedModel, splits: list[TaskSplit], model_dir: Path) -> None:
    vocab = int(model.config.vocab_size)
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
    if not store.has(cfg.corpus):
        raise UserError(f"--corpus {cfg.corpus!r} is not in {cfg.store} (corpora: {store.corpora})")
    corpus = store[cfg.corpus]
    model_dir = resolve_model_dir(cfg.student_folder(store.meta.teacher_id))
    record = run_identity(cfg, store)
    if run_status(out, record) == "done":
        if saved_model_complete(out / MODEL_DIR, cfg.task):
            log.info("%s: identical config already completed, skipping", out)
            return read_metrics(out)
        log.warning("%s: completed but without its model (%s/); running it again", out, MODEL_DIR)

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
    if tag_names is not None:
        check_token_classifier(label_config(model_dir, tag_names, cfg.dropout))
    classifier = load_classifier(model_dir, cfg.init, cfg.seed, class_names, cfg.dropout)
    torch.manual_seed(cfg.seed)
    model = TaskModel(classifier, len(tag_names or ()), cfg.dropout)
    tokenizer = store_tokenizer(store.meta, model_dir)
    _check_vocab(model.classifier, [train_split, test_split], model_dir)
    open_run(out, record)  # valid inputs: claim the folder ("resume" == "new": restart)
    model.to(device)
    pad = store.meta.pad_token_id
    label_ids = {name: i for i, name in enumerate(class_names)}
    tag_ids = None if tag_names is None else {name: i for i, name in enumerate(tag_names)}
    loaded = time.perf_counter()
    train_stats = train(model, train_split, cfg, label_ids, tag_ids, pad, device)
    trained = time.perf_counter()
    labels, tags, logits, truncated = predict(
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
        "model": str(out / MODEL_DIR),
        "tokenizer_saved": tokenizer is not None,
    }
    if tokenizer is None:
        log.warning(
            "%s: no tokenizer of the store (%s) found; the model is saved without one",
            out,
            store.meta.tokenizer_id,
        )
    ids = corpus.column("id")
    test_ids = [ids[i] for i in test_split.indices.tolist()]
    write_test_predictions(out / PREDICTIONS_FILE, test_split, test_ids, labels, logits, tags)
    info = {"task": cfg.task, "max_length": store.meta.max_length, "store": cfg.store}
    info.update(corpus=cfg.corpus, config_hash=config_hash(record))
    save_task_model(model.cpu(), out / MODEL_DIR, tag_names or (), tokenizer, info)
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
    table.add_row("model", metrics.get("model", "—"))
    console.print(table)

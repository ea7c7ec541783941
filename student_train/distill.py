"""Distil a student from a cached-teacher store: `run_distill(DistillConfig) -> Path`.

One step: the student reads the masked inputs the teacher saw (``teacher_input_ids``), its LM
head runs only at the P labelled positions, and `DistillLoss` compares those (P, V) logits with
the stored sparse targets. AdamW with linear warmup then cosine decay to 0, gradient clipping,
bf16 autocast on CUDA (fp32 on CPU). Checkpoints every `checkpoint_every` steps; a killed run
resumes from the last one and lands on the same weights as an uninterrupted run, because the
batch order is a pure function of (spec, epoch) and the RNG state is checkpointed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedModel

from logit_store import SparseBatch, Store, open_store
from student_train.batch_stream import stream_batches
from student_train.checkpoints import load_checkpoint, save_checkpoint
from student_train.configs import DistillConfig
from student_train.device import adamw, autocast
from student_train.heldout import evaluate_heldout
from student_train.identity import run_identity
from student_train.losses import DistillLoss, LossParts
from student_train.runs import (
    CHECKPOINT_DIR,
    MODEL_DIR,
    config_hash,
    finish_run,
    open_run,
    run_status,
)
from student_train.students import build_student, load_store_tokenizer, save_student
from student_train.transfer_set import TransferSet, plan_transfer_set
from teacher_infer.teacher import mlm_logits_at, resolve_device


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    """lr × step/warmup during warmup, then lr × ½(1 + cos(π · progress)) down to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def train_step(
    model: PreTrainedModel, batch: SparseBatch, loss_fn: DistillLoss, device: torch.device
) -> LossParts:
    """Forward at the labelled positions and backward; the optimizer step is the caller's."""
    with autocast(device):
        logits = mlm_logits_at(
            model,
            batch.teacher_input_ids,
            batch.attention_mask,
            batch.batch_index,
            batch.positions,
            head_at_positions=True,
        )
    parts = loss_fn(logits, batch.targets, batch.labels)
    parts.total.backward()
    return parts


def _batches_from(
    store: Store, plan: TransferSet, cfg: DistillConfig, start: int
) -> Iterator[SparseBatch]:
    """The run's batch sequence from global step `start` on, epoch after epoch."""
    epoch, skip = 0, start
    while True:
        planned = plan.epoch(epoch, cfg.batch_tokens)
        if skip < len(planned):
            yield from stream_batches(store, planned[skip:], cfg.num_workers)
        skip = max(0, skip - len(planned))
        epoch += 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]distil"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def run_distill(
    cfg: DistillConfig,
    console: Console | None = None,
    on_step: Callable[[int], None] | None = None,
    final_checkpoint: bool = True,
) -> Path:
    """Distil per `cfg` into the run folder `cfg.out` and return it (skipped if already done).

    `on_step(step)` is called after every optimizer step (step = steps done so far).
    final_checkpoint=False writes no resume state after the last step (a sweep deletes the
    checkpoint of a completed run anyway): a kill before metrics.json is written then resumes
    from the last periodic checkpoint, and lands on the same weights.
    """
    console = console or Console(stderr=True)
    out = Path(cfg.out)
    store = open_store(cfg.store, storage_options=cfg.storage_options or None)
    record = run_identity(cfg, store)
    if run_status(out, record) == "done":
        console.print(f"skip: {out} already holds completed run {config_hash(record)}")
        return out
    if not store.complete:
        console.print(f"[yellow]warning:[/yellow] {cfg.store} is incomplete; using its done units")
    tokenizer = load_store_tokenizer(store.meta)
    model = build_student(cfg.student, store.meta, seed=cfg.seed)
    plan = plan_transfer_set(store, cfg.transfer)
    sizes = [f"{n} {s['sequences']} seq ({s['tokens']} tok)" for n, s in plan.summary().items()]
    console.print(f"transfer set: {', '.join(sizes)}", highlight=False)
    for name, rows in plan.selection.items():  # one read of every array here: a damaged store
        if len(rows):  # stops before the run folder is claimed
            store[name].batch([int(rows.min())])
    open_run(out, record)  # the inputs are valid: only now is the run folder claimed
    total = cfg.steps or sum(len(plan.epoch(e, cfg.batch_tokens)) for e in range(cfg.epochs or 0))
    device = resolve_device(cfg.device)
    torch.nn.Module.to(model, device).train()
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, min(cfg.warmup or max(1, total // 20), total), total)
    loss_fn = DistillLoss(cfg.temperature, cfg.kd_weight, cfg.alpha_mlm)
    torch.manual_seed(cfg.seed)
    state = load_checkpoint(out / CHECKPOINT_DIR, model, optimizer, scheduler)
    start = state["step"] if state else 0
    tokens = state["tokens"] if state else 0
    if state:
        console.print(f"resume: {out} from step {start}")
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    t0, tokens_at_t0 = time.perf_counter(), tokens
    last: dict[str, float | None] = {"loss": None, "kd": None, "mlm": None}
    with _progress(console) as progress:
        task = progress.add_task("distil", total=total, completed=start, status="")
        for step, batch in zip(
            range(start, total), _batches_from(store, plan, cfg, start), strict=False
        ):
            tokens += int(batch.attention_mask.sum())
            batch = batch.to(device, non_blocking=True)
            parts = train_step(model, batch, loss_fn, device)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window.append((parts.total.detach(), parts.kd, parts.mlm))
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                mean = torch.stack([torch.stack(w) for w in window]).float().mean(0).tolist()
                last, window = dict(zip(("loss", "kd", "mlm"), mean, strict=True)), []
                rate = (tokens - tokens_at_t0) / max(time.perf_counter() - t0, 1e-9)
                status = f"loss {last['loss']:.4f} kd {last['kd']:.4f} mlm {last['mlm']:.4f} "
                progress.update(task, completed=step + 1, status=status + f"{rate:,.0f} tok/s")
            at_end = step + 1 == total
            due = (step + 1) % cfg.checkpoint_every == 0 or at_end
            if due and (final_checkpoint or not at_end):
                extra = {"tokens": tokens}
                save_checkpoint(out / CHECKPOINT_DIR, step + 1, model, optimizer, scheduler, extra)
            if on_step is not None:
                on_step(step + 1)
    wall = time.perf_counter() - t0
    model.eval()
    save_student(model, tokenizer, out / MODEL_DIR)
    finish_run(
        out,
        {
            "steps": total,
            "tokens_seen": tokens,
            "train_tokens_per_s": (tokens - tokens_at_t0) / max(wall, 1e-9),
            "wall_s": wall,
            "final_train": last,
            "transfer_set": plan.summary(),
            "student": {
                "spec": cfg.student,
                "parameters": sum(p.numel() for p in model.parameters()),
                "layers": model.config.num_hidden_layers,
                "hidden": model.config.hidden_size,
            },
            "heldout": evaluate_heldout(
                model, store, cfg.transfer, loss_fn, device, cfg.eval_sequences
            ),
        },
    )
    console.print(f"done: {out} ({total} steps, {wall:.1f}s)")
    return out

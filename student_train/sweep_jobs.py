"""One job of a sweep, run in this process, and the scheduler both sweep engines submit through.

`execute_job` runs an init, distill or finetune job (the entry point of a pool worker and of a
Ray task); `run_scheduled` hands pending jobs to an executor's `submit` (a process pool's or
Ray's), at most `limit` at a time, each once the run it needs is done. `sweep` (local engine)
and `sweep_ray` (Ray engine) both sit above this module.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

import torch
import transformers
from rich.console import Console

from logit_store import open_store
from student_train.configs import DistillConfig, FinetuneConfig, InitConfig
from student_train.distill import run_distill
from student_train.finetune import run_finetune
from student_train.identity import run_identity
from student_train.runs import CHECKPOINT_DIR, MODEL_DIR, finish_run, open_run, run_status
from student_train.students import build_student, load_store_tokenizer, save_student
from student_train.sweep_plan import Job


def save_initial_student(cfg: InitConfig) -> Path:
    """Build the student `cfg.student` as distillation would start it and save it (a run folder
    whose RUN/model an `init` or `random` baseline finetunes)."""
    store = open_store(cfg.store, storage_options=cfg.storage_options or None)
    out, record = Path(cfg.out), run_identity(cfg, store)
    if run_status(out, record) == "done":
        return out
    model = build_student(cfg.student, store.meta, seed=cfg.seed).eval()
    open_run(out, record)
    save_student(model, load_store_tokenizer(store.meta), out / MODEL_DIR)
    config = model.config
    shape = {"layers": config.num_hidden_layers, "hidden": config.hidden_size}
    finish_run(out, {"parameters": sum(p.numel() for p in model.parameters()), **shape})
    return out


def execute_job(job: Job, threads: int, console: Console | None = None) -> None:
    """Run one job in this process with `threads` torch threads (also the pool's entry point:
    without a console, as in a pool worker, nothing is drawn or logged below errors)."""
    torch.set_num_threads(threads)
    transformers.logging.disable_progress_bar()  # the sweep prints one line per finished run
    if console is None:  # a pool worker: no load reports interleaved with other jobs
        transformers.logging.set_verbosity_error()
    if isinstance(job.config, InitConfig):
        save_initial_student(job.config)
    elif isinstance(job.config, DistillConfig):
        quiet = console or Console(stderr=True, quiet=True)
        run_distill(job.config, quiet, final_checkpoint=False)  # (its last one is not written)
        # the run is complete: its resume state (model + AdamW moments) is no longer needed
        shutil.rmtree(Path(job.config.out) / CHECKPOINT_DIR, ignore_errors=True)
    else:
        assert isinstance(job.config, FinetuneConfig)
        run_finetune(job.config)


def run_scheduled(
    pending: list[Job],
    done: set[str],
    submit: Callable[[Job], Future[None]],
    limit: int,
    on_done: Callable[[Job], None],
) -> None:
    """Run `pending` through `submit` (a process pool's or Ray's), at most `limit` at a time,
    each job once the run it needs is done."""
    waiting = list(pending)
    running: dict[Future[None], Job] = {}
    while waiting or running:
        for job in [j for j in waiting if j.after is None or j.after in done]:
            if len(running) >= limit:  # submit only what can start: plan order is kept
                break
            waiting.remove(job)
            running[submit(job)] = job
        assert running, "sweep plan has a job whose dependency is not in the plan"
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            job = running.pop(future)
            future.result()  # re-raises the job's error (a UserError stays one)
            done.add(job.run)
            on_done(job)

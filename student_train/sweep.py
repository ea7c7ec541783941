"""`run_sweep(SweepConfig) -> dict`: run a grid of distil → finetune experiments, resumably.

The grid and its folders come from `sweep_plan.plan_sweep`. A job whose folder already holds
``metrics.json`` is complete and skipped (its folder name carries its config hash, so a changed
setting is a new folder); a job killed part-way is run again — a distillation resumes from its
last checkpoint, a finetuning restarts. So rerunning the same command after a kill redoes only
the missing runs, and a second invocation after success runs nothing.

With ``jobs > 1`` experiments run in a `ProcessPoolExecutor` (spawn), at most ``jobs`` at a time
and never more than the cores this process may use, each with ``cores // jobs`` torch threads;
a job starts once the run it finetunes is complete. With ``engine="ray"`` every job is a Ray
task instead (`sweep_ray.py`), scheduled the same way (both run jobs through `sweep_jobs`).
Written under RUNS::

    sweep.json       the sweep's config and planned run folders (the last invocation)
    results.jsonl    one row per completed run of the sweep: labels, config.json, metrics.json
                     (rewritten after every run; `report` re-reads the run folders themselves)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from logit_store import Store, UserError, open_store
from student_train.configs import SweepConfig
from student_train.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    SWEEP_FILE,
    read_metrics,
    write_json_atomic,
)
from student_train.sweep_jobs import execute_job, run_scheduled
from student_train.sweep_plan import Job, plan_sweep
from student_train.task_data import check_task_corpus
from student_train.transfer_set import plan_transfer_set


def result_row(runs: Path, job: Job, sources: dict[str, str]) -> dict[str, Any]:
    """The results.jsonl row of a completed job: its labels, config.json and metrics.json."""
    folder = runs / job.run
    target = job.target
    return {
        "run": job.run,
        "kind": job.kind,
        "role": job.role,
        "student": job.student,
        "mix": job.mix,
        "seed": job.seed,
        "task": target.task if target else None,
        "corpus": target.corpus if target else None,
        "corpus_source": sources.get(target.corpus) if target else None,
        "upstream": job.after,
        "config": json.loads((folder / CONFIG_FILE).read_text()),
        "metrics": read_metrics(folder),
    }


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace `path` with `rows` as JSON lines, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    os.replace(tmp, path)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_transfer_sets(cfg: SweepConfig, store: Store) -> None:
    """Plan every transfer set now, so a source too small fails before any training."""
    for share in cfg.task_shares:
        for seed in cfg.seeds:
            try:
                plan_transfer_set(store, cfg.transfer(share, seed))
            except UserError as err:
                raise UserError(f"--size {cfg.size} at task share {share:g}: {err}") from err


def run_sweep(cfg: SweepConfig, console: Console | None = None) -> dict[str, Any]:
    """Run every job of the grid not yet complete; returns counts, timings and file paths."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    runs = Path(cfg.out)
    store = open_store(cfg.store, storage_options=cfg.storage_options or None)
    if store.meta.mode != "mlm":
        raise UserError(f"--store {cfg.store}: mode {store.meta.mode!r}; a sweep distils from mlm")
    for name in (cfg.generic, *cfg.tasks):
        if not store.covering(name):  # a lost corpus under `name` is refused, naming it
            raise UserError(f"--generic/--task {name!r}: no such corpus in {store.corpora}")
    _check_transfer_sets(cfg, store)
    jobs = plan_sweep(cfg, store)
    for target in cfg.targets:  # labels and splits, before any distillation runs
        try:
            check_task_corpus(store[target.corpus], target.corpus, target.task)
        except UserError as err:
            raise UserError(f"--finetune {target}: {err}") from err
    sources = {t.corpus: str(store[t.corpus].info.get("source", "")) for t in cfg.targets}
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where a folder should be, a read-only disk, ...
        message = f"{runs}: cannot create the sweep folder ({err}); give another --out"
        raise UserError(message) from err
    # storage option values may hold credentials: record only their names
    config = {**asdict(cfg), "storage_options": sorted(cfg.storage_options)}
    write_json_atomic(runs / SWEEP_FILE, {"config": config, "runs": [job.run for job in jobs]})
    done = {job.run for job in jobs if (runs / job.run / METRICS_FILE).is_file()}
    pending = [job for job in jobs if job.run not in done]
    rows = {job.run: result_row(runs, job, sources) for job in jobs if job.run in done}
    results = runs / RESULTS_FILE
    write_results(results, [rows[job.run] for job in jobs if job.run in rows])
    console.print(f"sweep: {len(jobs)} runs, {len(done)} already complete, {len(pending)} to run")

    def on_done(job: Job) -> None:
        rows[job.run] = result_row(runs, job, sources)
        write_results(results, [rows[j.run] for j in jobs if j.run in rows])
        elapsed = time.perf_counter() - started
        console.print(f"[{len(rows)}/{len(jobs)}] {job.describe()} (done at {elapsed:.0f} s)")

    cores = _cores()
    workers = max(1, min(cfg.jobs, cores, len(pending)))
    threads = max(1, cores // workers)
    if cfg.engine == "ray":
        from student_train.sweep_ray import run_on_ray

        workers, threads = run_on_ray(cfg, pending, done, on_done), 1
    elif workers == 1:
        for job in pending:
            execute_job(job, threads, console)
            done.add(job.run)
            on_done(job)
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            run_scheduled(
                pending, done, lambda job: pool.submit(execute_job, job, threads), workers, on_done
            )
    return {
        "runs": len(jobs),
        "ran": len(pending),
        "skipped": len(jobs) - len(pending),
        "workers": workers,
        "threads_per_job": threads,
        "seconds": time.perf_counter() - started,
        "results": str(results),
    }

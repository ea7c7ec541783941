"""`kdcache precompute --engine ray`: the teacher as a Ray Data actor pool over pending units.

    summary = run_precompute_ray(config, actors=None, address=None)   # same summary as precompute

1. One Ray task, with the resources of one actor, does what rank 0 does under torchrun: load the
   teacher, index the corpora, create the store (or join it after checking its settings), and
   return the pending units (no done record yet).
2. A Ray Data dataset of those units goes through `map_batches` on a fixed pool of `UnitWorker`
   actors: one GPU each when the cluster has GPUs and --device is not cpu, otherwise an equal
   share of a node's CPUs (Ray sets OMP_NUM_THREADS, hence torch's threads, to that share).
   Each actor loads the teacher and reads the stored corpus indexes once, then prepares (reads,
   tokenizes, masks: only its own units) and writes every unit it is handed through
   `compute_units`, the single-process path: the unit's objects, then its done record.
3. Ray Data restarts a dead actor and resubmits its batches (its actor pools default to
   max_restarts = max_task_retries = -1, unlimited); a batch that runs again skips the units
   already done, so a failed or pre-empted worker's units are simply redone. Once the dataset
   is consumed every unit must be done, as after torchrun's final barrier; the driver then
   consolidates the store's summary, and the result equals a single-process run's arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from rich.console import Console

from logit_store import Unit, UserError, consolidate_store, open_store
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.precompute import (
    compute_units,
    corpus_indexes,
    load_teacher_for,
    open_writer,
    unit_source,
)
from teacher_infer.progress import UnitProgress
from teacher_infer.ray_session import ray_session
from teacher_infer.run_summary import describe_run, teacher_fields

# Units per actor call: several let the device compute unit u + 1 while unit u is written (a
# call returns only once its units are flagged), few keep the pool busy to the end.
UNITS_PER_CALL = 4
# Actor calls queued per actor: the next batch is ready when one ends, and none waits behind a
# busy actor while another is idle at the end of the run.
CALLS_IN_FLIGHT = 2


def prepare_store(
    config: PrecomputeConfig,
) -> tuple[list[Unit], dict[str, list[int]], dict[str, Any]]:
    """Create or join the store (a Ray task): its pending units, the records of every unit and
    the teacher's summary fields."""
    indexes = corpus_indexes(config)  # a corpus error before the slow teacher load
    teacher, meta, _ = load_teacher_for(config, config.device)
    writer = open_writer(config, meta, indexes)
    pending = [unit for name, _ in config.corpora for unit in writer.pending(name)]
    records = {name: [int(n) for n in index.units[:, 4]] for name, index in indexes.items()}
    return pending, records, teacher_fields(teacher)


class UnitWorker:
    """A Ray Data actor: the teacher and the stored corpus indexes, loaded once; each call
    computes and writes a batch of units ({"corpus", "unit"} columns), one row per unit."""

    def __init__(self, config: PrecomputeConfig) -> None:
        self.config = config
        self.teacher, meta, masking = load_teacher_for(config, config.device)
        self.indexes = corpus_indexes(config)
        self.writer = open_writer(config, meta, self.indexes)
        self.source = unit_source(self.teacher, config, masking, self.indexes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        units = [
            Unit(str(name), int(index))
            for name, index in zip(batch["corpus"], batch["unit"], strict=True)
        ]
        # done records read now: a resubmitted batch skips what its first attempt wrote
        pending = {unit for name in {u.corpus for u in units} for unit in self.writer.pending(name)}
        todo = [(unit.corpus, unit.index) for unit in units if unit in pending]
        tokens: dict[Unit, int] = {}
        finished = iter(todo)  # units finish in the order they are handed over

        def tick(corpus: str) -> Callable[[int, int], None]:
            def done(n_records: int, n_tokens: int) -> None:
                tokens[Unit(*next(finished))] = n_tokens

            return done

        compute_units(self.teacher, self.config, self.source, todo, self.writer, tick)
        skipped = [u for u in units if u not in pending]
        if skipped:  # written by an earlier attempt: their counts are in their done records
            store = open_store(self.config.out, storage_options=self.writer.storage_options)
            for u in skipped:
                tokens[u] = int(store[u.corpus].done_record(u.index)["n_tokens"])
        records = [int(self.indexes[u.corpus].units[u.index, 4]) for u in units]
        return {
            "corpus": np.array([u.corpus for u in units]),
            "records": np.array(records),
            "tokens": np.array([tokens.get(u, 0) for u in units]),
            "computed": np.array([unit in pending for unit in units]),
        }


def actor_resources(
    cluster: dict[str, float], nodes: list[dict[str, float]], device: str, actors: int | None
) -> tuple[int, dict[str, Any], str]:
    """(actor count, Ray resources of one actor, its --device) on a cluster with `cluster`
    resources in total and alive nodes with `nodes` resources: one actor per GPU by default,
    or on a CPU cluster one per node, each with the CPUs its node can give every actor."""
    if actors is not None and actors < 1:
        raise UserError(f"--ray-actors must be >= 1, got {actors}")
    gpus = int(cluster.get("GPU", 0))
    if device.startswith("cuda") and not gpus:
        raise UserError(f"--device {device}: the Ray cluster has no GPUs")
    if device != "cpu" and gpus:
        actors = actors or gpus
        if actors > gpus:
            raise UserError(f"--ray-actors {actors}: the Ray cluster has {gpus} GPUs, one each")
        return actors, {"num_gpus": 1}, "cuda"
    cpu_nodes = [int(node["CPU"]) for node in nodes if node.get("CPU", 0) >= 1]
    actors = actors or len(cpu_nodes)
    if actors > sum(cpu_nodes):
        raise UserError(f"--ray-actors {actors}: the Ray cluster has {sum(cpu_nodes)} CPUs")
    share = min(cpu_nodes) // math.ceil(actors / len(cpu_nodes))
    return actors, {"num_cpus": max(1, share)}, "cpu"


def _check_complete(config: PrecomputeConfig) -> None:
    store = open_store(config.out, storage_options=dict(config.storage_options) or None)
    missing = [name for name, _ in config.corpora if not store[name].complete]
    if missing:
        raise UserError(f"store {config.out}: units of {missing} not written; rerun to finish")


def run_precompute_ray(
    config: PrecomputeConfig,
    actors: int | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Fill `config.out` with a Ray actor pool (module docstring); returns `run_precompute`'s
    summary, with world_size = actors and engine = "ray"."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    with ray_session(address) as ray:
        from ray import data as ray_data

        alive = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        actors, resources, device = actor_resources(
            ray.cluster_resources(), alive, config.device, actors
        )
        config = replace(config, device=device)
        prepare = ray.remote(prepare_store).options(**resources)
        pending, records, teacher = ray.get(prepare.remote(config))
        work: dict[str, list[int]] = {name: [] for name, _ in config.corpora}
        for unit in pending:
            work[unit.corpus].append(records[unit.corpus][unit.index])
        ray_data.DataContext.get_current().enable_progress_bars = False  # ours is below
        compute_started = time.perf_counter()
        computed_tokens = 0
        with UnitProgress(work, console, enabled=config.progress) as progress:
            ticks = {name: progress.ticker(name) for name in work}
            if pending:
                items = [{"corpus": unit.corpus, "unit": unit.index} for unit in pending]
                per_call = max(1, min(UNITS_PER_CALL, len(pending) // (2 * actors)))
                pool = ray_data.ActorPoolStrategy(
                    size=actors, max_tasks_in_flight_per_actor=CALLS_IN_FLIGHT
                )
                rows = ray_data.from_items(items).map_batches(
                    UnitWorker,
                    fn_constructor_args=(config,),
                    batch_size=per_call,
                    compute=pool,
                    **resources,
                )
                for row in rows.iter_rows():
                    ticks[row["corpus"]](int(row["records"]), int(row["tokens"]))
                    computed_tokens += int(row["tokens"]) if row["computed"] else 0
        compute_s = time.perf_counter() - compute_started
    _check_complete(config)
    consolidate_store(config.out, dict(config.storage_options) or None)
    computed = {name: len(units) for name, units in work.items()}
    return {
        **describe_run(teacher, config, computed),
        "engine": "ray",
        "rank": 0,
        "world_size": actors,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "compute_s": round(compute_s, 3),
        "tokens_computed": computed_tokens,
    }

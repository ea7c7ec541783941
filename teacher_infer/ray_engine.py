"""`kdcache precompute --engine ray`: the teacher as a Ray Data actor pool over pending units.

    summary = run_precompute_ray(config, actors=None, address=None)   # same summary as precompute

1. One Ray task, with the resources of one actor, does what rank 0 does under torchrun: load the
   teacher, plan the corpora, create the store (or reopen it after checking its settings), and
   return the pending units (done flag not set) with the summary's teacher and corpus fields.
2. A Ray Data dataset of those units goes through `map_batches` on a fixed pool of `UnitWorker`
   actors: one GPU each when the cluster has GPUs and --device is not cpu, otherwise an equal
   share of a node's CPUs (Ray sets OMP_NUM_THREADS, hence torch's threads, to that share).
   Each actor loads the teacher and plans the corpora once, then writes every unit it is handed
   through `compute_units`, the single-process path: the unit's shards, then its done flag.
3. Ray Data restarts a dead actor and resubmits its batches (its actor pools default to
   max_restarts = max_task_retries = -1, unlimited); a batch that runs again skips the units
   already flagged, so a failed or pre-empted worker's units are simply redone. Once the
   dataset is consumed every unit must be flagged, as after torchrun's final barrier; the
   result equals a single-process run's arrays exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
from rich.console import Console

from logit_store import Unit, UserError, open_store
from logit_store.ray_session import ray_session
from teacher_infer.precompute import (
    PrecomputeConfig,
    UnitProgress,
    compute_units,
    describe_run,
    load_and_plan,
    open_writer,
)

# Units per actor call: several let the device compute unit u + 1 while unit u is written (a
# call returns only once its units are flagged), few keep the pool busy to the end.
UNITS_PER_CALL = 4
# Actor calls queued per actor: the next batch is ready when one ends, and none waits behind a
# busy actor while another is idle at the end of the run.
CALLS_IN_FLIGHT = 2


def prepare_store(config: PrecomputeConfig) -> tuple[list[Unit], dict[str, Any]]:
    """Create or reopen the store; its pending units and `describe_run`'s fields (a Ray task)."""
    teacher, meta, planned = load_and_plan(config, config.device)
    writer = open_writer(config, meta, planned)
    pending = {p.name: writer.pending(p.name) for p in planned}
    counts = {name: len(units) for name, units in pending.items()}
    units = [unit for corpus_units in pending.values() for unit in corpus_units]
    return units, describe_run(teacher, planned, writer, counts)


class UnitWorker:
    """A Ray Data actor: the teacher and the corpus plans, loaded once; each call computes and
    writes a batch of units ({"corpus", "unit"} columns) and returns one row per unit."""

    def __init__(self, config: PrecomputeConfig) -> None:
        self.config = config
        self.teacher, meta, planned = load_and_plan(config, config.device)
        self.corpora = {p.name: p for p in planned}
        self.writer = open_writer(config, meta, planned)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [str(name) for name in batch["corpus"]]
        units = [
            self.writer.units(name)[int(index)]
            for name, index in zip(names, batch["unit"], strict=True)
        ]
        # flags read now: a resubmitted batch skips what its first attempt wrote
        pending = {unit for name in set(names) for unit in self.writer.pending(name)}
        todo = [(self.corpora[unit.corpus], unit) for unit in units if unit in pending]
        compute_units(self.teacher, self.config, todo, self.writer)
        tokens = [int(self.corpora[u.corpus].plan.lengths[u.start : u.stop].sum()) for u in units]
        return {
            "corpus": np.array(names),
            "sequences": np.array([unit.stop - unit.start for unit in units]),
            "tokens": np.array(tokens),
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
        pending, described = ray.get(prepare.remote(config))
        work: dict[str, list[Unit]] = {name: [] for name in described["corpora"]}
        for unit in pending:
            work[unit.corpus].append(unit)
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
                    ticks[row["corpus"]](int(row["sequences"]), int(row["tokens"]))
                    computed_tokens += int(row["tokens"]) if row["computed"] else 0
        compute_s = time.perf_counter() - compute_started
    _check_complete(config)
    return {
        **described,
        "engine": "ray",
        "rank": 0,
        "world_size": actors,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "compute_s": round(compute_s, 3),
        "tokens_computed": computed_tokens,
    }

"""`kdcache sweep --engine ray`: every experiment of the grid as a Ray task.

Each pending job runs `sweep_jobs.execute_job` as a task holding one GPU when the cluster has GPUs
(and --device is not cpu), otherwise one CPU (and one torch thread). Jobs are submitted in plan
order, a finetuning only once the distillation it finetunes is complete, and no more at a time
than the cluster has GPUs (or CPUs), so Ray's queue never reorders the plan. Every task writes
its own run folder under RUNS, which every node must reach (a shared filesystem), so skipping
finished runs by config hash and resuming a killed sweep work as with the local engine; Ray
retries a task whose worker died (the distillation resumes from its last checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable

from logit_store import UserError
from student_train.configs import SweepConfig
from student_train.sweep_jobs import execute_job, run_scheduled
from student_train.sweep_plan import Job
from teacher_infer.ray_session import ray_session


def run_on_ray(
    cfg: SweepConfig, pending: list[Job], done: set[str], on_done: Callable[[Job], None]
) -> int:
    """Run `pending` on the Ray cluster at `cfg.ray_address` (or a local instance); returns the
    experiments the cluster runs at a time."""
    with ray_session(cfg.ray_address) as ray:
        cluster = ray.cluster_resources()
        gpus = int(cluster.get("GPU", 0)) if cfg.device != "cpu" else 0
        if cfg.device.startswith("cuda") and not gpus:
            raise UserError(f"--device {cfg.device}: the Ray cluster has no GPUs")
        slots = gpus or int(cluster.get("CPU", 1))
        task = ray.remote(execute_job).options(**({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        run_scheduled(
            pending, done, lambda job: task.remote(job, 1).future(), max(1, slots), on_done
        )
    return slots

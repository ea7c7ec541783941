"""The experiment grid of a sweep (`configs.SweepConfig`): which runs, with which configs, where.

A sweep crosses share of task data (``--task-share``) × seed × student. Each cell is one
distillation whose transfer set draws ``(1 − share)`` of ``size`` sequences from the generic
corpus and ``share`` from the task corpora, split evenly among them (a share of 0 drops the
source); each distilled student is then finetuned and evaluated on every target
(``dc:CORPUS``, ``icner:CORPUS``) with the distillation's seed. Baselines, per seed × target,
get the same finetuning budget:

* ``random``: the student's architecture, randomly initialised (the from-scratch baseline);
* ``init``: the student as distillation starts it, without distillation (only for
  ``from-teacher:`` students; for a preset or config student it *is* a random init);
* ``teacher``: the store's teacher itself.

Folders under RUNS (``HASH8`` = first 8 hex digits of the run's config hash from
`identity.run_identity`, the hash its config.json holds once it runs, so a changed setting
lands in a new folder and an unchanged one finds its finished run; ``M`` = the task share)::

    init/STUDENT-HASH8/                       the undistilled student (model/), one per student
    distill/STUDENT_mixM_seedS-HASH8/         `run_distill` run folders
    finetune/UPSTREAM_TASK-CORPUS-HASH8/      `run_finetune` run folders
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from logit_store import Store, UserError
from student_train.configs import (
    TEACHER,
    DistillConfig,
    FinetuneConfig,
    FinetuneTarget,
    InitConfig,
    RunConfig,
    SweepConfig,
)
from student_train.identity import run_identity
from student_train.runs import config_hash
from student_train.students import FROM_TEACHER

JobKind = Literal["init", "distill", "finetune"]
Role = Literal["distilled", "init", "random", "teacher"]


def slug(text: str) -> str:
    """A folder-safe rendering of a name: ``from-teacher:2`` → ``from-teacher-2``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Job:
    """One run of the grid: its folder `run` (relative to RUNS), labels and config.

    `after` names the run folder that must be complete first (the encoder this job finetunes).
    """

    run: str
    kind: JobKind
    role: Role
    student: str
    seed: int
    config: RunConfig
    mix: float | None = None
    target: FinetuneTarget | None = None
    after: str | None = None

    def describe(self) -> str:
        mix = "" if self.mix is None else f" mix={self.mix:g}"
        target = "" if self.target is None else f" → {self.target}"
        return f"{self.kind} {self.role} {self.student}{mix} seed={self.seed}{target}"


class _Planner:
    """Names each run folder by its identity; remembers the hashes of the runs planned so far,
    by which a finetuning of one of them is identified before that run exists."""

    def __init__(self, cfg: SweepConfig, store: Store):
        self.cfg, self.store, self.runs = cfg, store, Path(cfg.out)
        self.planned: dict[str, str] = {}  # run folder -> config hash
        self.jobs: list[Job] = []

    def add(self, kind: JobKind, name: str, config: RunConfig, **labels: Any) -> str:
        digest = config_hash(run_identity(config, self.store, self.planned))
        run = f"{kind}/{name}-{digest[:8]}"
        self.planned[str(self.runs / run)] = digest
        self.jobs.append(Job(run, kind, config=replace(config, out=str(self.runs / run)), **labels))
        return run

    def finetune(
        self, upstream: str, label: str, base: dict[str, Any], target: FinetuneTarget
    ) -> None:
        """Finetune the encoder at `upstream` (a run folder, or TEACHER) on `target`."""
        cfg, store = self.cfg, self.store
        if not store.has(target.corpus):
            raise UserError(
                f"--finetune {target}: corpus not in the store (corpora: {store.corpora})"
            )
        config = FinetuneConfig(
            student=TEACHER if upstream == TEACHER else str(self.runs / upstream),
            task=target.task,
            store=cfg.store,
            corpus=target.corpus,
            out="",
            steps=cfg.finetune_steps,
            lr=cfg.finetune_lr,
            batch_size=cfg.finetune_batch_size,
            seed=base["seed"],
            init="random" if base["role"] == "random" else "pretrained",
            device=cfg.device,
            storage_options=tuple(sorted(cfg.storage_options.items())),
        )
        name = f"{label}_{target.task}-{slug(target.corpus)}"
        after = None if upstream == TEACHER else upstream
        self.add("finetune", name, config, target=target, after=after, **base)


def plan_sweep(cfg: SweepConfig, store: Store) -> list[Job]:
    """Every job of the grid, each after the job it depends on (see the module docstring)."""
    plan = _Planner(cfg, store)
    inits: dict[str, str] = {}
    for student in cfg.students if cfg.baselines and cfg.targets else ():
        init = InitConfig(
            store=cfg.store, out="", student=student, storage_options=cfg.storage_options
        )
        inits[student] = plan.add("init", slug(student), init, role="init", student=student, seed=0)
    for seed in cfg.seeds:
        for student in cfg.students:
            for share in cfg.task_shares:
                distill = DistillConfig(
                    store=cfg.store,
                    out="",
                    transfer=cfg.transfer(share, seed),
                    student=student,
                    steps=cfg.steps,
                    lr=cfg.lr,
                    batch_tokens=cfg.batch_tokens,
                    seed=seed,
                    num_workers=1 if cfg.jobs == 1 and cfg.engine == "local" else 0,
                    device=cfg.device,
                    storage_options=cfg.storage_options,
                )
                name = f"{slug(student)}_mix{share:.2f}_seed{seed}"
                base: dict[str, Any] = {"role": "distilled", "student": student, "seed": seed}
                run = plan.add("distill", name, distill, mix=share, **base)
                for target in cfg.targets:
                    plan.finetune(run, name, {**base, "mix": share}, target)
            if not cfg.baselines:
                continue
            roles: list[Role] = (
                ["random", "init"] if student.startswith(FROM_TEACHER) else ["random"]
            )
            for role in roles:
                base = {"role": role, "student": student, "seed": seed}
                for target in cfg.targets:
                    plan.finetune(
                        inits[student], f"{role}-{slug(student)}_seed{seed}", base, target
                    )
        if cfg.baselines:
            base = {"role": "teacher", "student": TEACHER, "seed": seed}
            for target in cfg.targets:
                plan.finetune(TEACHER, f"teacher_seed{seed}", base, target)
    return plan.jobs

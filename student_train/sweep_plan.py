"""The experiment grid of a sweep: which runs, with which configs, in which folders.

A sweep crosses share of task data (``mix``) × seed × student. Each cell is one distillation
whose transfer set draws ``(1 − mix)`` of ``size`` sequences from the generic corpus and
``mix`` from the task corpora, split evenly among them (a share of 0 drops the source); each
distilled student is then finetuned and evaluated on every target (``dc:CORPUS``,
``icner:CORPUS``) with the distillation's seed. Baselines, per seed × target, get the same
finetuning budget:

* ``random``: the student's architecture, randomly initialised (the from-scratch baseline);
* ``init``: the student as distillation starts it, without distillation (only for
  ``from-teacher:`` students; for a preset or config student it *is* a random init);
* ``teacher``: the store's teacher itself.

Folders under RUNS (``HASH8`` = first 8 hex digits of the job's config hash, so a changed
setting lands in a new folder and an unchanged one finds its finished run)::

    init/STUDENT-HASH8/                       the undistilled student (model/), one per student
    distill/STUDENT_mixM_seedS-HASH8/         `run_distill` run folders
    finetune/UPSTREAM_TASK-CORPUS-HASH8/      `run_finetune` run folders
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from logit_store import Store, UserError
from student_train.distill import DistillConfig
from student_train.finetune import TEACHER, FinetuneConfig
from student_train.runs import config_hash
from student_train.students import FROM_TEACHER
from student_train.task_data import TASKS, Task
from student_train.transfer_set import TransferSetSpec, overlapping_sources

JobKind = Literal["init", "distill", "finetune"]
Role = Literal["distilled", "init", "random", "teacher"]
ENGINES = ("local", "ray")


def slug(text: str) -> str:
    """A folder-safe rendering of a name: ``from-teacher:2`` → ``from-teacher-2``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class FinetuneTarget:
    """One finetuning task: ``task`` (dc | icner) on the store corpus ``corpus``."""

    task: Task
    corpus: str

    @staticmethod
    def parse(text: str) -> FinetuneTarget:
        """``dc:task/bbc`` → FinetuneTarget("dc", "task/bbc")."""
        task, sep, corpus = text.partition(":")
        if not sep or task not in TASKS or not corpus:
            raise UserError(f"--finetune {text!r}: expected TASK:CORPUS with TASK one of {TASKS}")
        return FinetuneTarget(task, corpus)

    def __str__(self) -> str:
        return f"{self.task}:{self.corpus}"


@dataclass(frozen=True)
class SweepConfig:
    """A grid of distil → finetune experiments (module docstring).

    store/out: store URL and RUNS folder. generic/tasks: store corpus names (or prefixes) of
    the transfer set. mixes: shares of task data in [0, 1]. seeds, students: the other axes
    (student SPECs as in `students.build_student`). size: transfer-set size in sequences.
    targets: finetuning tasks. steps / lr / batch_tokens: each distillation; finetune_steps /
    finetune_lr / finetune_batch_size: each finetuning. baselines: also run the baselines.
    jobs: experiments run in parallel processes (capped by the cores); device as elsewhere.
    engine: ``local`` (this machine's processes) or ``ray`` (a Ray task per experiment, on the
    cluster at ray_address or a local instance; `jobs` is then unused).
    """

    store: str
    out: str
    generic: str
    tasks: tuple[str, ...]
    mixes: tuple[float, ...]
    seeds: tuple[int, ...]
    students: tuple[str, ...]
    size: int
    replacement: bool = False
    targets: tuple[FinetuneTarget, ...] = ()
    steps: int = 500
    lr: float = 5e-4
    batch_tokens: int = 4096
    finetune_steps: int = 300
    finetune_lr: float = 5e-5
    finetune_batch_size: int = 32
    baselines: bool = True
    jobs: int = 1
    device: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UserError(f"--engine must be one of {ENGINES}, got {self.engine!r}")
        for name in ("tasks", "mixes", "seeds", "students", "targets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.tasks:
            raise UserError("--task: name at least one task corpus of the store")
        if self.generic in self.tasks:
            raise UserError(f"--generic {self.generic!r} is also a --task corpus")
        overlap = overlapping_sources([self.generic, *self.tasks])
        if overlap is not None:
            raise UserError(f"--generic / --task: {overlap}")
        for name, values in (
            ("mix", self.mixes),
            ("seeds", self.seeds),
            ("student", self.students),
        ):
            if not values or len(set(values)) != len(values):
                raise UserError(f"--{name}: give at least one value, each once (got {values})")
        if any(not 0.0 <= m <= 1.0 for m in self.mixes):
            raise UserError(f"--mix: shares of task data must be in [0, 1], got {self.mixes}")
        if any(s < 0 for s in self.seeds):
            raise UserError(f"--seeds must be >= 0, got {self.seeds}")
        if len(set(self.targets)) != len(self.targets):
            raise UserError(f"--finetune: a target is named twice in {self.targets}")
        if min(self.size, self.steps, self.finetune_steps, self.jobs, self.batch_tokens) < 1:
            raise UserError("--size, --steps, --finetune-steps, --jobs must be >= 1")
        if not (self.lr > 0 and self.finetune_lr > 0 and self.finetune_batch_size >= 1):
            raise UserError("learning rates must be > 0 and the finetune batch size >= 1")

    def transfer(self, mix: float, seed: int) -> TransferSetSpec:
        """(1 − mix) generic and mix task data, the task share split evenly over the tasks."""
        pairs = [(self.generic, 1.0 - mix)] if mix < 1.0 else []
        if mix > 0.0:
            pairs += [(task, mix / len(self.tasks)) for task in self.tasks]
        return TransferSetSpec(
            mix=tuple(pairs), size=self.size, seed=seed, replacement=self.replacement
        )


@dataclass(frozen=True)
class InitConfig:
    """The undistilled student `student` built from the store `store` into `out`/model."""

    store: str
    out: str
    student: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def record(self, store: Store) -> dict[str, Any]:
        """The hashed identity: the spec and the teacher/tokenizer it is built from."""
        meta = store.meta
        return {
            "kind": "student-init",
            "student": self.student,
            "seed": 0,
            "store_identity": {
                "teacher_hash": meta.teacher_hash,
                "tokenizer_hash": meta.tokenizer_hash,
            },
        }


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
    config: DistillConfig | FinetuneConfig | InitConfig
    mix: float | None = None
    target: FinetuneTarget | None = None
    after: str | None = None

    def describe(self) -> str:
        mix = "" if self.mix is None else f" mix={self.mix:g}"
        target = "" if self.target is None else f" → {self.target}"
        return f"{self.kind} {self.role} {self.student}{mix} seed={self.seed}{target}"


def _finetune_job(
    cfg: SweepConfig,
    store: Store,
    runs: Path,
    upstream: str,
    label: str,
    base: dict[str, Any],
    target: FinetuneTarget,
) -> Job:
    """Finetune the encoder at `upstream` (a run folder, or TEACHER) on `target`."""
    if target.corpus not in store.corpora:
        raise UserError(f"--finetune {target}: corpus not in the store (corpora: {store.corpora})")
    student = TEACHER if upstream == TEACHER else str(runs / upstream)
    config = FinetuneConfig(
        student=student,
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
    identity = config.hashed_fields()
    identity["upstream"] = upstream if upstream != TEACHER else store.meta.teacher_hash
    identity["corpus_source_hash"] = store[target.corpus].info.get("source_hash", "")
    run = f"finetune/{label}_{target.task}-{slug(target.corpus)}-{config_hash(identity)[:8]}"
    config = replace(config, out=str(runs / run))
    after = None if upstream == TEACHER else upstream
    return Job(run, "finetune", config=config, target=target, after=after, **base)


def plan_sweep(cfg: SweepConfig, store: Store) -> list[Job]:
    """Every job of the grid, each after the job it depends on (see the module docstring)."""
    runs = Path(cfg.out)
    jobs: list[Job] = []
    inits: dict[str, str] = {}
    for student in cfg.students if cfg.baselines and cfg.targets else ():
        init = InitConfig(cfg.store, "", student, cfg.storage_options)
        run = f"init/{slug(student)}-{config_hash(init.record(store))[:8]}"
        inits[student] = run
        jobs.append(Job(run, "init", "init", student, 0, replace(init, out=str(runs / run))))
    for seed in cfg.seeds:
        for student in cfg.students:
            for mix in cfg.mixes:
                distill = DistillConfig(
                    store=cfg.store,
                    out="",
                    transfer=cfg.transfer(mix, seed),
                    student=student,
                    steps=cfg.steps,
                    lr=cfg.lr,
                    batch_tokens=cfg.batch_tokens,
                    seed=seed,
                    num_workers=1 if cfg.jobs == 1 and cfg.engine == "local" else 0,
                    device=cfg.device,
                    storage_options=cfg.storage_options,
                )
                name = f"{slug(student)}_mix{mix:.2f}_seed{seed}"
                run = f"distill/{name}-{config_hash(distill.record(store))[:8]}"
                distill = replace(distill, out=str(runs / run))
                base: dict[str, Any] = {"role": "distilled", "student": student, "seed": seed}
                base["mix"] = mix
                jobs.append(Job(run, "distill", config=distill, **base))
                for target in cfg.targets:
                    jobs.append(_finetune_job(cfg, store, runs, run, name, base, target))
            if not cfg.baselines:
                continue
            roles: list[Role] = (
                ["random", "init"] if student.startswith(FROM_TEACHER) else ["random"]
            )
            for role in roles:
                base = {"role": role, "student": student, "seed": seed}
                label = f"{role}-{slug(student)}_seed{seed}"
                for target in cfg.targets:
                    jobs.append(
                        _finetune_job(cfg, store, runs, inits[student], label, base, target)
                    )
        if cfg.baselines:
            base = {"role": "teacher", "student": TEACHER, "seed": seed}
            for target in cfg.targets:
                jobs.append(
                    _finetune_job(cfg, store, runs, TEACHER, f"teacher_seed{seed}", base, target)
                )
    return jobs

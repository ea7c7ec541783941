"""The frozen, validated configuration of every student command, each default stated once.

`DistillConfig`, `FinetuneConfig` and `InitConfig` describe one run each, `SweepConfig` a grid
of them, `PredictConfig`, `ExportConfig` and `ReportConfig` the commands that use finished
runs. The command line reads its defaults from these classes (`cli_options.config_defaults`),
so a default lives here and nowhere else. A field that changes how or where a run executes but
not what it computes (device, workers, intervals, output and input paths) is marked `RUNTIME`:
a run's identity (`identity.run_identity`) is its other fields, its `settings`, plus what it
reads. This module imports no model code, so the command line can read it when it starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from logit_store import UserError
from student_train.task_data import TASKS, Task
from student_train.transfer_set import TransferSetSpec, overlapping_sources

Init = Literal["pretrained", "random"]
INITS: tuple[Init, ...] = ("pretrained", "random")
TEACHER = "teacher"  # --student teacher: finetune the store's teacher (meta.teacher_id)
ENGINES = ("local", "ray")
QUANTIZE = ("int8",)  # `export --quantize`


RUNTIME = {"runtime": True}
"""Metadata of a config field of how or where a run executes, not of what it computes: it is
kept out of the run's identity (a run moved to another device or folder is the same run)."""


def settings(config: Any) -> dict[str, Any]:
    """The fields of `config` not marked `RUNTIME`, as plain data (nested dataclasses too)."""
    data = asdict(config)
    return {f.name: data[f.name] for f in fields(config) if not f.metadata.get("runtime")}


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run.

    store/out: store URL and run folder. transfer: the transfer set. student: a SPEC of
    `students.build_student`. temperature, kd_weight, alpha_mlm: `DistillLoss`. steps or epochs:
    run length (one of them; epochs are passes over the transfer set). lr, weight_decay,
    warmup (steps; default 5% of the run), grad_clip: AdamW and schedule. batch_tokens: padded
    tokens per batch (B × L_max). seed: init, dropout and (with the spec's) data order.
    eval_sequences: held-out (non-train split) sequences per source scored at the end.
    num_workers: DataLoader workers prefetching batches; checkpoint_every / log_every: steps.
    """

    store: str
    out: str = field(metadata=RUNTIME)
    transfer: TransferSetSpec
    student: str = "tiny"
    temperature: float = 1.0
    kd_weight: float = 1.0
    alpha_mlm: float = 0.0
    steps: int | None = None
    epochs: int | None = None
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int | None = None
    grad_clip: float = 1.0
    batch_tokens: int = 4096
    seed: int = 0
    eval_sequences: int = 256
    num_workers: int = field(default=1, metadata=RUNTIME)
    checkpoint_every: int = field(default=200, metadata=RUNTIME)
    log_every: int = field(default=10, metadata=RUNTIME)
    device: str = field(default="auto", metadata=RUNTIME)
    storage_options: dict[str, Any] = field(default_factory=dict, metadata=RUNTIME)

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise UserError("give exactly one of --steps or --epochs")
        budget = self.steps if self.steps is not None else self.epochs
        if budget is not None and budget < 1:
            raise UserError(f"--steps/--epochs must be >= 1, got {budget}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if self.kd_weight < 0 or self.alpha_mlm < 0 or self.kd_weight + self.alpha_mlm == 0:
            raise UserError("--kd-weight and --alpha-mlm must be >= 0 and not both 0")
        if self.lr <= 0 or self.batch_tokens < 1 or self.grad_clip <= 0:
            raise UserError("--lr, --batch-tokens and the gradient clip must be > 0")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.num_workers < 0:
            raise UserError("checkpoint/log intervals must be >= 1 and workers >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    """One finetune-and-evaluate run.

    student: run folder (RUN/model), Hugging Face model folder, or "teacher" for the store's
    teacher (meta.teacher_id, the teacher baseline); it enters the run's identity by its
    fingerprint, not its path, so a moved RUNS folder resumes. task: "dc" | "icner";
    store/corpus: the store URL and its task corpus; out: the run folder to write.
    Budget: `steps` optimiser steps if set, else `epochs` passes over the train split.
    lr peaks after `warmup_ratio` of the steps, then decays linearly to 0 (AdamW).
    init: the encoder's pretrained weights, or its architecture randomly initialised.
    """

    student: str = field(metadata=RUNTIME)
    task: Task
    store: str
    corpus: str
    out: str = field(metadata=RUNTIME)
    epochs: float = 3.0
    steps: int | None = None
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 0
    init: Init = "pretrained"
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    device: str = field(default="auto", metadata=RUNTIME)
    storage_options: tuple[tuple[str, str], ...] = field(default=(), metadata=RUNTIME)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.init not in INITS:
            raise UserError(f"--init must be one of {INITS}, got {self.init!r}")
        if self.steps is not None and self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if self.steps is None and not self.epochs > 0:
            raise UserError(f"--epochs must be > 0, got {self.epochs}")
        if not self.lr > 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise UserError("--lr must be > 0 and --batch-size >= 1")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.dropout < 1:
            raise UserError("warmup_ratio and dropout must be in [0, 1)")

    def student_folder(self, teacher_id: str) -> str:
        """The encoder's folder: `student`, or the store's teacher (`teacher_id`) for TEACHER."""
        return teacher_id if self.student == TEACHER else self.student


@dataclass(frozen=True)
class InitConfig:
    """The undistilled student `student` built from the store `store` into `out`/model (its
    seed is fixed: every baseline of a student finetunes the same initial weights). The store
    enters the run's identity by its teacher and tokenizer, not by its URL."""

    store: str = field(metadata=RUNTIME)
    out: str = field(metadata=RUNTIME)
    student: str
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict, metadata=RUNTIME)


RunConfig = DistillConfig | FinetuneConfig | InitConfig


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
    """A grid of distil → finetune experiments (`sweep_plan`).

    store/out: store URL and RUNS folder. generic/tasks: store corpus names (or prefixes) of
    the transfer set. task_shares: shares of task data in [0, 1]. seeds, students: the other
    axes (student SPECs as in `students.build_student`). size: transfer-set size in sequences.
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
    size: int
    task_shares: tuple[float, ...] = (0.0, 0.5, 1.0)
    seeds: tuple[int, ...] = (0,)
    students: tuple[str, ...] = ("tiny",)
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
        for name in ("tasks", "task_shares", "seeds", "students", "targets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.tasks:
            raise UserError("--task: name at least one task corpus of the store")
        if self.generic in self.tasks:
            raise UserError(f"--generic {self.generic!r} is also a --task corpus")
        overlap = overlapping_sources([self.generic, *self.tasks])
        if overlap is not None:
            raise UserError(f"--generic / --task: {overlap}")
        for name, values in (
            ("task-share", self.task_shares),
            ("seeds", self.seeds),
            ("student", self.students),
        ):
            if not values or len(set(values)) != len(values):
                raise UserError(f"--{name}: give at least one value, each once (got {values})")
        if any(not 0.0 <= m <= 1.0 for m in self.task_shares):
            raise UserError(f"--task-share: shares must be in [0, 1], got {self.task_shares}")
        if any(s < 0 for s in self.seeds):
            raise UserError(f"--seeds must be >= 0, got {self.seeds}")
        if len(set(self.targets)) != len(self.targets):
            raise UserError(f"--finetune: a target is named twice in {self.targets}")
        if min(self.size, self.steps, self.finetune_steps, self.jobs, self.batch_tokens) < 1:
            raise UserError("--size, --steps, --finetune-steps, --jobs must be >= 1")
        if not (self.lr > 0 and self.finetune_lr > 0 and self.finetune_batch_size >= 1):
            raise UserError("learning rates must be > 0 and the finetune batch size >= 1")

    def transfer(self, share: float, seed: int) -> TransferSetSpec:
        """(1 − share) generic and share task data, the task share split evenly over the tasks."""
        pairs = [(self.generic, 1.0 - share)] if share < 1.0 else []
        if share > 0.0:
            pairs += [(task, share / len(self.tasks)) for task in self.tasks]
        return TransferSetSpec(
            mix=tuple(pairs), size=self.size, seed=seed, replacement=self.replacement
        )


@dataclass(frozen=True)
class PredictConfig:
    """model: finetune run folder or its model/; input: corpus SOURCE or "-" (stdin); out:
    JSONL path (None: standard output); batch_size: texts per forward pass."""

    model: str
    input: str
    out: str | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.out is not None and Path(self.out).is_dir():
            raise UserError(f"--out {self.out}: is a folder; give a file path (preds.jsonl)")


@dataclass(frozen=True)
class ExportConfig:
    """model: finetune run folder or its model/; onnx: the .onnx path to write; quantize: None
    or "int8"; store: the store holding the test split (default: the one it was finetuned on)."""

    model: str
    onnx: str
    quantize: str | None = None
    store: str | None = None

    def __post_init__(self) -> None:
        if not self.onnx.endswith(".onnx"):
            raise UserError(f"--onnx {self.onnx}: give a path ending in .onnx")
        if Path(self.onnx).is_dir():
            raise UserError(f"--onnx {self.onnx}: is a folder; give a file path")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise UserError(f"--quantize must be one of {QUANTIZE}, got {self.quantize!r}")


@dataclass(frozen=True)
class ReportConfig:
    """runs: a sweep's RUNS folder. plot / similarity_plot: PNG paths (default RUNS/report.png,
    RUNS/report_similarity.png). similarity_metric: the per-group metric of the similarity
    reports that gains are correlated with (e.g. coverage, density, nn_cosine_q50)."""

    runs: str
    plot: str | None = None
    similarity_plot: str | None = None
    similarity_metric: str = "coverage"

    def __post_init__(self) -> None:
        for path in (self.plot, self.similarity_plot):
            if path is not None and not path.endswith(".png"):
                raise UserError(f"--plot {path!r}: give a path ending in .png")

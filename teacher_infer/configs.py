"""The settings of `kdcache precompute` and `teacher-adapt`, each default stated once and checked
on construction (a UserError naming the flag).

The command line reads its defaults from these classes (`cli_options.config_defaults`); this
module imports no model code, so the command line can read it when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from logit_store import ENCODINGS, VALUE_DTYPES, Sampled, TopK, UserError


@dataclass(frozen=True)
class PrecomputeConfig:
    """Everything `kdcache precompute` needs; validated on construction (UserError naming the flag).

    corpora: (name, source) pairs; sources are whatever `teacher_infer.corpora.read_corpus` reads.
    token_budget: max B * Lmax per forward pass. unit_size: source records per resumable unit.
    workers: host processes that read, tokenize and batch units (None: `default_workers()`).
    """

    teacher: str
    corpora: tuple[tuple[str, str], ...]
    out: str
    mode: str = "mlm"
    encoding: str = TopK.name  # the encodings' settings default to the encodings' own
    k: int = TopK.k
    n_samples: int = Sampled.n_samples
    max_length: int = 128
    mask_prob: float = 0.15
    seed: int = 0
    positions: str = "masked"
    token_budget: int = 8192
    unit_size: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    value_dtype: str = TopK.value_dtype
    storage_options: Mapping[str, str] = field(default_factory=dict)
    progress: bool = True
    workers: int | None = None

    def __post_init__(self) -> None:
        from teacher_infer.teacher import DTYPES  # model code: imported when a run is configured

        choices = {
            "mode": ("mlm", "task"),
            "encoding": tuple(ENCODINGS),
            "positions": ("masked", "all"),
            "dtype": ("auto", *DTYPES),
            "value_dtype": VALUE_DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                flag = name.replace("_", "-")
                raise UserError(f"--{flag} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not self.corpora:
            raise UserError("give at least one --corpus NAME=SOURCE")
        names = [name for name, _ in self.corpora]
        if len(set(names)) != len(names):
            raise UserError(f"--corpus names must be unique, got {names}")
        if self.k < 1 or self.n_samples < 1:
            raise UserError(f"--k and --samples must be >= 1, got {self.k}, {self.n_samples}")
        if self.encoding == Sampled.name and self.n_samples > Sampled.max_samples:
            raise UserError(
                f"--samples must be in 1..{Sampled.max_samples} (the counts are stored as "
                f"uint16), got {self.n_samples}"
            )
        if self.max_length < 3:
            raise UserError(
                f"--max-length must be >= 3 (specials + a token), got {self.max_length}"
            )
        if not 0.0 <= self.mask_prob <= 1.0:
            raise UserError(f"--mask-prob must be in [0, 1], got {self.mask_prob}")
        if self.mode == "mlm" and self.positions == "masked" and self.mask_prob == 0.0:
            raise UserError(
                "--mask-prob 0 leaves nothing masked: use --positions all or mask-prob > 0"
            )
        if self.token_budget < self.max_length:
            raise UserError(
                f"--token-budget {self.token_budget} must be >= --max-length {self.max_length}"
            )
        if self.unit_size < 1:
            raise UserError(f"--unit-size must be >= 1, got {self.unit_size}")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class AdaptConfig:
    """Teacher adaptation settings; `eval_size` caps held-out sequences per corpus;
    `shuffle_buffer`: training sequences the batches are drawn from (see `ShuffleBuffer`)."""

    base: str
    corpora: tuple[tuple[str, str], ...]
    out: str
    steps: int = 500
    head_only: bool = False
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0
    max_length: int = 64
    mask_prob: float = 0.15
    eval_size: int = 256
    device: str = "auto"
    shuffle_buffer: int = 16_384

    def __post_init__(self) -> None:
        if not self.corpora:
            raise UserError("give at least one --corpus NAME=SOURCE")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("--steps must be >= 0, --batch-size >= 1 and --lr > 0")
        if self.shuffle_buffer < 1:
            raise UserError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if not 0.0 < self.mask_prob < 1.0 or self.max_length < 3 or self.eval_size < 1:
            raise UserError("need 0 < mask-prob < 1, max-length >= 3 and eval-size >= 1")

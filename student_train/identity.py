"""One identity for every student run: what it computes, hashed into its config hash and folder.

`run_identity(config, store)` is the record a run writes to RUN/config.json and hashes
(`runs.config_hash`): the config's `settings` (its fields but the `RUNTIME` ones) plus what
the run reads, by content rather than by path:

* distillation: the store's teacher, tokenizer, encoding and masking; from an incomplete store
  also the sequences each corpus holds so far (once the store is completed the same flags are
  a different run, a different transfer set, never a skip); a student JSON file's content;
* finetuning: the encoder's fingerprint (`heads.model_fingerprint`: a run folder by its run's
  config hash), the store's tokenizer, and the task corpus's source hash and size;
* the initial student of a sweep's baselines: the store's teacher and tokenizer.

The runners (`run_distill`, `run_finetune`, `sweep_jobs.save_initial_student`) and the sweep
planner call it alike, so a planned folder's name ends with the hash its config.json will hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logit_store import Store
from student_train.configs import DistillConfig, FinetuneConfig, RunConfig, settings
from student_train.heads import model_fingerprint, resolve_model_dir

DISTILL_STORE_FIELDS = ("teacher_hash", "tokenizer_hash", "encoding", "k", "n_samples", "masking")
INIT_STORE_FIELDS = ("teacher_hash", "tokenizer_hash")


def encoder_fingerprint(
    cfg: FinetuneConfig, store: Store, planned: Mapping[str, str] | None = None
) -> str:
    """The identity of the encoder a finetuning starts from; `planned` maps run folders a sweep
    has planned but not yet run to their config hashes (what the folder will be known by)."""
    folder, planned = cfg.student_folder(store.meta.teacher_id), planned or {}
    if folder in planned:
        return f"run:{planned[folder]}"
    return model_fingerprint(resolve_model_dir(folder), weights=cfg.init == "pretrained")


def _store_identity(store: Store, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(store.meta, name) for name in names}


def run_identity(
    config: RunConfig, store: Store, planned: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The hashed record of the run `config` over `store` (module docstring); `planned` as in
    `encoder_fingerprint`, for the sweep planner."""
    record = settings(config)
    if isinstance(config, DistillConfig):
        student = Path(config.student)
        if config.student.endswith(".json") and student.is_file():
            record["student_file"] = json.loads(student.read_text())
        record["store_identity"] = _store_identity(store, DISTILL_STORE_FIELDS)
        if not store.complete:
            record["incomplete_store"] = {name: len(store[name]) for name in store.corpora}
    elif isinstance(config, FinetuneConfig):
        corpus = store[config.corpus]
        if config.steps is not None:
            del record["epochs"]  # --steps overrides --epochs
        record["student_fingerprint"] = encoder_fingerprint(config, store, planned)
        record["tokenizer_hash"] = store.meta.tokenizer_hash
        record["corpus_source_hash"] = corpus.info.get("source_hash", "")
        record["n_sequences"] = len(corpus)
    else:
        record["kind"] = "student-init"
        record["store_identity"] = _store_identity(store, INIT_STORE_FIELDS)
    return record

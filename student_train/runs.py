"""Run folders: the layout every student experiment writes, and skip-if-done.

    RUN/config.json    the run's config + "config_hash" (sha256 of its canonical JSON, 16 hex)
    RUN/metrics.json   written last: its presence marks the run complete
    RUN/model/         Hugging Face folder (safetensors) of the trained student
    RUN/checkpoint/    resume state (see `checkpoints.py`)

A folder that already holds a run of another config is refused (results are never overwritten
and a checkpoint is never resumed under different settings).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from logit_store import UserError

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.json"
MODEL_DIR, CHECKPOINT_DIR = "model", "checkpoint"
RunStatus = Literal["new", "resume", "done"]


def config_hash(record: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the record as canonical JSON, "config_hash" excluded."""
    body = {k: v for k, v in record.items() if k != "config_hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file and rename it over `path` (never a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def open_run(out: Path, record: dict[str, Any]) -> RunStatus:
    """Claim `out` for the config `record`: "done" (skip), "resume" or "new" (config written)."""
    wanted = config_hash(record)
    config_path = out / CONFIG_FILE
    if config_path.is_file():
        stored = json.loads(config_path.read_text()).get("config_hash")
        if stored != wanted:
            raise UserError(
                f"{out}: holds a run with config_hash {stored}, not {wanted}; "
                "use a new --out folder (or delete this one to redo it)"
            )
        return "done" if (out / METRICS_FILE).is_file() else "resume"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_path, {**record, "config_hash": wanted})
    return "new"


def finish_run(out: Path, metrics: dict[str, Any]) -> None:
    """Write RUN/metrics.json (with the config hash): the run is complete from here on."""
    stored = json.loads((out / CONFIG_FILE).read_text())["config_hash"]
    write_json_atomic(out / METRICS_FILE, {"config_hash": stored, **metrics})


def read_metrics(out: Path) -> dict[str, Any]:
    """RUN/metrics.json of a completed run."""
    data: dict[str, Any] = json.loads((out / METRICS_FILE).read_text())
    return data

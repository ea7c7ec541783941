"""Run folders: the layout every student experiment writes, and skip-if-done.

    RUN/config.json    the run's config + "config_hash" (sha256 of its canonical JSON, 16 hex)
    RUN/metrics.json   written last: its presence marks the run complete
    RUN/model/         Hugging Face folder (safetensors) of the trained student
    RUN/checkpoint/    resume state (see `checkpoints.py`)

A sweep's RUNS folder holds run folders and, beside them (`sweep.py`, read by `report.py`)::

    RUNS/sweep.json     the sweep's config and planned run folders
    RUNS/results.jsonl  one row per completed run of the sweep

A folder that already holds a run of another config is refused (results are never overwritten
and a checkpoint is never resumed under different settings).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from logit_store import UserError
from teacher_infer.output_files import write_json_atomic

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.json"
MODEL_DIR, CHECKPOINT_DIR = "model", "checkpoint"
WEIGHTS_FILE = "model.safetensors"  # the weights in every saved model folder (RUN/model/)
RESULTS_FILE, SWEEP_FILE = "results.jsonl", "sweep.json"
RunStatus = Literal["new", "resume", "done"]


def config_hash(record: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the record as canonical JSON, "config_hash" excluded."""
    body = {k: v for k, v in record.items() if k != "config_hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_json(path: Path) -> dict[str, Any]:
    """A run file as a dict; a damaged one is a `UserError` naming it (never a traceback)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path}: not a readable run file ({err}); delete {path.parent} and rerun"
        ) from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a run file (a JSON object); delete {path.parent} and rerun")
    return data


def _shown(value: Any) -> str:
    """A config value as compact JSON, cut to 60 characters (one line, whatever its size)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def run_status(out: Path, record: dict[str, Any]) -> RunStatus:
    """What `out` holds for the config `record`: "done", "resume" or "new" (writes nothing).
    A path that is not a folder, one inside a Zarr store (a folder at or above it holds
    zarr.json; the outermost is named), or a folder holding a run of another config, is
    refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give a run folder path as --out")
    stores = [f for f in (out.resolve(), *out.resolve().parents) if (f / "zarr.json").is_file()]
    if stores:
        raise UserError(
            f"--out {out}: inside the Zarr store {stores[-1]}; run files must not go into a "
            "store: give a folder outside it"
        )
    config_path = out / CONFIG_FILE
    if not config_path.is_file():
        return "new"
    stored, wanted = read_json(config_path), config_hash(record)
    if stored.get("config_hash") != wanted:
        mine = json.loads(json.dumps(record, default=str))
        differ = [
            f"{k}: stored {_shown(stored.get(k))}, given {_shown(mine.get(k))}"
            for k in sorted({*stored, *mine} - {"config_hash"})
            if stored.get(k) != mine.get(k)
        ]
        raise UserError(
            f"{out}: holds a run with config_hash {stored.get('config_hash')}, not {wanted} "
            f"(differs in {'; '.join(differ) or 'the hash'}); use a new --out folder, the same "
            "settings, or delete this one to redo it"
        )
    return "done" if (out / METRICS_FILE).is_file() else "resume"


def open_run(out: Path, record: dict[str, Any]) -> RunStatus:
    """Claim `out` for the config `record`: "done" (skip), "resume" or "new" (config written).
    Call it once the run's inputs are validated, so a refused run leaves no folder behind."""
    status = run_status(out, record)
    if status == "new":
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{out}: cannot create the run folder ({err})") from err
        write_json_atomic(out / CONFIG_FILE, {**record, "config_hash": config_hash(record)})
    return status


def finish_run(out: Path, metrics: dict[str, Any]) -> None:
    """Write RUN/metrics.json (with the config hash): the run is complete from here on."""
    stored = read_json(out / CONFIG_FILE)["config_hash"]
    write_json_atomic(out / METRICS_FILE, {"config_hash": stored, **metrics})


def read_metrics(out: Path) -> dict[str, Any]:
    """RUN/metrics.json of a completed run."""
    return read_json(out / METRICS_FILE)

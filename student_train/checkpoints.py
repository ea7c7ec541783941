"""Resume state of a training run, in safetensors, swapped in atomically.

    RUN/checkpoint/latest.json            {"step": N, "dir": "step-0000N"}  (written last)
    RUN/checkpoint/step-0000N/model.safetensors       student weights (tied weights once)
    RUN/checkpoint/step-0000N/optimizer.safetensors   AdamW moments, "state.<param>.<key>"
    RUN/checkpoint/step-0000N/rng.safetensors         torch CPU (+ CUDA) generator states
    RUN/checkpoint/step-0000N/state.json              step, optimizer param groups, scheduler

A kill at any point leaves `latest.json` pointing at a complete step folder; older step folders
are removed only after the pointer moved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from student_train.runs import write_json_atomic

LATEST = "latest.json"


def _optimizer_tensors(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"state.{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    extra: dict[str, Any],
) -> None:
    """Write step `step`'s state, then point `latest.json` at it, then drop older steps."""
    name = f"step-{step:08d}"
    target = folder / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    save_model(model, str(target / "model.safetensors"))
    tensors, opt_json = _optimizer_tensors(optimizer)
    save_file(tensors, str(target / "optimizer.safetensors"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(target / "rng.safetensors"))
    state = {"step": step, "optimizer": opt_json, "scheduler": scheduler.state_dict(), **extra}
    (target / "state.json").write_text(json.dumps(state))
    write_json_atomic(folder / LATEST, {"step": step, "dir": name})
    for old in folder.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: Optimizer, scheduler: LRScheduler
) -> dict[str, Any] | None:
    """Restore the latest complete checkpoint into the objects; its state.json, or None."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    target = folder / json.loads(pointer.read_text())["dir"]
    load_model(model, str(target / "model.safetensors"))
    state: dict[str, Any] = json.loads((target / "state.json").read_text())
    entries: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(target / "optimizer.safetensors")).items():
        _, pid, name = key.split(".", 2)
        entries.setdefault(int(pid), {})[name] = value
    for key, value in state["optimizer"]["scalars"].items():
        _, pid, name = key.split(".", 2)
        entries.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict(
        {"state": entries, "param_groups": state["optimizer"]["param_groups"]}
    )
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(target / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return state

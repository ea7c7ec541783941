"""Where student training runs: device choice and bf16 autocast on CUDA (fp32 on CPU)."""

from __future__ import annotations

import torch

from logit_store import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

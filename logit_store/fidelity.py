"""How faithful stored targets are to the dense teacher distribution they came from.

Each encoding's record reconstructs what a student trained on the store effectively sees
(`SparseTargets.distribution`: for top-k the k stored probabilities plus a uniform tail bucket,
for sampled counts / N). Reported per position (then summarised): forward KL(p || q), reverse
KL(q || p) and Jensen-Shannon divergence, all in nats; forward KL is infinite where q is zero
on ids the teacher gives mass (sampled targets). Plus, where an encoding quantizes (top-k: KL
between the fp32 top-k + tail buckets and the stored, dequantized ones), the quantization-only
error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from logit_store.encodings.base import SparseTargets, as_tensor, kl_rows

if TYPE_CHECKING:
    import torch

T = TypeVar("T", bound=SparseTargets)


@dataclass(frozen=True)
class Fidelity:
    forward_kl: np.ndarray  # (P,)
    reverse_kl: np.ndarray  # (P,)
    jsd: np.ndarray  # (P,)
    quantization_kl: np.ndarray | None  # (P,), where the encoding quantizes

    def summary(self) -> dict[str, float]:
        out = {
            "forward_kl_mean": float(self.forward_kl.mean()),
            "forward_kl_max": float(self.forward_kl.max()),
            "reverse_kl_mean": float(self.reverse_kl.mean()),
            "jsd_mean": float(self.jsd.mean()),
        }
        if self.quantization_kl is not None:
            out["quantization_kl_mean"] = float(self.quantization_kl.mean())
            out["quantization_kl_max"] = float(self.quantization_kl.max())
        return out


def fidelity(
    logits: torch.Tensor, stored: SparseTargets, exact: SparseTargets | None = None
) -> Fidelity:
    """Compare dense teacher logits (P, V) with what the store reconstructs from `stored`.

    `exact` is the unquantized encoding of the same logits (for the quantization-only error);
    both must list ids in the same order (sort by id, as the store does, before comparing).
    """
    import torch

    p = torch.softmax(logits.double(), dim=-1)
    q = stored.distribution(p.shape[-1])
    m = 0.5 * (p + q)
    jsd = 0.5 * kl_rows(p, m) + 0.5 * kl_rows(q, m)
    quant = None if exact is None else stored.quantization_kl(exact)
    return Fidelity(
        kl_rows(p, q).numpy(),
        kl_rows(q, p).numpy(),
        jsd.numpy(),
        None if quant is None else quant.numpy(),
    )


def sort_by_id(t: T) -> T:
    """Reorder each row by ascending id (the store's order), keeping (P, W) arrays aligned."""
    import torch

    order = as_tensor(t.ids).argsort(dim=-1)
    return t.map(lambda x: torch.gather(as_tensor(x), 1, order) if x.ndim == 2 else as_tensor(x))

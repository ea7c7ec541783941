"""How faithful stored targets are to the dense teacher distribution they came from.

Reconstruction (what a student trained on the store effectively sees):

* top-k: the k stored probabilities, plus one tail bucket of mass exp(tail_logmass) spread
  uniformly over the V - k ids outside the top-k;
* sampled: counts / N on the sampled ids, zero elsewhere.

Reported per position (then summarised): forward KL(p || q), reverse KL(q || p) (infinite for
sampled targets, whose q is zero on most ids: reported as inf) and Jensen-Shannon divergence, all
in nats; plus the quantization-only error: KL between the fp32 top-k + tail buckets and the
stored (dequantized) buckets, over the k + 1 buckets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from logit_store.records import SparseTargets


@dataclass(frozen=True)
class Fidelity:
    forward_kl: np.ndarray  # (P,)
    reverse_kl: np.ndarray  # (P,)
    jsd: np.ndarray  # (P,)
    quantization_kl: np.ndarray | None  # (P,), top-k only

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


def _as_tensor(x: object) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def reconstruct(targets: SparseTargets, vocab: int) -> torch.Tensor:
    """(P, V) float64 probabilities the stored targets stand for (see module docstring)."""
    ids = _as_tensor(targets.ids).long()
    q = torch.zeros(ids.shape[0], vocab, dtype=torch.float64)
    if targets.encoding == "topk":
        probs = _as_tensor(targets.logprobs).double().exp()
        tail = _as_tensor(targets.tail_logmass).double().exp()
        rest = vocab - ids.shape[1]
        if rest > 0:
            q += (tail / rest).unsqueeze(1)
        q.scatter_(1, ids, probs)
    else:
        counts = _as_tensor(targets.counts).double()
        q.scatter_add_(1, ids, counts / targets.n_samples)
    return q


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum p log(p/q) per row, with 0 log 0 = 0 and p > 0 = q giving inf."""
    ratio = torch.where(p > 0, p / q, torch.ones_like(p))
    return torch.where(p > 0, p * torch.log(ratio), torch.zeros_like(p)).sum(-1)


def bucket_kl(exact: SparseTargets, stored: SparseTargets) -> torch.Tensor:
    """KL over the k + 1 buckets (top-k ids and the tail) between two top-k encodings."""

    def buckets(t: SparseTargets) -> torch.Tensor:
        lp = torch.cat(
            [_as_tensor(t.logprobs).double(), _as_tensor(t.tail_logmass).double()[:, None]], 1
        )
        p = lp.exp()
        return p / p.sum(-1, keepdim=True)

    return _kl(buckets(exact), buckets(stored))


def fidelity(
    logits: torch.Tensor, stored: SparseTargets, exact: SparseTargets | None = None
) -> Fidelity:
    """Compare dense teacher logits (P, V) with what the store reconstructs from `stored`.

    `exact` is the unquantized top-k of the same logits (for the quantization-only error); both
    must list ids in the same order (sort by id, as the store does, before comparing).
    """
    p = torch.softmax(logits.double(), dim=-1)
    q = reconstruct(stored, p.shape[-1])
    m = 0.5 * (p + q)
    forward = _kl(p, q)
    reverse = _kl(q, p) if stored.encoding == "topk" else torch.full_like(forward, math.inf)
    jsd = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    quant = (
        bucket_kl(exact, stored).numpy()
        if exact is not None and stored.encoding == "topk"
        else None
    )
    return Fidelity(forward.numpy(), reverse.numpy(), jsd.numpy(), quant)


def sort_by_id(t: SparseTargets) -> SparseTargets:
    """Reorder each row by ascending id (the store's order), keeping values aligned."""
    ids = _as_tensor(t.ids)
    order = ids.argsort(dim=-1)
    take = lambda x: None if x is None else torch.gather(_as_tensor(x), 1, order)  # noqa: E731
    return SparseTargets(
        t.encoding,
        torch.gather(ids, 1, order),
        logprobs=take(t.logprobs),
        tail_logmass=None if t.tail_logmass is None else _as_tensor(t.tail_logmass),
        counts=take(t.counts),
        n_samples=t.n_samples,
    )

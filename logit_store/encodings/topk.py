"""The top-k encoding: k ids, their log-probs at T = 1, and the exact log of the tail mass.

* From logits (device): ``logprobs = log_softmax(z)`` in fp32, the k largest, and
  ``tail_logmass = log(1 - sum_topk p) = logsumexp(z[not top-k]) - logsumexp(z)``: a sum of the
  tail's own terms, so no cancellation however close sum_topk p is to 1. Never ``1 - sum``: with
  0.9999 of the mass in the top-k that loses every digit in fp32.
* Stored: ``target_values`` (P, W) log-probs, ``q8`` (uint8 v, logprob = -v * q8_range / 255: at
  most half a step of error, log-probs below -q8_range clamped) or plain ``fp16``;
  ``tail_logmass`` (P,) stays float32: it is the one number that keeps the student calibrated.
* Reconstruction: the k stored probabilities, plus one tail bucket of mass exp(tail_logmass)
  spread uniformly over the V - k ids outside the top-k.
* Metadata: ``k`` (the k stored: min(k asked, classes)), ``value_dtype``, ``q8_range``;
  ``n_samples`` is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from logit_store.encodings.base import (
    TARGET_VALUES_ABOUT,
    SparseTargets,
    StoredArray,
    as_tensor,
    kl_rows,
)
from logit_store.errors import UserError

if TYPE_CHECKING:
    import torch

VALUE_DTYPES = ("q8", "fp16")
# Log-probabilities below -Q8_RANGE (p < 1.1e-7) are clamped to -Q8_RANGE by the q8 codec.
Q8_RANGE = 16.0


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range."""
    import torch

    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass(frozen=True)
class TopKTargets(SparseTargets):
    """``ids`` (P, k), ``logprobs`` (P, k) at T = 1 and ``tail_logmass`` (P,)."""

    logprobs: Any
    tail_logmass: Any

    def __post_init__(self) -> None:
        assert tuple(self.logprobs.shape) == tuple(self.ids.shape)
        assert tuple(self.tail_logmass.shape) == tuple(self.ids.shape[:1])

    def distribution(self, vocab: int) -> torch.Tensor:
        import torch

        ids = as_tensor(self.ids).long()
        q = torch.zeros(ids.shape[0], vocab, dtype=torch.float64)
        rest = vocab - ids.shape[1]
        if rest > 0:
            q += (as_tensor(self.tail_logmass).double().exp() / rest).unsqueeze(1)
        return q.scatter_(1, ids, as_tensor(self.logprobs).double().exp())

    def quantization_kl(self, exact: TopKTargets) -> torch.Tensor:
        return bucket_kl(exact, self)


def bucket_kl(exact: TopKTargets, stored: TopKTargets) -> torch.Tensor:
    """KL over the k + 1 buckets (top-k ids and the tail) between two top-k targets."""

    import torch

    def buckets(t: TopKTargets) -> torch.Tensor:
        lp = torch.cat(
            [as_tensor(t.logprobs).double(), as_tensor(t.tail_logmass).double()[:, None]], 1
        )
        p = lp.exp()
        return p / p.sum(-1, keepdim=True)

    return kl_rows(buckets(exact), buckets(stored))


def topk_targets(logits: torch.Tensor, k: int) -> TopKTargets:
    """(P, V) logits -> top-k ids, log-probs (fp32, T=1) and the exact tail log-mass."""
    import torch

    z = logits.float()
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    k = min(k, z.shape[-1])
    values, ids = torch.topk(z, k, dim=-1)
    values = values - lse
    if k == z.shape[-1]:
        tail = torch.full(values.shape[:1], -math.inf, device=values.device)
    else:
        rest = z.scatter(-1, ids, -math.inf)
        tail = (torch.logsumexp(rest, dim=-1, keepdim=True) - lse).squeeze(-1)
    return TopKTargets(ids, logprobs=values, tail_logmass=tail)


@dataclass(frozen=True)
class TopK:
    """Top-k settings: k, and the dtype (`q8` or `fp16`) of the stored log-probs."""

    name: ClassVar[str] = "topk"
    k: int = 32
    value_dtype: str = "q8"
    q8_range: float = Q8_RANGE

    def __post_init__(self) -> None:
        if not self.k >= 1:
            raise UserError(f"k must be >= 1, got {self.k}")
        if self.value_dtype not in VALUE_DTYPES:
            raise UserError(f"value dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> TopK:
        return cls(int(meta["k"]), str(meta["value_dtype"]), float(meta.get("q8_range", Q8_RANGE)))

    def to_meta(self) -> dict[str, Any]:
        return {
            "encoding": self.name,
            "k": self.k,
            "n_samples": 0,
            "value_dtype": self.value_dtype,
            "q8_range": self.q8_range,
        }

    def fitted(self, num_classes: int) -> TopK:
        """A teacher with fewer classes than k stores all of them."""
        return replace(self, k=min(self.k, num_classes))

    def width(self, num_classes: int) -> int:
        return min(self.k, num_classes)

    def from_logits(self, logits: torch.Tensor, generator: torch.Generator | None) -> TopKTargets:
        return topk_targets(logits, self.k)

    def stored_arrays(self) -> dict[str, StoredArray]:
        values = np.dtype(np.uint8 if self.value_dtype == "q8" else np.float16)
        return {
            "target_values": StoredArray(True, values, TARGET_VALUES_ABOUT),
            "tail_logmass": StoredArray(
                False,
                np.dtype(np.float32),
                "per labelled position: log(1 - sum of the top-k probabilities)",
            ),
        }

    def encode(self, targets: SparseTargets) -> dict[str, np.ndarray]:
        assert isinstance(targets, TopKTargets)
        raw = np.asarray(targets.logprobs)
        if self.value_dtype == "q8":
            q = np.rint(-raw.astype(np.float64) * (255.0 / self.q8_range))
            values = np.clip(q, 0, 255).astype(np.uint8)
        else:
            values = raw.astype(np.float16)
        tail = np.asarray(targets.tail_logmass, dtype=np.float32)
        return {"target_values": values, "tail_logmass": tail}

    def decode(self, ids: np.ndarray, arrays: Mapping[str, np.ndarray]) -> TopKTargets:
        values = arrays["target_values"]
        if self.value_dtype == "q8":
            step = np.float32(self.q8_range / 255.0)
            logprobs = (-np.arange(256, dtype=np.float32) * step).astype(np.float32)[values]
        else:
            logprobs = values.astype(np.float32)
        tail = arrays["tail_logmass"].astype(np.float32)
        return TopKTargets(ids, logprobs=logprobs, tail_logmass=tail)

    def faults(self, targets: SparseTargets) -> list[str]:
        assert isinstance(targets, TopKTargets)
        faults = []
        if (targets.logprobs > 0).any() or np.isnan(targets.logprobs).any():
            faults.append("array 'target_values' has log-probs > 0 or NaN")
        if (targets.tail_logmass > 0).any() or np.isnan(targets.tail_logmass).any():
            faults.append("array 'tail_logmass' has values > 0 or NaN")
        return faults

    def summary(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "samples": None,
            "value_dtype": self.value_dtype,
            "settings": f"k={self.k}",
        }

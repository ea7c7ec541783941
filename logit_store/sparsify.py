"""Dense teacher logits -> SparseTargets, on whatever device the logits live on.

The one implementation of the two encodings (DESIGN §3), used by teacher inference on the
device and by the fidelity report and tests as the reference:

* top-k: ``logprobs = log_softmax(z)`` in fp32, the k largest, and
  ``tail_logmass = log(1 - sum_topk p) = logsumexp(z[not top-k]) - logsumexp(z)``: a sum of the
  tail's own terms, so no cancellation however close sum_topk p is to 1. Never ``1 - sum``: with
  0.9999 of the mass in the top-k that loses every digit in fp32.
* sampled: N draws with replacement from softmax(z), returned as unique ids + counts; the
  empirical distribution counts/N is an unbiased estimate of the teacher's.

Only (P, k) tensors leave this function, so callers copy nothing of vocabulary size to host.
"""

from __future__ import annotations

import math

import torch

from logit_store.records import SparseTargets


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_targets(logits: torch.Tensor, k: int) -> SparseTargets:
    """(P, V) logits -> top-k ids, log-probs (fp32, T=1) and the exact tail log-mass."""
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
    return SparseTargets("topk", ids, logprobs=values, tail_logmass=tail)


def sampled_targets(
    logits: torch.Tensor, n_samples: int, generator: torch.Generator | None = None
) -> SparseTargets:
    """(P, V) logits -> N draws with replacement per row as unique ids (P, m) and counts (P, m).

    Rows are padded to the largest number of unique ids m in the batch with id 0, count 0.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    draws = torch.multinomial(probs, n_samples, replacement=True, generator=generator)
    draws, _ = draws.sort(dim=-1)
    new = torch.ones_like(draws, dtype=torch.bool)
    new[:, 1:] = draws[:, 1:] != draws[:, :-1]
    slot = new.cumsum(dim=-1) - 1  # index of each draw's unique id within its row
    width = int(slot.max().item()) + 1 if draws.numel() else 0
    ids = torch.zeros(draws.shape[0], width, dtype=torch.long, device=draws.device)
    counts = torch.zeros(draws.shape[0], width, dtype=torch.float32, device=draws.device)
    ids.scatter_(1, slot, draws)
    counts.scatter_add_(1, slot, torch.ones_like(draws, dtype=torch.float32))
    return SparseTargets("sampled", ids, counts=counts, n_samples=n_samples)

"""The sampled encoding: N draws with replacement from the teacher, as unique ids and counts.

* From logits (device): N draws from softmax(z) per row, returned as unique ``ids`` (P, m) and
  ``counts`` (P, m) with ``counts.sum(-1) == N``; rows are padded to the batch's largest m with
  id 0, count 0. The empirical distribution counts / N is an unbiased estimate of the teacher's.
* Stored: ``target_values`` (P, W) counts, uint8 when N <= 255, else uint16 (W = min(N, C));
  columns with count 0 are padding.
* Reconstruction: counts / N on the sampled ids, zero elsewhere.
* Metadata: ``n_samples`` (N); ``k`` is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from logit_store.encodings.base import TARGET_VALUES_ABOUT, SparseTargets, StoredArray, as_tensor
from logit_store.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SampledTargets(SparseTargets):
    """``ids`` (P, m) and ``counts`` (P, m) of N = ``n_samples`` draws; count 0 is padding."""

    counts: Any
    n_samples: int

    def __post_init__(self) -> None:
        assert self.n_samples > 0, "sampled targets need N"
        assert tuple(self.counts.shape) == tuple(self.ids.shape)

    def padding(self) -> np.ndarray:
        return np.asarray(self.counts) == 0

    def distribution(self, vocab: int) -> torch.Tensor:
        import torch

        ids = as_tensor(self.ids).long()
        q = torch.zeros(ids.shape[0], vocab, dtype=torch.float64)
        return q.scatter_add_(1, ids, as_tensor(self.counts).double() / self.n_samples)


def sampled_targets(
    logits: torch.Tensor, n_samples: int, generator: torch.Generator | None = None
) -> SampledTargets:
    """(P, V) logits -> N draws with replacement per row as unique ids (P, m) and counts (P, m).

    Rows are padded to the largest number of unique ids m in the batch with id 0, count 0.
    """
    import torch

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
    return SampledTargets(ids, counts=counts, n_samples=n_samples)


@dataclass(frozen=True)
class Sampled:
    """Sampled settings: N draws per labelled position (1..65535)."""

    name: ClassVar[str] = "sampled"
    max_samples: ClassVar[int] = 65535  # counts are stored as uint16
    n_samples: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.n_samples <= self.max_samples:
            raise UserError(f"samples must be in 1..{self.max_samples}, got {self.n_samples}")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Sampled:
        return cls(int(meta["n_samples"]))

    def to_meta(self) -> dict[str, Any]:
        return {"encoding": self.name, "k": 0, "n_samples": self.n_samples}

    def fitted(self, num_classes: int) -> Sampled:
        return self

    def width(self, num_classes: int) -> int:
        return min(self.n_samples, num_classes)

    def from_logits(
        self, logits: torch.Tensor, generator: torch.Generator | None
    ) -> SampledTargets:
        return sampled_targets(logits, self.n_samples, generator)

    def _count_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.n_samples <= 255 else np.uint16)

    def stored_arrays(self) -> dict[str, StoredArray]:
        return {"target_values": StoredArray(True, self._count_dtype(), TARGET_VALUES_ABOUT)}

    def encode(self, targets: SparseTargets) -> dict[str, np.ndarray]:
        assert isinstance(targets, SampledTargets)
        counts = np.asarray(targets.counts).astype(np.int64)
        if (counts.sum(axis=1) != self.n_samples).any():
            raise ValueError(f"sampled counts must sum to N = {self.n_samples} in every row")
        return {"target_values": counts.astype(self._count_dtype())}

    def decode(self, ids: np.ndarray, arrays: Mapping[str, np.ndarray]) -> SampledTargets:
        """Padding columns are dropped where every row has them, and their ids set to 0."""
        counts = arrays["target_values"].astype(np.float32)
        if len(counts):
            used = int((counts > 0).sum(axis=1).max())
            ids, counts = ids[:, :used], counts[:, :used]
        ids = np.where(counts > 0, ids, 0)
        return SampledTargets(ids, counts=counts, n_samples=self.n_samples)

    def faults(self, targets: SparseTargets) -> list[str]:
        assert isinstance(targets, SampledTargets)
        if len(targets.counts) and (targets.counts.sum(axis=1) != self.n_samples).any():
            return [f"array 'target_values' has counts that do not sum to N = {self.n_samples}"]
        return []

    def summary(self) -> dict[str, Any]:
        return {
            "k": None,
            "samples": self.n_samples,
            "value_dtype": "count",
            "settings": f"N={self.n_samples}",
        }

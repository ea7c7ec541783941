"""What every sparse target encoding is: a record type and a settings type (DESIGN §3).

An encoding is one module holding both, the way a zarr codec is one small frozen dataclass:

* its record, a `SparseTargets` subclass: the teacher's soft labels at P labelled positions,
  ``ids`` (P, W) plus the encoding's own arrays; it reconstructs the distribution it stands
  for (`fidelity`), and the KD losses dispatch on its type;
* its settings, a frozen dataclass implementing `SparseEncoding`: targets from dense logits on
  the device, the arrays it stores beside the shared id coding (`target_ids` rank gaps and
  `id_table`, see `target_codec`), encode/decode to those arrays, the checks of `kdcache
  verify`, what `kdcache inspect` shows, and its keys of the store metadata.

Record arrays may be numpy arrays (writer side) or torch tensors (device and reader side); the
record does not care. Its fields that are not arrays (e.g. N) are settings carried along.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np

# the `about` attribute of `target_values` (format 2 stores carry this text)
TARGET_VALUES_ABOUT = (
    "per labelled position: top-k log-probs (q8: -v * q8_range / 255, or fp16) in target_ids "
    "order, or sampled counts"
)

if TYPE_CHECKING:
    import torch


def as_tensor(x: object) -> torch.Tensor:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum p log(p/q) per row, with 0 log 0 = 0 and p > 0 = q giving inf."""
    import torch

    ratio = torch.where(p > 0, p / q, torch.ones_like(p))
    return torch.where(p > 0, p * torch.log(ratio), torch.zeros_like(p)).sum(-1)


@dataclass(frozen=True)
class SparseTargets(ABC):
    """Teacher soft labels at P positions: ``ids`` (P, W) and the encoding's arrays."""

    ids: Any

    def arrays(self) -> dict[str, Any]:
        """Every array field by name: ``ids`` and the encoding's (P, W) and (P,) arrays."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: x for name, x in values.items() if hasattr(x, "shape")}

    def map(self, fn: Callable[[Any], Any]) -> Self:
        """The same targets with `fn` applied to every array (e.g. to move between numpy,
        torch and devices: ``t.map(torch.from_numpy)``, ``t.map(lambda x: x.cpu().numpy())``)."""
        return replace(self, **{name: fn(x) for name, x in self.arrays().items()})

    @property
    def num_positions(self) -> int:
        return int(self.ids.shape[0])

    @property
    def width(self) -> int:
        """Stored columns W: k for top-k, the padded number of unique ids for sampled."""
        return int(self.ids.shape[1])

    def padding(self) -> np.ndarray:
        """(P, W) bool of numpy targets: True at columns that hold no target (none here)."""
        return np.zeros(np.shape(self.ids), dtype=bool)

    @abstractmethod
    def distribution(self, vocab: int) -> torch.Tensor:
        """(P, V) float64 probabilities these targets stand for (what a student sees)."""

    def quantization_kl(self, exact: Self) -> torch.Tensor | None:
        """(P,) KL from the unquantized `exact` targets to these stored ones over what the
        encoding keeps; None where storing loses nothing."""
        return None


@dataclass(frozen=True)
class StoredArray:
    """One array an encoding stores: a value per labelled position or per stored column."""

    per_column: bool
    dtype: np.dtype
    about: str


class SparseEncoding(Protocol):
    """The settings of one encoding (a frozen dataclass) and everything done with them."""

    name: ClassVar[str]  # the `encoding` metadata value and `--encoding` flag value

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Self:
        """The encoding described by the store metadata's keys (validated: UserError)."""
        ...

    def to_meta(self) -> dict[str, Any]:
        """Its store metadata keys, `encoding` included (what `from_meta` reads back)."""
        ...

    def fitted(self, num_classes: int) -> Self:
        """The encoding as stored for a distribution over `num_classes` classes."""
        ...

    def width(self, num_classes: int) -> int:
        """Stored columns W per labelled position."""
        ...

    def from_logits(self, logits: torch.Tensor, generator: torch.Generator | None) -> SparseTargets:
        """(P, V) dense logits -> targets, on the logits' device; only (P, W) tensors leave."""
        ...

    def stored_arrays(self) -> dict[str, StoredArray]:
        """The arrays it stores besides `target_ids` and `id_table`, by array name."""
        ...

    def encode(self, targets: SparseTargets) -> dict[str, np.ndarray]:
        """Numpy targets, W columns in stored order -> each of `stored_arrays()`."""
        ...

    def decode(self, ids: np.ndarray, arrays: Mapping[str, np.ndarray]) -> SparseTargets:
        """Absolute ids (P, W) and the stored arrays (at least `stored_arrays()`) -> targets."""
        ...

    def faults(self, targets: SparseTargets) -> list[str]:
        """What is wrong with decoded targets, one line each ('array NAME ...')."""
        ...

    def summary(self) -> dict[str, Any]:
        """`kdcache inspect` fields: `k`, `samples`, `value_dtype` and `settings` (one line)."""
        ...


def empty_targets(encoding: SparseEncoding, width: int) -> SparseTargets:
    """Targets of zero positions with `width` columns."""
    arrays = {
        name: np.zeros((0, width) if spec.per_column else (0,), dtype=spec.dtype)
        for name, spec in encoding.stored_arrays().items()
    }
    return encoding.decode(np.zeros((0, width), dtype=np.int64), arrays)

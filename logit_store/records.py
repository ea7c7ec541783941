"""The one record type that crosses from the teacher side to the student side.

`SparseTargets` holds the teacher's soft labels at P labelled positions, in one of two
encodings (DESIGN §3):

* ``topk``: ``ids`` (P, k) and ``logprobs`` (P, k) at temperature 1, plus ``tail_logmass`` (P,)
  = log(1 - sum(exp(logprobs))) computed from the full distribution's log-sum-exp at capture
  time, so it stays exact when the top-k hold 0.9999 of the mass.
* ``sampled``: N draws with replacement from the teacher distribution, stored as unique ``ids``
  (P, m) and ``counts`` (P, m) with ``counts.sum(-1) == n_samples``. Columns with count 0 are
  padding (their id is 0).

Arrays may be numpy arrays (writer side) or torch tensors (reader side, `Corpus.batch`); the
record does not care. The teacher side produces it, `logit_store` stores it, the losses consume it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Encoding = Literal["topk", "sampled"]
ENCODINGS: tuple[Encoding, ...] = ("topk", "sampled")


@dataclass(frozen=True)
class SparseTargets:
    """Teacher soft labels at P positions; see the module docstring for each encoding."""

    encoding: Encoding
    ids: Any
    logprobs: Any = None
    tail_logmass: Any = None
    counts: Any = None
    n_samples: int = 0

    def __post_init__(self) -> None:
        if self.encoding == "topk":
            assert self.logprobs is not None and self.tail_logmass is not None, "topk needs values"
            assert tuple(self.logprobs.shape) == tuple(self.ids.shape)
            assert tuple(self.tail_logmass.shape) == tuple(self.ids.shape[:1])
        elif self.encoding == "sampled":
            assert self.counts is not None and self.n_samples > 0, "sampled needs counts and N"
            assert tuple(self.counts.shape) == tuple(self.ids.shape)
        else:
            raise AssertionError(f"unknown encoding {self.encoding!r}")

    def map(self, fn: Callable[[Any], Any]) -> SparseTargets:
        """The same targets with `fn` applied to every array (e.g. to move between numpy,
        torch and devices: ``t.map(torch.from_numpy)``, ``t.map(lambda x: x.cpu().numpy())``)."""

        def apply(x: Any) -> Any:
            return None if x is None else fn(x)

        return SparseTargets(
            self.encoding,
            fn(self.ids),
            logprobs=apply(self.logprobs),
            tail_logmass=apply(self.tail_logmass),
            counts=apply(self.counts),
            n_samples=self.n_samples,
        )

    @property
    def num_positions(self) -> int:
        return int(self.ids.shape[0])

    @property
    def width(self) -> int:
        """k for top-k, the padded number of unique ids m for sampled targets."""
        return int(self.ids.shape[1])

"""Transfer sets: which cached sequences a student is distilled on, in which order, in batches.

A `TransferSetSpec` names sources (a corpus name, or a prefix naming every corpus under it:
``task`` covers ``task/atis`` and ``task/bbc``) with proportions of a total size, or with absolute
sizes, counted in sequences or tokens. Only sequences of the allowed splits (default ``train``)
are eligible, so test sequences never enter a transfer set.

Selection (fixed for a spec): per source, a uniformly random subset of its eligible sequences,
drawn from numpy PCG64 seeded with ``(seed, source index)`` — the same spec gives the same set on
any machine. A source asked for more than it holds is a `UserError`, unless ``replacement`` is
set: then it is repeated in whole random passes plus a random remainder.

Order (per epoch, seeded with ``(seed, epoch)``): block-shuffled so reads stay sequential.
Each corpus's selected sequences are grouped by store unit; units are shuffled; a window of
`window_units` units (≤ the reader's unit cache) is shuffled, length-sorted into token-budget
batches (B × L_max ≤ batch_tokens), and the window's batches shuffled. The corpora's batch
streams are interleaved at random in proportion to their batch counts. Memory holds the plan
(indices of the transfer set) and one window per worker, never the store.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from logit_store import Store, UserError

SizeUnit = Literal["sequences", "tokens"]
_SOURCE = re.compile(r"^([A-Za-z0-9_./-]+)=([0-9.eE+-]+)$")


def _rng(*key: int) -> np.random.Generator:
    """A PCG64 generator for an explicit integer key (seed, stream, ...)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


@dataclass(frozen=True)
class TransferSetSpec:
    """What to distil on.

    mix: (source, weight) pairs; proportions of `size` when `size` is set (normalised to sum 1),
        else absolute sizes in `unit`.
    size: total transfer-set size in `unit`, or None for absolute weights.
    unit: "sequences" or "tokens" (tokens include special tokens).
    splits: eligible split names; the default keeps test sequences out.
    seed: selection and order seed.
    replacement: allow a source to be asked for more than it holds (repeated passes).
    """

    mix: tuple[tuple[str, float], ...]
    size: int | None = None
    unit: SizeUnit = "sequences"
    splits: tuple[str, ...] = ("train",)
    seed: int = 0
    replacement: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", tuple((str(n), float(w)) for n, w in self.mix))
        object.__setattr__(self, "splits", tuple(self.splits))
        if not self.mix:
            raise UserError("--mix: name at least one source, e.g. generic=0.3,task=0.7")
        overlap = overlapping_sources([n for n, _ in self.mix])
        if overlap is not None:
            raise UserError(f"--mix: {overlap}")
        if any(w <= 0 for _, w in self.mix):
            raise UserError(f"--mix: every weight must be > 0, got {dict(self.mix)}")
        if self.size is not None and self.size < 1:
            raise UserError(f"--size must be >= 1, got {self.size}")
        if self.size is None and any(w != int(w) for _, w in self.mix):
            raise UserError("--mix without --size takes absolute sizes (integers), e.g. task=5000")
        if self.unit not in ("sequences", "tokens"):
            raise UserError(f"--size-unit must be sequences or tokens, got {self.unit!r}")
        if not self.splits:
            raise UserError("--splits: name at least one split (default: train)")

    @staticmethod
    def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
        """``generic=0.3,task=0.7`` → (("generic", 0.3), ("task", 0.7))."""
        pairs = []
        for part in text.split(","):
            match = _SOURCE.match(part.strip())
            if match is None:
                raise UserError(f"--mix {text!r}: expected NAME=WEIGHT[,...], at {part!r}")
            pairs.append((match.group(1), float(match.group(2))))
        return tuple(pairs)

    def targets(self) -> list[int]:
        """Size per source in `unit`: largest-remainder rounding keeps the total exact."""
        weights = np.array([w for _, w in self.mix])
        if self.size is None:
            return [int(w) for w in weights]
        exact = weights / weights.sum() * self.size
        sizes = np.floor(exact).astype(np.int64)
        for i in np.argsort(-(exact - sizes), kind="stable")[: self.size - int(sizes.sum())]:
            sizes[i] += 1
        return [int(s) for s in sizes]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mix"] = [list(p) for p in self.mix]
        out["splits"] = list(self.splits)
        return out


@dataclass(frozen=True)
class PlannedBatch:
    """One batch: sequence indices of one corpus (picklable, cheap)."""

    corpus: str
    indices: np.ndarray


@dataclass
class TransferSet:
    """The selected sequences of a spec: per corpus, dense indices (repeats under replacement)."""

    spec: TransferSetSpec
    selection: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]  # tokens of each selected sequence, aligned with `selection`
    unit_bounds: dict[str, np.ndarray]  # first dense index of every completed unit

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            name: {"sequences": len(idx), "tokens": int(self.lengths[name].sum())}
            for name, idx in self.selection.items()
        }

    def epoch(self, epoch: int, batch_tokens: int, window_units: int = 4) -> list[PlannedBatch]:
        """Block-shuffled, token-budget batches of every selected sequence (module docstring)."""
        per_corpus = [
            self._corpus_batches(name, k, epoch, batch_tokens, window_units)
            for k, name in enumerate(self.selection)
        ]
        labels = np.concatenate([np.full(len(b), k) for k, b in enumerate(per_corpus)])
        _rng(self.spec.seed, 1, epoch, len(per_corpus)).shuffle(labels)
        cursors = [0] * len(per_corpus)
        order = []
        for k in labels:
            order.append(per_corpus[k][cursors[k]])
            cursors[k] += 1
        return order

    def _corpus_batches(
        self, name: str, k: int, epoch: int, batch_tokens: int, window_units: int
    ) -> list[PlannedBatch]:
        rng = _rng(self.spec.seed, 2, epoch, k)
        idx, lengths = self.selection[name], self.lengths[name]
        unit_of = np.searchsorted(self.unit_bounds[name], idx, side="right") - 1
        by_unit = np.argsort(unit_of, kind="stable")
        units, first, count = np.unique(unit_of[by_unit], return_index=True, return_counts=True)
        shuffled = rng.permutation(len(units))
        batches: list[PlannedBatch] = []
        for w in range(0, len(units), window_units):
            rows = np.concatenate(
                [by_unit[first[u] : first[u] + count[u]] for u in shuffled[w : w + window_units]]
            )
            rows = rows[rng.permutation(len(rows))]
            rows = rows[np.argsort(lengths[rows], kind="stable")]
            window = _token_budget_split(rows, lengths[rows], batch_tokens)
            batches.extend(PlannedBatch(name, idx[window[i]]) for i in rng.permutation(len(window)))
        return batches


def _token_budget_split(rows: np.ndarray, lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive groups of length-sorted `rows` with count × max length ≤ budget (≥ 1 each)."""
    groups, start = [], 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or (i - start + 1) * lengths[i] > budget:
            groups.append(rows[start:i])
            start = i
    return groups


def overlapping_sources(sources: list[str]) -> str | None:
    """What overlaps when one source covers another (the same name, or a prefix of it at a
    "/": ``task`` covers ``task/m``), so that a sequence could be drawn twice; else None."""
    for i, first in enumerate(sources):
        for second in sources[i + 1 :]:
            if first == second:
                return f"source {first!r} is named twice"
            wide, narrow = sorted((first, second), key=len)
            if narrow.startswith(wide + "/"):
                return (
                    f"sources {first!r} and {second!r} overlap ({wide!r} covers {narrow!r}): "
                    "a sequence could be drawn twice; name disjoint sources"
                )
    return None


def source_corpora(store: Store, source: str) -> list[str]:
    names = store.covering(source)  # a lost corpus under `source` is refused, naming it
    if not names:
        raise UserError(f"--mix source {source!r} matches no corpus; the store has {store.corpora}")
    return names


def plan_transfer_set(store: Store, spec: TransferSetSpec) -> TransferSet:
    """Select the transfer set of `spec` from `store` (deterministic; reads no targets)."""
    selection: dict[str, list[np.ndarray]] = {}
    lengths: dict[str, list[np.ndarray]] = {}
    bounds: dict[str, np.ndarray] = {}
    for k, ((source, _), want) in enumerate(zip(spec.mix, spec.targets(), strict=True)):
        names = source_corpora(store, source)
        pool_corpus: list[np.ndarray] = []
        pool_index: list[np.ndarray] = []
        pool_len: list[np.ndarray] = []
        for name in names:
            corpus = store[name]
            eligible = np.flatnonzero(corpus.split_mask(spec.splits))
            pool_corpus.append(np.full(len(eligible), len(pool_index)))
            pool_index.append(eligible)
            pool_len.append(corpus.lengths()[eligible])
            bounds[name] = np.array([a for a, _ in corpus.unit_ranges()], dtype=np.int64)
        index, which, size = (np.concatenate(a) for a in (pool_index, pool_corpus, pool_len))
        have = len(index) if spec.unit == "sequences" else int(size.sum())
        if have == 0:
            raise UserError(f"--mix source {source!r} has no sequences in splits {spec.splits}")
        if want > have and not spec.replacement:
            raise UserError(
                f"--mix source {source!r}: asked for {want} {spec.unit} but its {spec.splits} "
                f"splits hold {have}; lower --size or pass --replacement"
            )
        rng = _rng(spec.seed, 0, k)
        passes = -(-want // have)
        order = np.concatenate([rng.permutation(len(index)) for _ in range(passes)])
        if spec.unit == "sequences":
            take = order[:want]
        else:
            take = order[: int(np.searchsorted(np.cumsum(size[order]), want)) + 1]
        for c, name in enumerate(names):
            mine = take[which[take] == c]
            selection.setdefault(name, []).append(index[mine])
            lengths.setdefault(name, []).append(size[mine])
    return TransferSet(
        spec=spec,
        selection={n: np.concatenate(v) for n, v in selection.items()},
        lengths={n: np.concatenate(v) for n, v in lengths.items()},
        unit_bounds=bounds,
    )

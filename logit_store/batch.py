"""What readers hand out: one sequence (`SequenceRecord`) or a padded batch (`SparseBatch`),
assembled from decoded units (`UnitBlock`) without a Python loop per token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from logit_store.encodings import SampledTargets, SparseTargets, TopKTargets, empty_targets
from logit_store.meta import StoreMeta
from logit_store.sequence_info import SequenceInfo

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SequenceRecord:
    """One stored sequence (numpy arrays) with its targets and its record (text, labels)."""

    input_ids: np.ndarray
    word_ids: np.ndarray
    positions: np.ndarray
    masked_ids: np.ndarray
    targets: SparseTargets
    info: SequenceInfo

    @property
    def ids(self) -> Any:
        return self.targets.ids

    @property
    def logprobs(self) -> Any:
        assert isinstance(self.targets, TopKTargets), "log-probs are stored by top-k stores"
        return self.targets.logprobs

    @property
    def tail_logmass(self) -> Any:
        assert isinstance(self.targets, TopKTargets), "tail mass is stored by top-k stores"
        return self.targets.tail_logmass

    @property
    def counts(self) -> Any:
        assert isinstance(self.targets, SampledTargets), "counts are stored by sampled stores"
        return self.targets.counts


@dataclass(frozen=True)
class SparseBatch:
    """B sequences padded to the longest; labelled positions flattened over the batch."""

    input_ids: torch.Tensor  # (B, L) original tokens, pad_token_id padded
    teacher_input_ids: torch.Tensor  # (B, L) what the teacher saw (masks applied)
    attention_mask: torch.Tensor  # (B, L)
    word_ids: torch.Tensor  # (B, L), -1 for special tokens and padding
    batch_index: torch.Tensor  # (P,) row of each labelled position
    positions: torch.Tensor  # (P,) column of each labelled position
    labels: torch.Tensor  # (P,) original token id there (hard MLM label)
    targets: SparseTargets  # torch tensors, P rows
    indices: torch.Tensor  # (B,) sequence indices in the corpus

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SparseBatch:
        """The batch with `fn` applied to every tensor, targets included."""
        import torch

        fields = {k: fn(v) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return replace(self, targets=self.targets.map(fn), **fields)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseBatch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SparseBatch:
        """Page-locked copy, so host-to-GPU copies can overlap compute (DataLoader hook)."""
        return self.map(lambda t: t.pin_memory())


@dataclass(frozen=True)
class UnitBlock:
    lengths: np.ndarray
    n_positions: np.ndarray
    token_start: np.ndarray
    position_start: np.ndarray
    input_ids: np.ndarray
    word_ids: np.ndarray
    positions: np.ndarray
    masked_ids: np.ndarray
    target_ids: np.ndarray  # (P_used, W) absolute ids
    target_arrays: dict[str, np.ndarray]  # the encoding's stored arrays, P_used rows each


def ragged_index(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n), without a Python loop."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    return np.arange(total, dtype=np.int64) + offsets


def assemble_batch(
    meta: StoreMeta,
    idx: np.ndarray,
    units: np.ndarray,
    local: np.ndarray,
    unit_block: Callable[[int], UnitBlock],
) -> SparseBatch:
    """Sequences `idx` (in unit `units`, at `local` within it) as padded torch tensors."""
    import torch

    lengths = np.zeros(len(idx), dtype=np.int64)
    stored = meta.target_encoding.stored_arrays()
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("tok", "wid", "pos", "mid", "tid", "row", *stored)
    }
    order = np.argsort(units, kind="stable")
    for u in np.unique(units):
        rows = order[units[order] == u]
        blk = unit_block(int(u))
        li = local[rows]
        lengths[rows] = blk.lengths[li]
        tok = ragged_index(blk.token_start[li], blk.lengths[li])
        pos = ragged_index(blk.position_start[li], blk.n_positions[li])
        parts["tok"].append(blk.input_ids[tok])
        parts["wid"].append(blk.word_ids[tok])
        parts["pos"].append(blk.positions[pos])
        parts["mid"].append(blk.masked_ids[pos])
        parts["tid"].append(blk.target_ids[pos])
        for name, values in blk.target_arrays.items():
            parts[name].append(values[pos])
        parts["row"].append(np.repeat(rows, blk.n_positions[li]))
    # token rows in the order the loop visited them
    visit = np.concatenate([order[units[order] == u] for u in np.unique(units)])
    tok_rows = np.repeat(visit, lengths[visit])
    tok_cols = ragged_index(np.zeros(len(visit), dtype=np.int64), lengths[visit])
    width = int(lengths.max()) if len(lengths) else 0
    input_ids = np.full((len(idx), width), meta.pad_token_id, dtype=np.int64)
    word_ids = np.full((len(idx), width), -1, dtype=np.int64)
    input_ids[tok_rows, tok_cols] = np.concatenate(parts["tok"]) if parts["tok"] else []
    word_ids[tok_rows, tok_cols] = np.concatenate(parts["wid"]) if parts["wid"] else []
    attention = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    cat = {k: np.concatenate(v) for k, v in parts.items() if v}
    batch_index = cat.get("row", np.zeros(0, dtype=np.int64))
    positions = cat.get("pos", np.zeros(0, dtype=np.int64))
    teacher_input = input_ids.copy()
    teacher_input[batch_index, positions] = cat.get("mid", np.zeros(0, dtype=np.int64))
    targets = (
        meta.target_encoding.decode(cat["tid"], cat)
        if "tid" in cat
        else empty_targets(meta.target_encoding, meta.width)
    )
    return SparseBatch(
        input_ids=torch.from_numpy(input_ids),
        teacher_input_ids=torch.from_numpy(teacher_input),
        attention_mask=torch.from_numpy(attention),
        word_ids=torch.from_numpy(word_ids),
        batch_index=torch.from_numpy(batch_index),
        positions=torch.from_numpy(positions),
        labels=torch.from_numpy(input_ids[batch_index, positions]),
        targets=targets.map(lambda x: torch.from_numpy(np.ascontiguousarray(x))),
        indices=torch.from_numpy(idx),
    )

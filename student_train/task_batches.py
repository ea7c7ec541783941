"""Task batches as padded torch tensors, for finetuning and evaluation (`task_data` plans them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from student_train.task_data import IGNORE_INDEX, TaskSplit, first_subword_labels


@dataclass(frozen=True)
class TaskBatch:
    """input_ids, attention_mask (B, L) int64; labels (B,) class ids (-100 = unknown label);
    tag_labels (B, L) token-level slot ids with IGNORE_INDEX, ICNER only."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    tag_labels: torch.Tensor | None

    def to(self, device: torch.device) -> TaskBatch:
        tags = None if self.tag_labels is None else self.tag_labels.to(device)
        return TaskBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), tags
        )


def collate(
    data: TaskSplit,
    rows: np.ndarray,
    pad_token_id: int,
    label_ids: dict[str, int],
    tag_ids: dict[str, int] | None,
) -> TaskBatch:
    """Pad the sequences `rows` of `data` to the longest one in the batch."""
    width = max(len(data.input_ids[r]) for r in rows)
    input_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    tag_labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for b, r in enumerate(rows):
        n = len(data.input_ids[r])
        input_ids[b, :n] = data.input_ids[r]
        mask[b, :n] = 1
        if tag_ids is not None and data.tags is not None:
            word_labels = [tag_ids.get(t, IGNORE_INDEX) for t in data.tags[r]]
            tag_labels[b, :n] = first_subword_labels(data.word_ids[r], word_labels)
    labels = np.array([label_ids.get(data.labels[r], IGNORE_INDEX) for r in rows], np.int64)
    return TaskBatch(
        torch.from_numpy(input_ids),
        torch.from_numpy(mask),
        torch.from_numpy(labels),
        torch.from_numpy(tag_labels) if tag_ids is not None else None,
    )

"""A planned transfer set's batches decoded from the store by DataLoader workers, in plan order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from logit_store import SparseBatch, Store, UserError
from student_train.transfer_set import PlannedBatch


class _BatchReader(Dataset[SparseBatch | UserError]):
    """Decodes planned batches from the store; each DataLoader worker reopens the store.

    A `UserError` (a damaged store: `StoreCorruptError`) is returned, not raised: DataLoader
    would re-raise it wrapped in the worker's traceback text; `stream_batches` raises it whole.
    """

    def __init__(self, store: Store, batches: list[PlannedBatch]) -> None:
        self.store, self.batches = store, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> SparseBatch | UserError:
        planned = self.batches[i]
        try:
            return self.store[planned.corpus].batch(planned.indices)
        except UserError as err:
            return err


def _keep(item: Any) -> Any:
    return item


def stream_batches(
    store: Store, batches: list[PlannedBatch], num_workers: int = 1, prefetch: int = 4
) -> Iterator[SparseBatch]:
    """Decoded `SparseBatch`es in plan order, prefetched by `num_workers` background workers."""
    loader = DataLoader(
        _BatchReader(store, batches),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep,
        prefetch_factor=prefetch if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator(),  # worker seeds must not draw from the global (dropout) RNG
    )
    for item in loader:
        if isinstance(item, UserError):
            raise item
        yield item

"""Held-out scores of a distilled student on the store's non-transfer sequences.

For each source of the mix, up to `n` sequences whose split is *not* one the transfer set draws
from (e.g. ``test``), chosen by a fixed seed so every run of a sweep scores the same sequences:

    kd        the distillation loss against the cached targets (as trained)
    mlm_ce    cross-entropy of the original tokens at the labelled positions
    accuracy  masked-token accuracy (student argmax = original token)

all averaged over labelled positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from logit_store import Store
from student_train.losses import DistillLoss, kd_loss
from student_train.transfer_set import TransferSetSpec, source_corpora
from teacher_infer.teacher import mlm_logits_at

HELDOUT_SEED = 20250101
BATCH = 32


@torch.no_grad()
def evaluate_heldout(
    model: PreTrainedModel,
    store: Store,
    spec: TransferSetSpec,
    loss_fn: DistillLoss,
    device: torch.device,
    n: int,
) -> dict[str, dict[str, Any]]:
    """{source: {sequences, positions, kd, mlm_ce, accuracy}} for sources with held-out data."""
    was_training = model.training
    model.eval()
    scores: dict[str, dict[str, Any]] = {}
    for source, _ in spec.mix:
        sums = {"kd": 0.0, "mlm_ce": 0.0, "accuracy": 0.0}
        positions = sequences = 0
        for name in source_corpora(store, source):
            corpus = store[name]
            held = np.flatnonzero(~corpus.split_mask(spec.splits))
            rng = np.random.Generator(np.random.PCG64(HELDOUT_SEED))
            pick = np.sort(rng.permutation(held)[:n])
            for i in range(0, len(pick), BATCH):
                b = corpus.batch(pick[i : i + BATCH])
                logits = (
                    mlm_logits_at(
                        model,
                        b.teacher_input_ids.to(device),
                        b.attention_mask.to(device),
                        b.batch_index.to(device),
                        b.positions.to(device),
                        head_at_positions=True,
                    )
                    .float()
                    .cpu()
                )
                p = len(b.labels)
                sums["kd"] += float(kd_loss(logits, b.targets, loss_fn.temperature)) * p
                sums["mlm_ce"] += float(torch.nn.functional.cross_entropy(logits, b.labels)) * p
                sums["accuracy"] += float((logits.argmax(-1) == b.labels).float().sum())
                positions += p
            sequences += len(pick)
        if positions:
            scores[source] = {
                "sequences": sequences,
                "positions": positions,
                **{k: v / positions for k, v in sums.items()},
            }
    model.train(was_training)
    return scores

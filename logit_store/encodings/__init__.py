"""Sparse target encodings (DESIGN §3): one module per encoding, one protocol (`base`).

`ENCODINGS` maps each `encoding` metadata value (and `--encoding` flag value) to its settings
type; a new encoding is a new module registered here (README: "Adding a sparse encoding").
"""

from collections.abc import Mapping
from typing import Any

from logit_store.encodings.base import SparseEncoding, SparseTargets, StoredArray, empty_targets
from logit_store.encodings.sampled import Sampled, SampledTargets, sampled_targets
from logit_store.encodings.topk import (
    VALUE_DTYPES,
    TopK,
    TopKTargets,
    bucket_kl,
    log1mexp,
    topk_targets,
)
from logit_store.errors import UserError

ENCODINGS: dict[str, type[SparseEncoding]] = {TopK.name: TopK, Sampled.name: Sampled}


def encoding_from_meta(meta: Mapping[str, Any]) -> SparseEncoding:
    """The encoding named by ``meta["encoding"]``, built from its metadata keys."""
    name = meta["encoding"]
    if name not in ENCODINGS:
        raise UserError(f"encoding must be one of {tuple(ENCODINGS)}, got {name!r}")
    return ENCODINGS[name].from_meta(meta)


__all__ = [
    "ENCODINGS",
    "VALUE_DTYPES",
    "Sampled",
    "SampledTargets",
    "SparseEncoding",
    "SparseTargets",
    "StoredArray",
    "TopK",
    "TopKTargets",
    "bucket_kl",
    "empty_targets",
    "encoding_from_meta",
    "log1mexp",
    "sampled_targets",
    "topk_targets",
]

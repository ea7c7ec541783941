"""Reference decoder of a kdcache store (format 2) using only zarr and numpy (docs/FORMAT.md).

    for seq in read_corpus("cache.zarr", "task/atis"):
        seq["input_ids"], seq["positions"], seq["ids"], seq["logprobs"], seq["record"]

Tested against `logit_store.open_store` on every encoding (tests/test_format_reference.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr


def _split(values: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) else []


def read_unit(url: str, corpus: str, u: int) -> list[dict[str, Any]]:
    """The sequences of unit u of `corpus`, in record order (empty if the unit is not done)."""
    root: Any = zarr.open_group(url, mode="r")  # zarr's types are loose: read as Any
    meta, group = root.attrs["kdcache"], root[f"corpora/{corpus}"]
    info = group.attrs["kdcache_corpus"]
    lay, table_slot = info["layout"], info["table_slot"]
    done = str(group["done"][u])
    if not done:
        return []
    rec = json.loads(done)
    s, t, p = lay["unit_size"], lay["token_slot"], lay["position_slot"]
    n, n_tok, n_pos = rec["n_sequences"], rec["n_tokens"], rec["n_positions"]
    lengths = group["lengths"][u * s : u * s + n]
    counts_per_seq = group["n_positions"][u * s : u * s + n]
    records = [json.loads(str(r)) for r in group["records"][u * s : u * s + n]]
    input_ids = group["input_ids"][u * t : u * t + n_tok]
    positions = group["positions"][u * p : u * p + n_pos]
    masked_ids = group["masked_ids"][u * p : u * p + n_pos]
    gaps = group["target_ids"][u * p : u * p + n_pos].astype(np.int64)
    ranks = np.cumsum(gaps, axis=1)  # row ranks: first absolute, then gaps
    used = int(ranks.max()) + 1 if ranks.size else 0
    table = group["id_table"][u * table_slot : u * table_slot + used].astype(np.int64)
    ids = table[ranks] if ranks.size else ranks
    values = group["target_values"][u * p : u * p + n_pos]
    out: dict[str, list[np.ndarray]] = {
        "input_ids": _split(input_ids, lengths),
        "positions": _split(positions, counts_per_seq),
        "masked_ids": _split(masked_ids, counts_per_seq),
        "ids": _split(ids, counts_per_seq),
    }
    if meta["encoding"] == "topk":
        if meta["value_dtype"] == "q8":  # 0..255 -> [0, -q8_range], step q8_range / 255
            step = np.float32(meta["q8_range"] / 255.0)
            logprobs = -values.astype(np.float32) * step
        else:
            logprobs = values.astype(np.float32)
        out["logprobs"] = _split(logprobs, counts_per_seq)
        out["tail_logmass"] = _split(group["tail_logmass"][u * p : u * p + n_pos], counts_per_seq)
    else:  # sampled: columns with count 0 are padding
        out["counts"] = _split(values.astype(np.int64), counts_per_seq)
    return [{key: v[i] for key, v in out.items()} | {"record": records[i]} for i in range(n)]


def read_corpus(url: str, corpus: str) -> Iterator[dict[str, Any]]:
    """Every sequence of the done units of `corpus`, unit by unit."""
    root: Any = zarr.open_group(url, mode="r")
    n_units = root[f"corpora/{corpus}"].attrs["kdcache_corpus"]["layout"]["n_units"]
    for u in range(n_units):
        yield from read_unit(url, corpus, u)

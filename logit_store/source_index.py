"""The source index a store keeps for each corpus (written by `arrays.create_corpus_arrays`):
what a rerun, a rank or a Ray actor reads instead of indexing the corpus files again."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import zarr

from logit_store.arrays import CORPORA_GROUP, CORPUS_KEY, META_KEY, attrs_dict, open_root
from logit_store.errors import DamagedIndexError, UserError
from logit_store.meta import StoreMeta


def stored_corpus_index(
    url: str, name: str, storage_options: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The source index a store keeps for corpus `name` (its attributes and arrays), or None
    when there is no store at `url` or it has no such corpus yet."""
    try:
        root = open_root(url, "r", storage_options)
    except UserError:
        return None
    if META_KEY in root.attrs:
        StoreMeta.from_dict(attrs_dict(root, META_KEY), url)  # refuses an older format in one line
    try:
        group = root[f"{CORPORA_GROUP}/{name}"]
        if not isinstance(group, zarr.Group) or CORPUS_KEY not in group.attrs:
            return None
        attrs = attrs_dict(group, CORPUS_KEY)
    except KeyError:
        return None
    try:
        arrays = {
            key.removeprefix("index_"): np.asarray(arr[...])
            for key, arr in group.arrays()
            if key.startswith("index_")
        }
    except (KeyError, ValueError) as err:
        raise DamagedIndexError(
            f"store {url}, corpus {name!r}: its index cannot be read ({err}); run `kdcache verify`",
            str(attrs.get("source_hash", "")),
        ) from err
    index = dict(attrs.get("index", {}))
    if index:
        problem = index_problem(attrs, index, arrays)
        if problem:
            raise DamagedIndexError(
                f"store {url}, corpus {name!r}: its source index is damaged ({problem})",
                str(attrs.get("source_hash", "")),
            )
    return index, arrays


def index_problem(
    attrs: dict[str, Any], index: dict[str, Any], arrays: dict[str, np.ndarray]
) -> str | None:
    """What contradicts the corpus's identity in its stored index (a deleted chunk reads as
    zarr's fill values), or None. The unit hashes must hash to the identity's source hash; the
    units must be non-empty byte or row ranges, contiguous within each file."""
    n = int(attrs.get("n_units", -1))
    units, hashes = arrays.get("units"), arrays.get("hashes")
    if units is None or hashes is None:
        return "array 'index_units' or 'index_hashes' is missing"
    units, hashes = units.reshape(-1, 5).astype(np.int64), hashes.reshape(-1, 32)
    if len(units) != n or len(hashes) != n:
        return f"{len(units)} units and {len(hashes)} hashes for {n} units"
    digest = hashlib.sha256(np.ascontiguousarray(hashes, dtype=np.uint8).tobytes()).hexdigest()
    if digest != attrs.get("source_hash"):
        return "array 'index_hashes' does not hash to the corpus's source hash"
    file, start, stop, first_line, n_records = units.T
    same_file = file[1:] == file[:-1]
    if (
        (file < 0).any()
        or (file >= len(index.get("files", []))).any()
        or (stop <= start).any()
        or (first_line < 1).any()
        or (n_records < 1).any()
        or (start[1:][same_file] != stop[:-1][same_file]).any()
    ):
        return "array 'index_units' holds ranges no indexing pass writes"
    return None

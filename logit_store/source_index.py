"""The source index a store keeps for each corpus (written by `arrays.create_corpus_arrays`):
what a rerun, a rank or a Ray actor reads instead of indexing the corpus files again."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from logit_store.arrays import CORPORA_GROUP, CORPUS_KEY, META_KEY, attrs_dict, open_root
from logit_store.errors import StoreCorruptError, UserError
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
        StoreMeta.from_dict(attrs_dict(root, META_KEY))  # refuses an older format in one line
    try:
        group = root[f"{CORPORA_GROUP}/{name}"]
        if not isinstance(group, zarr.Group) or CORPUS_KEY not in group.attrs:
            return None
        attrs = attrs_dict(group, CORPUS_KEY)
        arrays = {
            key.removeprefix("index_"): np.asarray(arr[...])
            for key, arr in group.arrays()
            if key.startswith("index_")
        }
    except KeyError:
        return None
    except ValueError as err:
        raise StoreCorruptError(
            f"store {url}, corpus {name!r}: its index cannot be read ({err}); run `kdcache verify`"
        ) from err
    return dict(attrs.get("index", {})), arrays

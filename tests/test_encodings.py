"""What every registered sparse encoding must do (the protocol in `logit_store.encodings.base`).

Each test runs on every entry of `ENCODINGS`, so a new encoding is checked by registering it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import VOCAB, numpy_targets, synthetic_meta, zipf_logits

from logit_store import (
    ENCODINGS,
    StoreMeta,
    UserError,
    empty_targets,
    encoding_from_meta,
    target_codec,
)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_metadata_round_trip_and_validation(name: str) -> None:
    meta = synthetic_meta(name)
    encoding = meta.target_encoding
    assert type(encoding) is ENCODINGS[name] and encoding.name == name
    assert encoding_from_meta(meta.to_dict() | encoding.to_meta()) == encoding
    assert StoreMeta.from_dict(meta.to_dict(), "s.zarr").target_encoding == encoding
    assert encoding.fitted(3).width(3) <= 3 and encoding.width(VOCAB) == meta.width
    with pytest.raises(UserError, match="must be"):
        synthetic_meta(name, k=0, n_samples=0)
    with pytest.raises(UserError, match="encoding must be one of"):
        encoding_from_meta(meta.to_dict() | {"encoding": "no-such-encoding"})


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@pytest.mark.parametrize("rows", [0, 7])
def test_codec_keeps_the_distribution(name: str, rows: int) -> None:
    """Logits -> targets -> stored arrays -> targets: the stored arrays are the declared ones,
    and the distribution comes back within half a q8 step (exactly where nothing is lost)."""
    meta = synthetic_meta(name)
    encoding = meta.target_encoding
    logits = zipf_logits(rows, VOCAB, torch.Generator().manual_seed(rows))
    exact = numpy_targets(encoding.from_logits(logits, torch.Generator().manual_seed(1)))
    stored = target_codec.encode(meta, exact)
    declared = encoding.stored_arrays()
    assert set(stored) == {"target_ids", "id_table", *declared}
    for array_name, spec in declared.items():
        assert stored[array_name].dtype == spec.dtype
        assert stored[array_name].shape[1:] == ((meta.width,) if spec.per_column else ())
    ids = target_codec.ids_from_gaps(stored["target_ids"], stored["id_table"])
    decoded = encoding.decode(ids, stored)
    assert type(decoded) is type(exact) and encoding.faults(decoded) == []
    want, got = exact.distribution(VOCAB).numpy(), decoded.distribution(VOCAB).numpy()
    assert (np.abs(got - want) <= 0.033 * want + 1.2e-7).all()
    assert np.allclose(got.sum(-1), 1.0, atol=1e-2)
    empty = empty_targets(encoding, meta.width)
    assert type(empty) is type(exact) and empty.num_positions == 0

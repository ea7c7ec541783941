"""docs/reference_decoder.py (zarr + numpy only) reads what `open_store` reads, every encoding."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from synthetic import synthetic_meta, synthetic_plans, unit_data

from logit_store import create_store, open_store

DECODER = Path(__file__).resolve().parents[1] / "docs" / "reference_decoder.py"


def _decoder():
    spec = importlib.util.spec_from_file_location("reference_decoder", DECODER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("encoding", "value_dtype"), [("topk", "q8"), ("topk", "fp16"), ("sampled", "q8")]
)
def test_reference_decoder_equals_open_store(encoding: str, value_dtype: str, tmp_path) -> None:
    url = str(tmp_path / "s.zarr")
    meta = synthetic_meta(encoding, value_dtype=value_dtype)
    plans = synthetic_plans()
    writer = create_store(url, meta, [p.spec for p in plans])
    for plan in plans:
        for unit in writer.units(plan.name)[::2]:  # every other unit: gaps in the done set
            rows = plan.rows(unit)
            writer.write_unit(unit, unit_data(meta, plan, rows.start, rows.stop))
    decoder = _decoder()
    store = open_store(url)
    for name in ("generic", "task"):
        corpus = store[name]
        decoded = list(decoder.read_corpus(url, name))
        assert len(decoded) == len(corpus) > 0
        for i, seq in enumerate(decoded):
            ours = corpus[i]
            assert np.array_equal(seq["input_ids"], ours.input_ids)
            assert np.array_equal(seq["positions"], ours.positions)
            assert np.array_equal(seq["masked_ids"], ours.masked_ids)
            assert seq["record"]["text"] == ours.info.text
            assert seq["record"]["split"] == ours.info.split
            if encoding == "topk":
                assert np.array_equal(seq["ids"], ours.ids)
                assert np.allclose(seq["logprobs"], ours.logprobs, atol=1e-6)
                assert np.array_equal(seq["tail_logmass"], ours.tail_logmass)
            else:
                real = seq["counts"] > 0
                for row in range(len(real)):
                    got = dict(
                        zip(seq["ids"][row][real[row]], seq["counts"][row][real[row]], strict=True)
                    )
                    want = ours.counts[row] > 0
                    assert got == dict(
                        zip(ours.ids[row][want], ours.counts[row][want], strict=True)
                    )

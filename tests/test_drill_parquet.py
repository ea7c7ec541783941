"""Reading one unit of a Parquet corpus (found by the acceptance drill) decodes only the row
groups that hold it: it decoded every batch before the unit, so reading all units of a file was
quadratic in its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teacher_infer.corpus_index import index_source, read_unit

ROWS, GROUP, UNIT = 5000, 500, 64


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pq") / "c.parquet"
    texts = [f"sentence {i} about flights" for i in range(ROWS)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=GROUP)
    return path


def test_every_unit_reads_its_own_rows(parquet: Path) -> None:
    index = index_source(str(parquet), UNIT)
    got = [t.text for u in range(index.n_units) for t in read_unit(index, u).texts]
    assert got == [f"sentence {i} about flights" for i in range(ROWS)]


def test_a_late_unit_decodes_only_its_row_groups(
    parquet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = index_source(str(parquet), UNIT)
    decoded = []
    original = pq.ParquetFile.iter_batches

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        for batch in original(self, *args, **kwargs):
            decoded.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    unit = read_unit(index, index.n_units - 2)
    assert len(unit.texts) == UNIT
    assert sum(decoded) <= 2 * GROUP, sum(decoded)  # all rows before it: ~4900

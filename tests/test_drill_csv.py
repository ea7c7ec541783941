"""CSV corpora found by the acceptance drill.

* A 1 MB text in a CSV/TSV cell was skipped as "malformed_row: field larger than field limit
  (131072)" (the csv module's default), where the same text in a .txt or .jsonl file is kept and
  truncated to --max-length, as the README promises for long lines.
* Indexing a CSV kept one (offset, line) tuple per row: memory grew with the corpus.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from teacher_infer.corpus_index import index_source, read_unit

BIG = "boston " * 150_000  # ~1 MB


def test_a_megabyte_csv_field_is_read_not_skipped(tmp_path: Path) -> None:
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        path = tmp_path / f"c{suffix}"
        path.write_text(f'text{sep}domain\nshow me{sep}a\n{BIG}{sep}b\n"{BIG}"{sep}c\nplay{sep}d\n')
        index = index_source(str(path), 8)
        unit = read_unit(index, 0)
        assert unit.skipped == {}, unit.examples
        assert [len(t.text) for t in unit.texts] == [7, len(BIG.strip()), len(BIG.strip()), 4]


def test_indexing_a_csv_holds_one_entry_per_unit_not_per_row(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    rows = 100_000
    with path.open("w") as handle:
        handle.write("text,domain\n")
        handle.writelines(f"sentence {i} about flights,d\n" for i in range(rows))
    tracemalloc.start()
    try:
        index = index_source(str(path), 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert int(index.units[:, 4].sum()) == rows and index.n_units == -(-rows // 1024)
    assert peak < 4 * 1024 * 1024, peak  # one tuple per row was ~12 MB here
    assert (
        read_unit(index, index.n_units - 1).texts[-1].text == f"sentence {rows - 1} about flights"
    )

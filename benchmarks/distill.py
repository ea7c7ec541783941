"""Distillation throughput and memory, measured side by side in one run.

    .venv/bin/python benchmarks/distill.py [--steps 20] [--rounds 3] [--sequences 1000]
        [--workers 1] [--student tiny] [--skip-memory] [--quick]

1. cached KD (student step + sparse top-k KD loss, batches streamed from the store by a
   DataLoader worker) vs the student alone (hard-label cross-entropy on the same batches,
   pre-decoded in memory): steps/s ratio, target >= 0.90 (the sampler and the sparse loss are
   hidden behind the step).
2. cached KD vs online KD (teacher forward at every step, dense KL at the labelled positions):
   steps/s ratio, reported against the ideal 1 + t_teacher / t_student (target >= 0.9 × ideal).
3. peak memory of `run_distill` (one DataLoader worker) on a store 1× and 10× as large, same
   transfer-set size and steps, each in a fresh subprocess, twice in alternation (the smaller
   peak counts): summed PSS of the process tree (psutil) and the distill process's own peak RSS
   (wait4): target equal within 100 MB.

Teacher: a seeded random BertForMaskedLM of MiniLM's shape (6 × 384, vocab 30522); targets are
its real top-32 + tail on synthetic token sequences. Student: the `tiny` preset (2 × 128).
Modes alternate for `--rounds` rounds; the median is reported. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel

from logit_store import (
    CorpusSpec,
    SequenceInfo,
    SparseBatch,
    SparseTargets,
    StoreMeta,
    TopKTargets,
    UnitData,
    create_store,
    open_store,
)
from logit_store.encodings import topk_targets
from student_train.batch_stream import stream_batches
from student_train.configs import DistillConfig
from student_train.device import adamw
from student_train.distill import run_distill, train_step
from student_train.losses import DistillLoss, dense_kd_loss
from student_train.students import build_student
from student_train.transfer_set import TransferSetSpec, plan_transfer_set
from teacher_infer.teacher import mlm_logits_at

VOCAB, K, MASK, CLS, SEP = 30522, 32, 103, 101, 102
UNIT_SIZE = 512  # consecutive sequences per store unit


def make_teacher(folder: Path) -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    teacher = BertForMaskedLM(config).eval()
    teacher.save_pretrained(folder)
    return teacher


def write_store(url: str, n: int, teacher: BertForMaskedLM | None, teacher_id: str) -> None:
    """n synthetic sequences (16..64 tokens, 15% labelled); targets from `teacher` or random."""
    rng = np.random.default_rng(n)
    lengths = rng.integers(16, 65, size=n)
    picks = [
        np.sort(rng.choice(np.arange(1, L - 1), max(1, int(0.15 * L)), replace=False))
        for L in lengths
    ]
    meta = StoreMeta(
        teacher_id=teacher_id,
        teacher_hash="bench",
        tokenizer_id="bench",
        tokenizer_hash="bench",
        vocab_size=VOCAB,
        pad_token_id=0,
        mask_token_id=MASK,
        cls_token_id=CLS,
        sep_token_id=SEP,
        k=K,
        max_length=64,
    )
    spec = CorpusSpec(name="generic", n_units=-(-n // UNIT_SIZE), unit_size=UNIT_SIZE)
    writer = create_store(url, meta, [spec])
    for unit in writer.units("generic"):
        lo, hi = unit.index * UNIT_SIZE, min((unit.index + 1) * UNIT_SIZE, n)
        seqs = [np.r_[CLS, rng.integers(1000, VOCAB, L - 2), SEP] for L in lengths[lo:hi]]
        pos = picks[lo:hi]
        masked = [s.copy() for s in seqs]
        for m, p in zip(masked, pos, strict=True):
            m[p] = MASK
        n_pos = sum(len(p) for p in pos)
        if teacher is not None:
            targets = _teacher_targets(teacher, masked, pos)
        else:
            base = rng.integers(0, VOCAB, size=(n_pos, 1))
            ids = (base + np.arange(K) * 7) % VOCAB
            logp = np.sort(rng.normal(-8, 2, size=(n_pos, K)), axis=1)[:, ::-1].clip(max=-0.1)
            targets = TopKTargets(
                ids=ids,
                logprobs=logp.astype(np.float32),
                tail_logmass=np.full(n_pos, -0.7, dtype=np.float32),
            )
        writer.write_unit(
            unit,
            UnitData(
                input_ids=np.concatenate(seqs),
                word_ids=np.concatenate([np.r_[-1, np.arange(len(s) - 2), -1] for s in seqs]),
                lengths=lengths[lo:hi],
                positions=np.concatenate(pos),
                masked_ids=np.full(n_pos, MASK),
                n_positions=np.array([len(p) for p in pos]),
                targets=targets,
                records=[SequenceInfo(id=str(i), line=i) for i in range(lo, hi)],
            ),
        )


@torch.inference_mode()
def _teacher_targets(
    teacher: BertForMaskedLM, masked: list[np.ndarray], pos: list[np.ndarray]
) -> SparseTargets:
    parts = []
    for i in range(0, len(masked), 64):
        rows, cols = masked[i : i + 64], pos[i : i + 64]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        att = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.from_numpy(r)
            att[j, : len(r)] = 1
        b = torch.cat([torch.full((len(c),), j) for j, c in enumerate(cols)])
        p = torch.from_numpy(np.concatenate(cols))
        parts.append(topk_targets(mlm_logits_at(teacher, ids, att, b, p, True), K))
    return TopKTargets(
        ids=torch.cat([t.ids for t in parts]).numpy(),
        logprobs=torch.cat([t.logprobs for t in parts]).numpy(),
        tail_logmass=torch.cat([t.tail_logmass for t in parts]).numpy(),
    )


def timed(
    step: Callable[[SparseBatch], None],
    batches: Iterator[SparseBatch],
    n: int,
    device: torch.device,
) -> float:
    """Steps per second over n steps, after 2 warm-up steps."""
    for _ in range(2):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def throughput(
    url: str,
    teacher: BertForMaskedLM,
    steps: int,
    rounds: int,
    device: torch.device,
    workers: int,
    student_spec: str,
) -> dict:
    store = open_store(url)
    spec = TransferSetSpec(mix=(("generic", 1.0),), size=len(store["generic"]), seed=0)
    epoch = plan_transfer_set(store, spec).epoch(0, batch_tokens=2048)
    plan = (epoch * (1 + (steps + 2) // len(epoch)))[: steps + 2]
    decoded = [store["generic"].batch(b.indices) for b in plan]  # in memory, for the baselines
    student = build_student(student_spec, store.meta, seed=0)
    torch.nn.Module.to(student, device).train()
    torch.nn.Module.to(teacher, device)
    optimizer = adamw(student, 1e-4, 0.01)
    hard, kd = DistillLoss(kd_weight=0.0, alpha_mlm=1.0), DistillLoss()
    bf16 = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")

    def at_positions(model: PreTrainedModel, b: SparseBatch) -> torch.Tensor:
        return mlm_logits_at(
            model,
            b.teacher_input_ids,
            b.attention_mask,
            b.batch_index,
            b.positions,
            head_at_positions=True,
        )

    def student_ce(b: SparseBatch) -> None:
        train_step(student, b, hard, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def cached_kd(b: SparseBatch) -> None:
        train_step(student, b, kd, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def online_kd(b: SparseBatch) -> None:
        with torch.no_grad(), bf16:
            teacher_logits = at_positions(teacher, b)
        with bf16:
            student_logits = at_positions(student, b)
        dense_kd_loss(student_logits, teacher_logits).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def teacher_fwd(b: SparseBatch) -> None:
        with bf16:
            at_positions(teacher, b)

    def batches(streamed: bool) -> Iterator[SparseBatch]:
        source = stream_batches(store, plan, num_workers=workers) if streamed else iter(decoded)
        return (b.to(device, non_blocking=True) for b in source)

    modes: dict[str, tuple[Callable[[SparseBatch], None], bool]] = {
        "student_ce": (student_ce, False),
        "cached_kd": (cached_kd, True),  # the only mode that reads the store while it trains
        "online_kd": (online_kd, False),
        "teacher_fwd": (teacher_fwd, False),
    }
    runs: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for r in range(rounds):  # rotate the order so no mode always runs first
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step, streamed = modes[name]
            runs[name].append(timed(step, batches(streamed), steps, device))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ideal = 1 + med["student_ce"] / med["teacher_fwd"]  # 1 + t_teacher / t_student
    return {
        "steps_per_s": med,
        "steps_per_s_all_rounds": runs,
        "cached_over_student": med["cached_kd"] / med["student_ce"],
        "cached_over_online": med["cached_kd"] / med["online_kd"],
        "ideal_cached_over_online": ideal,
        "cached_over_online_vs_ideal": med["cached_kd"] / med["online_kd"] / ideal,
        "tokens_per_batch": float(np.mean([int(b.attention_mask.sum()) for b in decoded])),
        "positions_per_batch": float(np.mean([len(b.labels) for b in decoded])),
    }


def child_distill(url: str, out: str, steps: int, size: int) -> None:
    torch.set_num_threads(1)
    cfg = DistillConfig(
        store=url,
        out=out,
        student="tiny",
        steps=steps,
        batch_tokens=2048,
        transfer=TransferSetSpec(mix=(("generic", 1.0),), size=size, seed=0),
        num_workers=1,
        eval_sequences=0,
        checkpoint_every=10**6,
    )
    run_distill(cfg)


def peak_memory(url: str, out: str, steps: int, size: int) -> dict[str, float]:
    """Peak memory (MB) of a distill subprocess with one DataLoader worker.

    tree_pss: peak of the summed proportional set size of the process and its worker (shared
    pages counted once), sampled every 50 ms; max_rss: the kernel's peak RSS of the distill
    process itself (ru_maxrss from wait4 of that one child).
    """
    proc = psutil.Popen(
        [sys.executable, __file__, "--child", url, out, str(steps), str(size)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0, f"distill child failed ({status})"
    return {"tree_pss": peak / 2**20, "max_rss": usage.ru_maxrss / 2**10}


def memory_stage(tmp: str, small: int, steps: int) -> dict:
    """Peak memory of distill runs on a store 1x and 10x as large (same transfer set and steps).

    Run first, while this process is small: a child's ru_maxrss starts at the RSS of the parent
    it was forked from. Sizes alternate twice; the smaller peak of each counts.
    """
    large = 10 * small
    write_store(f"{tmp}/x1.zarr", small, None, "bench")
    write_store(f"{tmp}/x10.zarr", large, None, "bench")
    memory: dict[str, list[dict[str, float]]] = {"x1": [], "x10": []}
    for repeat in range(2):
        for name in ("x1", "x10"):
            run = f"{tmp}/run-{name}-{repeat}"
            memory[name].append(peak_memory(f"{tmp}/{name}.zarr", run, steps, small // 2))
    peak = {
        name: {key: min(m[key] for m in runs) for key in ("tree_pss", "max_rss")}
        for name, runs in memory.items()
    }
    return {
        "store_sequences": {"x1": small, "x10": large},
        "peak_memory_mb": peak,
        "peak_memory_mb_all": memory,
        "peak_pss_difference_mb": peak["x10"]["tree_pss"] - peak["x1"]["tree_pss"],
        "peak_rss_difference_mb": peak["x10"]["max_rss"] - peak["x1"]["max_rss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (cached KD)")
    parser.add_argument("--student", default="tiny", help="student preset (throughput)")
    parser.add_argument("--skip-memory", action="store_true", help="throughput only")
    parser.add_argument("--quick", action="store_true", help="fewer steps and sequences")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, out, steps, size = args.child
        child_distill(url, out, int(steps), int(size))
        return
    if args.quick:
        args.steps, args.rounds, args.sequences = 8, 1, 600
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_memory:
            result.update(memory_stage(tmp, args.sequences, args.steps))
        t0 = time.perf_counter()
        teacher = make_teacher(Path(tmp) / "teacher")
        write_store(f"{tmp}/kd.zarr", args.sequences, teacher, str(Path(tmp) / "teacher"))
        build_s = time.perf_counter() - t0
        result.update(
            throughput(
                f"{tmp}/kd.zarr",
                teacher,
                args.steps,
                args.rounds,
                device,
                args.workers,
                args.student,
            )
        )
    result.update(
        {
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "workers": args.workers,
            "student": args.student,
            "steps": args.steps,
            "rounds": args.rounds,
            "setup_s": build_s,
        }
    )
    print(
        f"cached KD / student-only CE steps/s: {result['cached_over_student']:.3f} (target >= 0.90)"
    )
    print(
        f"cached KD / online KD steps/s:       {result['cached_over_online']:.2f} "
        f"(ideal {result['ideal_cached_over_online']:.2f}; target >= 0.9 x ideal)"
    )
    if "peak_memory_mb" in result:
        peak = result["peak_memory_mb"]
        print(
            f"peak PSS (RSS) 1x / 10x store: {peak['x1']['tree_pss']:.0f} "
            f"({peak['x1']['max_rss']:.0f}) / {peak['x10']['tree_pss']:.0f} "
            f"({peak['x10']['max_rss']:.0f}) MB (target: within 100 MB)"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

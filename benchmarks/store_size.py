"""Bytes per labelled position and fidelity of each encoding, against a naive baseline.

    .venv/bin/python benchmarks/store_size.py [--positions 4096] [--quick]

Teacher distributions are Zipf-shaped logits (a fixed token-frequency prior over a random
permutation of the vocabulary, plus per-position Gaussian noise), scaled to span teacher
entropies from peaked to flat. Every figure is measured in this run on real zarr stores written
with `create_store` (sharding, crc32c and chunk indexes included). The naive baseline is int32
ids + fp16 log-probs in probability order, zstd level 5 over the same rows, no tail term.
Last line: a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numcodecs
import numpy as np
import torch
from zarr.core.sync import sync

from logit_store import (
    CorpusSpec,
    SampledTargets,
    SequenceInfo,
    SparseTargets,
    StoreMeta,
    TopKTargets,
    UnitData,
    create_store,
    open_store,
)
from logit_store.encodings import bucket_kl, sampled_targets, topk_targets
from logit_store.fidelity import fidelity, sort_by_id

ROWS_PER_BATCH = 256
POSITIONS_PER_SEQ = 8
SEQ_LENGTH = 16  # tokens per synthetic sequence, also the stores' max_length (tight unit slots)


def numpy_targets(t: SparseTargets) -> SparseTargets:
    return t.map(lambda x: x.numpy())


def logits_batch(vocab: int, rows: int, perm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    rank = torch.arange(1, vocab + 1, dtype=torch.float32)[perm]
    scale = torch.empty(rows, 1).uniform_(0.6, 2.2, generator=gen)  # spans entropies ~1..8 nats
    return scale * (-1.1 * torch.log(rank) + 2.0 * torch.randn(rows, vocab, generator=gen))


def store_bytes(url: str) -> int:
    store = open_store(url)
    base = store.root.store_path.path
    return sum(
        int(sync(store.root.store.getsize_prefix(f"{base}/corpora/c/{name}".lstrip("/"))))
        for name in ("target_ids", "target_values", "tail_logmass", "id_table")
        if name in store["c"].group
    )


def write(url: str, meta: StoreMeta, targets: SparseTargets) -> None:
    """All rows in one unit of sequences of SEQ_LENGTH tokens, POSITIONS_PER_SEQ labelled each."""
    n_pos = targets.num_positions
    n_seq = n_pos // POSITIONS_PER_SEQ
    writer = create_store(url, meta, [CorpusSpec(name="c", n_units=1, unit_size=n_seq)])
    (unit,) = writer.units("c")
    writer.write_unit(
        unit,
        UnitData(
            input_ids=np.full(SEQ_LENGTH * n_seq, 5),
            word_ids=np.zeros(SEQ_LENGTH * n_seq, dtype=np.int64),
            lengths=np.full(n_seq, SEQ_LENGTH),
            positions=np.tile(np.arange(POSITIONS_PER_SEQ), n_seq),
            masked_ids=np.full(n_pos, 4),
            n_positions=np.full(n_seq, POSITIONS_PER_SEQ),
            targets=targets,
            records=[SequenceInfo() for _ in range(n_seq)],
        ),
    )


def read_rate(url: str, repeats: int = 3) -> float:
    """Labelled positions per second decoded into torch tensors by Corpus.batch, one thread."""
    torch.set_num_threads(1)
    best = 0.0
    corpus = open_store(url)["c"]
    corpus.batch([0])  # open the arrays once (reads their metadata)
    for _ in range(repeats):
        corpus._cache.clear()  # decode from disk every time
        start = time.perf_counter()
        b = corpus.batch(np.arange(len(corpus)))
        best = max(best, b.targets.num_positions / (time.perf_counter() - start))
    return best


def naive_bytes(t: SparseTargets) -> int:
    assert isinstance(t, TopKTargets)
    zstd = numcodecs.Zstd(level=5)
    ids = np.ascontiguousarray(t.ids.astype(np.int32))
    values = np.ascontiguousarray(t.logprobs.astype(np.float16))
    return len(zstd.encode(ids)) + len(zstd.encode(values))


def run(vocab: int, positions: int, ks: list[int], tmp: Path) -> list[dict[str, object]]:
    gen = torch.Generator().manual_seed(vocab)
    perm = torch.randperm(vocab, generator=gen)
    batches = [
        logits_batch(vocab, ROWS_PER_BATCH, perm, gen) for _ in range(positions // ROWS_PER_BATCH)
    ]
    entropy = torch.cat(
        [-(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1) for z in batches]
    )
    results: list[dict[str, object]] = []
    base = dict(
        teacher_id="bench",
        teacher_hash="0",
        tokenizer_id="bench",
        tokenizer_hash="0",
        vocab_size=vocab,
        pad_token_id=0,
        mask_token_id=4,
        max_length=SEQ_LENGTH,
    )
    for k in ks:
        exact = [sort_by_id(topk_targets(z, k)) for z in batches]
        cat = lambda ts, f: torch.cat([getattr(t, f) for t in ts])  # noqa: E731
        exact_all = TopKTargets(
            cat(exact, "ids"),
            logprobs=cat(exact, "logprobs"),
            tail_logmass=cat(exact, "tail_logmass"),
        )
        prob_order = [topk_targets(z, k) for z in batches]
        naive = naive_bytes(
            numpy_targets(
                TopKTargets(
                    cat(prob_order, "ids"),
                    logprobs=cat(prob_order, "logprobs"),
                    tail_logmass=cat(prob_order, "tail_logmass"),
                )
            )
        )
        for value_dtype in ("q8", "fp16"):
            url = str(tmp / f"topk-{vocab}-{k}-{value_dtype}.zarr")
            meta = StoreMeta(**base, encoding="topk", k=k, value_dtype=value_dtype)  # type: ignore[arg-type]
            write(url, meta, numpy_targets(exact_all))
            batch = open_store(url)["c"].batch(np.arange(positions // POSITIONS_PER_SEQ))
            assert torch.equal(batch.batch_index, torch.arange(positions) // POSITIONS_PER_SEQ)
            stored = sort_by_id(batch.targets)
            assert isinstance(stored, TopKTargets)
            fid = [
                fidelity(
                    z,
                    TopKTargets(
                        stored.ids[i * ROWS_PER_BATCH : (i + 1) * ROWS_PER_BATCH],
                        logprobs=stored.logprobs[i * ROWS_PER_BATCH : (i + 1) * ROWS_PER_BATCH],
                        tail_logmass=stored.tail_logmass[
                            i * ROWS_PER_BATCH : (i + 1) * ROWS_PER_BATCH
                        ],
                    ),
                    exact[i],
                )
                for i, z in enumerate(batches)
            ]
            quant = bucket_kl(exact_all, stored).numpy()
            results.append(
                {
                    "vocab": vocab,
                    "encoding": "topk",
                    "k": k,
                    "values": value_dtype,
                    "bytes_per_position": round(store_bytes(url) / positions, 1),
                    "naive_bytes_per_position": round(naive / positions, 1),
                    "forward_kl_mean": round(float(np.mean([f.forward_kl.mean() for f in fid])), 4),
                    "jsd_mean": round(float(np.mean([f.jsd.mean() for f in fid])), 4),
                    "quantization_kl_mean": float(f"{quant.mean():.2e}"),
                    "quantization_kl_max": float(f"{quant.max():.2e}"),
                    "read_positions_per_s": round(read_rate(url))
                    if k == 32 and value_dtype == "q8"
                    else None,
                }
            )
            print(json.dumps(results[-1]))
    sampled = [sampled_targets(z, 50, gen) for z in batches]
    width = max(t.ids.shape[1] for t in sampled)
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
    all_s = SampledTargets(
        torch.cat([pad(t.ids) for t in sampled]),
        counts=torch.cat([pad(t.counts) for t in sampled]),
        n_samples=50,
    )
    url = str(tmp / f"sampled-{vocab}.zarr")
    write(url, StoreMeta(**base, encoding="sampled", n_samples=50), numpy_targets(all_s))  # type: ignore[arg-type]
    total = store_bytes(url)
    uniques = (all_s.counts > 0).sum(-1).float()
    buckets = {}
    for lo, hi in ((0.0, 1.0), (1.0, 2.5), (2.5, 4.0), (4.0, 6.0), (6.0, 99.0)):
        sel = (entropy >= lo) & (entropy < hi)
        if sel.sum() < 64:
            continue
        sub = SampledTargets(all_s.ids[sel], counts=all_s.counts[sel], n_samples=50)
        burl = str(tmp / f"sampled-{vocab}-{lo}.zarr")
        n = int(sel.sum()) // POSITIONS_PER_SEQ * POSITIONS_PER_SEQ
        sub = SampledTargets(sub.ids[:n], counts=sub.counts[:n], n_samples=50)
        write(burl, StoreMeta(**base, encoding="sampled", n_samples=50), numpy_targets(sub))  # type: ignore[arg-type]
        buckets[f"{lo}-{hi}"] = {
            "positions": n,
            "bytes_per_position": round(store_bytes(burl) / n, 1),
            "unique_ids_mean": round(float(uniques[sel].mean()), 1),
        }
    results.append(
        {
            "vocab": vocab,
            "encoding": "sampled",
            "N": 50,
            "bytes_per_position": round(total / positions, 1),
            "unique_ids_mean": round(float(uniques.mean()), 1),
            "by_entropy_nats": buckets,
        }
    )
    print(json.dumps(results[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="V = 30,522 only, k = 32 only")
    args = parser.parse_args()
    torch.manual_seed(0)
    vocabs = [30522] if args.quick else [30522, 250002]
    ks = [32] if args.quick else [8, 32, 50, 64]
    with tempfile.TemporaryDirectory() as tmp:
        results = [r for v in vocabs for r in run(v, args.positions, ks, Path(tmp))]
    print(json.dumps({"benchmark": "store_size", "positions": args.positions, "results": results}))


if __name__ == "__main__":
    main()

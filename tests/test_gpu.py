"""The CUDA path: bf16 teacher forward with device-side top-k/tail, and bf16 student training.

Skipped without CUDA (see conftest). Uses only models and tokenizers built in the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from teacher_fixtures import save_tiny_xlmr_mlm, write_text_corpus

from logit_store import open_store
from logit_store.encodings import sampled_targets, topk_targets
from logit_store.verify import verify_store
from student_train.configs import DistillConfig
from student_train.distill import run_distill
from student_train.runs import read_metrics
from student_train.transfer_set import TransferSetSpec
from teacher_infer.configs import PrecomputeConfig
from teacher_infer.precompute import run_precompute

pytestmark = pytest.mark.gpu


def test_device_side_topk_and_sampling_match_the_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 30522, generator=gen) * 3
    cpu = topk_targets(logits, 32)
    gpu = topk_targets(logits.cuda(), 32)
    assert gpu.ids.is_cuda and gpu.tail_logmass.is_cuda
    torch.testing.assert_close(
        gpu.map(lambda x: x.cpu()).logprobs, cpu.logprobs, atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(gpu.tail_logmass.cpu(), cpu.tail_logmass, atol=1e-4, rtol=1e-4)
    drawn = sampled_targets(logits.cuda(), 50, torch.Generator("cuda").manual_seed(0))
    assert drawn.counts.is_cuda and bool((drawn.counts.sum(-1) == 50).all())


def test_bf16_precompute_on_cuda_agrees_with_fp32_on_cpu(tmp_path: Path) -> None:
    teacher = save_tiny_xlmr_mlm(tmp_path / "teacher")
    corpus = write_text_corpus(tmp_path / "c.txt", 200)

    def run(device: str, dtype: str, name: str) -> str:
        out = str(tmp_path / name)
        run_precompute(
            PrecomputeConfig(
                teacher=str(teacher),
                corpora=(("c", str(corpus)),),
                out=out,
                max_length=64,
                unit_size=50,
                device=device,
                dtype=dtype,
                progress=False,
            )
        )
        return out

    fast, exact = run("cuda", "bf16", "gpu.zarr"), run("cpu", "fp32", "cpu.zarr")
    assert verify_store(fast) == []
    a, b = open_store(fast)["c"], open_store(exact)["c"]
    assert open_store(fast).meta.extra["dtype"] == "bfloat16"
    top1 = []
    for i in range(len(a)):
        ra, rb = a[i], b[i]
        np.testing.assert_array_equal(ra.positions, rb.positions)  # same masks on any device
        top1.extend(
            ra.ids[np.arange(len(ra.ids)), ra.logprobs.argmax(1)]
            == rb.ids[np.arange(len(rb.ids)), rb.logprobs.argmax(1)]
        )
    assert np.mean(top1) > 0.9


def test_bf16_distillation_on_cuda(tmp_path: Path) -> None:
    teacher = save_tiny_xlmr_mlm(tmp_path / "teacher")
    corpus = write_text_corpus(tmp_path / "c.txt", 200)
    store = str(tmp_path / "s.zarr")
    run_precompute(
        PrecomputeConfig(
            teacher=str(teacher),
            corpora=(("task", str(corpus)),),
            out=store,
            max_length=64,
            unit_size=50,
            device="cuda",
            progress=False,
        )
    )
    student = tmp_path / "student.json"
    student.write_text(json.dumps({"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}))
    run = run_distill(
        DistillConfig(
            store=store,
            out=str(tmp_path / "run"),
            transfer=TransferSetSpec(mix=(("task", 1.0),), size=150),
            student=str(student),
            steps=20,
            batch_tokens=1024,
            eval_sequences=8,
            num_workers=0,
            device="cuda",
        )
    )
    metrics = read_metrics(run)
    assert all(np.isfinite(v) for v in metrics["final_train"].values() if isinstance(v, float))
    assert metrics["steps"] == 20

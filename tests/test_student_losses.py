"""KD losses against dense references on seeded data (top-k with k = V equals dense KL)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from logit_store import SampledTargets, TopKTargets
from student_train.losses import (
    DistillLoss,
    dense_kd_loss,
    mlm_loss,
    sampled_kd_loss,
    topk_kd_loss,
)

P, V = 12, 50


def _logits(seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(P, V, generator=g) * scale, torch.randn(P, V, generator=g) * scale


def _topk_targets(teacher_logits: torch.Tensor, k: int) -> TopKTargets:
    """Top-k of the T = 1 teacher with its exact tail log-mass (logsumexp of the rest)."""
    logp = F.log_softmax(teacher_logits.double(), dim=-1)
    values, ids = logp.topk(k, dim=-1)
    rest = logp.scatter(1, ids, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1)
    return TopKTargets(ids=ids, logprobs=values.float(), tail_logmass=tail.float())


def _bucket_kl_reference(teacher: torch.Tensor, student: torch.Tensor, k: int) -> torch.Tensor:
    """KL over k+1 buckets computed densely in float64 by summing the masses outside top-k."""
    p = F.softmax(teacher.double(), dim=-1)
    q = F.softmax(student.double(), dim=-1)
    ids = p.topk(k, dim=-1).indices
    p_in, q_in = p.gather(1, ids), q.gather(1, ids)
    p_out, q_out = 1 - p_in.sum(1), 1 - q_in.sum(1)
    kl = (p_in * (p_in.log() - q_in.log())).sum(1) + p_out * (p_out.log() - q_out.log())
    return kl.mean()


def _dense_reference(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """torchdistill / torchtune-style dense KD: KL(softmax(t/T) ‖ softmax(s/T)) · T², float64."""
    log_q = F.log_softmax(student.double() / t, dim=-1)
    p = F.softmax(teacher.double() / t, dim=-1)
    return F.kl_div(log_q, p, reduction="batchmean") * t**2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 0.5])
def test_topk_with_k_equal_v_is_dense_kl_value_and_gradient(temperature: float) -> None:
    teacher, student = _logits(0)
    targets = _topk_targets(teacher, V)
    s1 = student.clone().requires_grad_(True)
    s2 = student.double().requires_grad_(True)
    sparse = topk_kd_loss(s1, targets, temperature)
    dense = _dense_reference(s2, teacher, temperature)
    sparse.backward()
    dense.backward()
    assert torch.isfinite(sparse)
    assert abs(sparse.item() - dense.item()) < 1e-5 * temperature**2
    assert s1.grad is not None and s2.grad is not None
    assert torch.allclose(s1.grad.double(), s2.grad, atol=1e-6)
    assert abs(dense_kd_loss(student, teacher, temperature).item() - dense.item()) < 1e-5


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("k", [1, 5, 20, V - 1])
@pytest.mark.parametrize("seed", [10, 11, 12])
def test_topk_student_equal_to_teacher_is_the_minimum(
    seed: int, k: int, temperature: float
) -> None:
    teacher, _ = _logits(seed, scale=1.0 + seed % 3 * 2.0)
    student = teacher.clone().requires_grad_(True)
    loss = topk_kd_loss(student, _topk_targets(teacher, k), temperature)
    loss.backward()
    assert student.grad is not None
    assert abs(loss.item()) < 1e-5 * temperature**2
    assert student.grad.abs().max().item() < 1e-6
    moved = teacher + 0.3 * torch.randn(P, V, generator=torch.Generator().manual_seed(seed))
    assert topk_kd_loss(moved, _topk_targets(teacher, k), temperature).item() > 1e-4


def test_topk_minimum_is_exact_when_the_tail_holds_almost_nothing() -> None:
    """Tail mass ~1e-10 at T = 1 becomes ~1e-2 of the tempered mass at T = 4: the tail's
    tempering must be exact there, not 1 - Σ top-k in float32."""
    teacher, _ = _logits(14, scale=1.0)
    teacher[:, :4] += 30.0
    targets = _topk_targets(teacher, 4)
    assert targets.tail_logmass.max().item() < -20.0
    student = teacher.clone().requires_grad_(True)
    loss = topk_kd_loss(student, targets, 4.0)
    loss.backward()
    assert student.grad is not None
    assert abs(loss.item()) < 1e-4 and student.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_tempered_topk_approaches_dense_kl_as_k_grows(temperature: float) -> None:
    teacher, student = _logits(13, scale=1.5)
    dense = _dense_reference(student, teacher, temperature).item()
    gaps = [
        abs(topk_kd_loss(student, _topk_targets(teacher, k), temperature).item() - dense)
        for k in (10, 30, 45, V)
    ]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 10 * gaps[2]
    assert gaps[-1] < 1e-5 * temperature**2


def _filled_tail_reference(
    teacher: torch.Tensor, student: torch.Tensor, k: int, t: float
) -> torch.Tensor:
    """The stated objective, densely in float64: the teacher on its top-k, its tail mass spread
    in the student's shape, then T² · KL(softmax(log p̃ / T) ‖ softmax(s / T))."""
    p = F.softmax(teacher.double(), dim=-1)
    q = F.softmax(student.double(), dim=-1)
    ids = p.topk(k, dim=-1).indices
    in_topk = torch.zeros_like(p, dtype=torch.bool).scatter(1, ids, True)
    q_tail = torch.where(in_topk, 0.0, q)
    p_tail_mass = 1 - p.gather(1, ids).sum(1, keepdim=True)
    filled = torch.where(in_topk, p, p_tail_mass * q_tail / q_tail.sum(1, keepdim=True))
    return _dense_reference(student, filled.log(), t)


def test_topk_tail_bucket_matches_dense_bucket_kl() -> None:
    teacher, student = _logits(1)
    for k in (1, 5, 20):
        loss = topk_kd_loss(student, _topk_targets(teacher, k))
        ref = _bucket_kl_reference(teacher, student, k)
        assert abs(loss.item() - ref.item()) < 1e-5, k


@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.0])
def test_tempered_topk_is_the_stated_objective(temperature: float) -> None:
    teacher, student = _logits(2)
    for k in (1, 8, 30):
        targets = _topk_targets(teacher, k)
        ref = _filled_tail_reference(teacher, student, k, temperature)
        assert abs(topk_kd_loss(student, targets, temperature).item() - ref.item()) < 1e-4, k


def test_topk_stable_when_student_holds_all_mass_in_topk() -> None:
    teacher, _ = _logits(3)
    targets = _topk_targets(teacher, 4)
    student = torch.full((P, V), -200.0)
    student.scatter_(1, targets.ids, 200.0)
    student.requires_grad_(True)
    loss = topk_kd_loss(student, targets)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 1.0  # the teacher's tail is not covered
    assert student.grad is not None and torch.isfinite(student.grad).all()


def _sampled_targets(teacher: torch.Tensor, n: int, seed: int) -> SampledTargets:
    g = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(F.softmax(teacher, -1), n, replacement=True, generator=g)
    counts = torch.zeros(P, V).scatter_add_(1, draws, torch.ones(P, n))
    m = int((counts > 0).sum(1).max())
    c, ids = counts.topk(m, dim=-1)
    ids = torch.where(c > 0, ids, torch.zeros_like(ids))
    return SampledTargets(ids=ids, counts=c, n_samples=n)


def test_sampled_with_exact_counts_is_dense_cross_entropy() -> None:
    _, student = _logits(4)
    n = 8
    g = torch.Generator().manual_seed(5)
    ids = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(P)])
    counts = torch.tensor([[4.0, 3.0, 1.0]]).expand(P, 3)
    dense_p = torch.zeros(P, V).scatter(1, ids, counts / n)
    ref = -(dense_p * F.log_softmax(student, -1)).sum(1).mean()
    targets = SampledTargets(ids=ids, counts=counts, n_samples=n)
    assert abs(sampled_kd_loss(student, targets).item() - ref.item()) < 1e-5


def test_sampled_estimator_is_unbiased_for_dense_cross_entropy() -> None:
    teacher, student = _logits(6, scale=1.0)
    dense_ce = -(F.softmax(teacher, -1) * F.log_softmax(student, -1)).sum(1).mean().item()
    estimates = torch.tensor(
        [sampled_kd_loss(student, _sampled_targets(teacher, 20, s)).item() for s in range(200)]
    )
    stderr = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - dense_ce) < 4 * stderr + 1e-4


def test_sampled_kd_gradient_matches_dense_kl_in_expectation() -> None:
    teacher, student = _logits(7, scale=1.0)
    s_dense = student.clone().requires_grad_(True)
    dense_kd_loss(s_dense, teacher).backward()
    grads = []
    for seed in range(100):
        s = student.clone().requires_grad_(True)
        sampled_kd_loss(s, _sampled_targets(teacher, 50, seed)).backward()
        assert s.grad is not None
        grads.append(s.grad)
    mean_grad = torch.stack(grads).mean(0)
    assert s_dense.grad is not None
    assert (mean_grad - s_dense.grad).abs().max().item() < 5e-3


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_sampled_student_equal_to_teacher_is_a_stationary_point(temperature: float) -> None:
    """Many positions of one teacher row, N = 20 draws each: the mean gradient of a student
    equal to the teacher is 0 within 3 standard errors (norms), a moved student's is not."""
    g = torch.Generator().manual_seed(3)
    rows, n = 4000, 20
    row = torch.randn(V, generator=g) * 3.0
    draws = torch.multinomial(F.softmax(row, -1).expand(rows, V), n, True, generator=g)
    counts = torch.zeros(rows, V).scatter_add_(1, draws, torch.ones(rows, n))
    targets = SampledTargets(torch.arange(V).expand(rows, V), counts=counts, n_samples=n)

    def row_gradients(logits: torch.Tensor) -> tuple[float, float]:
        s = logits.expand(rows, V).clone().requires_grad_(True)
        sampled_kd_loss(s, targets, temperature).backward()
        assert s.grad is not None
        per_row = s.grad * rows  # (rows, V): each position's own gradient
        mean_norm = per_row.mean(0).norm().item()
        return mean_norm, (per_row.std(0) / math.sqrt(rows)).norm().item()

    mean_norm, stderr_norm = row_gradients(row)
    assert mean_norm < 3 * stderr_norm + 1e-3
    moved_norm, _ = row_gradients(row + torch.randn(V, generator=g))
    assert moved_norm > 5 * mean_norm


def test_sampled_weights_are_unchanged_at_t1_and_linear_in_counts() -> None:
    teacher, student = _logits(9, scale=1.0)
    p = F.softmax(teacher.double(), -1).float()
    expected = SampledTargets(torch.arange(V).expand(P, V), counts=p * 50, n_samples=50)
    for temperature in (1.0, 2.0, 4.0):
        s = teacher.clone().requires_grad_(True)
        sampled_kd_loss(s, expected, temperature).backward()
        assert s.grad is not None and s.grad.abs().max().item() < 1e-6, temperature
    ref = -(p * F.log_softmax(student, -1)).sum(1).mean()
    assert abs(sampled_kd_loss(student, expected).item() - ref.item()) < 1e-5


def test_distill_loss_weights_and_hard_label_baseline() -> None:
    teacher, student = _logits(8)
    targets = _topk_targets(teacher, 5)
    labels = torch.arange(P) % V
    kd_only = DistillLoss(temperature=2.0)(student, targets, labels)
    mixed = DistillLoss(temperature=2.0, kd_weight=0.5, alpha_mlm=0.5)(student, targets, labels)
    hard = DistillLoss(kd_weight=0.0, alpha_mlm=1.0)(student, targets, labels)
    mlm = mlm_loss(student, labels)
    assert abs(kd_only.total.item() - topk_kd_loss(student, targets, 2.0).item()) < 1e-6
    assert abs(mixed.total.item() - 0.5 * (kd_only.kd.item() + mlm.item())) < 1e-5
    assert abs(hard.total.item() - mlm.item()) < 1e-6 and hard.kd.item() == 0.0
    with pytest.raises(AssertionError):
        DistillLoss(kd_weight=0.0, alpha_mlm=0.0)

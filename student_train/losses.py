"""Knowledge-distillation losses on cached sparse teacher targets.

Every loss works on *flattened labelled positions*: the student's logits gathered at
``(batch_index, positions)`` of a `SparseBatch`, shape (P, V), with the matching
`SparseTargets` (P rows). The LM head is only ever run at those P positions.

Notation: z (P, V) student logits, T the temperature, q_T = softmax(z / T) the student,
p the teacher at T = 1 (stored), p_T its tempered version. All losses are means over P.

Top-k targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
with the tail bucket of DESIGN §3). The teacher is known on k+1 buckets: its top-k ids S and
the tail (everything else) with stored log-mass ``tail_logmass`` = log(1 - Σ_{i∈S} p_i)::

    ℓ_i    = logprobs_i / T                 i ∈ S          (stored T = 1 log-probs)
    ℓ_tail = tail_logmass / T
    log p̂_b = ℓ_b - logsumexp(ℓ_1..ℓ_k, ℓ_tail)             b ∈ S ∪ {tail}
    log q̂_i = log q_T(i)                                     i ∈ S
    log q̂_tail = log(1 - Σ_{i∈S} q_T(i)) = log1mexp(logsumexp_{i∈S} log q_T(i))
    L_topk = T² · Σ_b p̂_b (log p̂_b - log q̂_b)

Temperature treatment, exactly: dividing the stored log-probs by T and renormalising over the
k+1 buckets is *exact* for the relative probabilities inside the top-k (p_T(i)/p_T(j) =
(p_i/p_j)^{1/T}) and treats the tail as one pseudo-token of mass Σ_tail p. For T > 1 that
under-weights the tail (Σ p_j^{1/T} ≥ (Σ p_j)^{1/T}); for T = 1 it is exact, and with k = V
(empty tail, tail_logmass = -inf) L_topk equals the dense tempered KL. Renormalising at T = 1
also absorbs the small sum error of quantised (q8/fp16) stored values. The T² factor keeps the
gradient scale independent of T (Hinton et al. 2015, §2).

Sampled targets ("Sparse logit sampling: accelerating knowledge distillation in LLMs",
Anshumali et al. 2025): N draws from p stored as unique ids j with counts c_j::

    w_j = c_j / N                            (T = 1: E[w_j] = p_j, unbiased)
    w_j ∝ (c_j / N)^{1/T}, Σ w_j = 1         (T ≠ 1: plug-in estimate of p_T, consistent in N)
    L_sampled = -T² · Σ_j w_j log q_T(j)

At T = 1, E[L_sampled] is the dense cross-entropy H(p, q) = KL(p‖q) + H(p): same gradient as
the dense KL, offset by the teacher's entropy (a constant).

Hard MLM loss: L_mlm = -log softmax(z)_{y} at each labelled position, y the original token.
The total is ``kd_weight · L_kd + alpha_mlm · L_mlm``; ``kd_weight = 0, alpha_mlm = 1`` is the
no-distillation baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from logit_store.records import SparseTargets
from logit_store.sparsify import log1mexp


def student_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(z / T) in float32, (P, V); no extra (P, V) pass for the division at T = 1."""
    z = logits.float()
    return F.log_softmax(z if temperature == 1.0 else z / temperature, dim=-1)


def tempered_teacher(
    logprobs: torch.Tensor, tail_logmass: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probs over the k+1 buckets at temperature T: ((P, k), (P,)), renormalised."""
    scaled = torch.cat([logprobs.float(), tail_logmass.float()[:, None]], dim=1) / temperature
    buckets = scaled - torch.logsumexp(scaled, dim=1, keepdim=True)
    return buckets[:, :-1], buckets[:, -1]


def student_tail_logmass(student_topk_logprobs: torch.Tensor) -> torch.Tensor:
    """log(1 - Σ_{i∈S} q(i)) from (P, k) student log-probs at the teacher's top-k ids → (P,).

    log Σ q is clamped to ≤ -(float32 eps): when the student holds all but
    < 1e-7 of its mass inside S, float32 cannot resolve the remainder anyway.
    """
    inside = torch.logsumexp(student_topk_logprobs, dim=1)
    return log1mexp(inside.clamp(max=-torch.finfo(torch.float32).eps))


def topk_kd_loss(
    student_logits: torch.Tensor, targets: SparseTargets, temperature: float = 1.0
) -> torch.Tensor:
    """L_topk (module docstring): forward KL over top-k + tail buckets, × T², mean over P."""
    log_q = student_log_probs(student_logits, temperature)  # (P, V)
    log_q_topk = log_q.gather(1, targets.ids)  # (P, k)
    log_p_topk, log_p_tail = tempered_teacher(targets.logprobs, targets.tail_logmass, temperature)
    inside = (log_p_topk.exp() * (log_p_topk - log_q_topk)).sum(dim=1)
    # The tail term is 0 where the teacher's tail is empty (k = V); the double `where` keeps
    # log1mexp(0) = -inf out of both the value and its gradient.
    has_tail = log_p_tail > -80.0
    safe_topk = torch.where(has_tail[:, None], log_q_topk, log_q_topk.new_full((), -30.0))
    log_q_tail = student_tail_logmass(safe_topk)
    p_tail = torch.where(has_tail, log_p_tail, log_p_tail.new_zeros(())).exp()
    tail = torch.where(has_tail, p_tail * (log_p_tail - log_q_tail), log_p_tail.new_zeros(()))
    return (inside + tail).mean() * temperature**2


def sampled_kd_loss(
    student_logits: torch.Tensor, targets: SparseTargets, temperature: float = 1.0
) -> torch.Tensor:
    """L_sampled (module docstring): count-weighted cross-entropy, × T², mean over P."""
    log_q = student_log_probs(student_logits, temperature)
    weights = targets.counts.float() / float(targets.n_samples)  # (P, m); padding columns are 0
    if temperature != 1.0:
        weights = weights.pow(1.0 / temperature)
        weights = weights / weights.sum(dim=1, keepdim=True)
    return -(weights * log_q.gather(1, targets.ids)).sum(dim=1).mean() * temperature**2


def kd_loss(
    student_logits: torch.Tensor, targets: SparseTargets, temperature: float = 1.0
) -> torch.Tensor:
    """Dispatch on the stored encoding: `topk_kd_loss` or `sampled_kd_loss`."""
    if targets.encoding == "topk":
        return topk_kd_loss(student_logits, targets, temperature)
    return sampled_kd_loss(student_logits, targets, temperature)


def dense_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Dense reference and online-KD loss: T² · KL(p_T ‖ q_T), both (P, V), mean over P."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (
        F.kl_div(log_q, log_p, log_target=True, reduction="sum") / log_p.shape[0] * (temperature**2)
    )


def mlm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_mlm: cross-entropy of the original tokens (P,) under the student at T = 1."""
    return F.cross_entropy(student_logits.float(), labels)


@dataclass(frozen=True)
class LossParts:
    """The weighted total (for backward) and its detached parts (logged without a device sync)."""

    total: torch.Tensor
    kd: torch.Tensor
    mlm: torch.Tensor


@dataclass(frozen=True)
class DistillLoss:
    """kd_weight · L_kd(T) + alpha_mlm · L_mlm over the labelled positions of one batch."""

    temperature: float = 1.0
    kd_weight: float = 1.0
    alpha_mlm: float = 0.0

    def __post_init__(self) -> None:
        assert self.temperature > 0, "temperature must be > 0"
        assert self.kd_weight >= 0 and self.alpha_mlm >= 0, "loss weights must be ≥ 0"
        assert self.kd_weight + self.alpha_mlm > 0, "at least one loss weight must be > 0"

    def __call__(
        self, student_logits: torch.Tensor, targets: SparseTargets, labels: torch.Tensor
    ) -> LossParts:
        total = student_logits.new_zeros((), dtype=torch.float32)
        kd = mlm = total
        if self.kd_weight > 0:
            kd_term = kd_loss(student_logits, targets, self.temperature)
            total = total + self.kd_weight * kd_term
            kd = kd_term.detach()
        if self.alpha_mlm > 0:
            mlm_term = mlm_loss(student_logits, labels)
            total = total + self.alpha_mlm * mlm_term
            mlm = mlm_term.detach()
        return LossParts(total=total, kd=kd, mlm=mlm)

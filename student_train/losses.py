"""Knowledge-distillation losses on cached sparse teacher targets.

Every loss works on *flattened labelled positions*: the student's logits gathered at
``(batch_index, positions)`` of a `SparseBatch`, shape (P, V), with the matching
`SparseTargets` (P rows). The LM head is only ever run at those P positions.

Notation: z (P, V) student logits, T the temperature, q_T = softmax(z / T) the student,
p the teacher at T = 1 (stored), p_T its tempered version. All losses are means over P.

Top-k targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
with the tail bucket of DESIGN §3). The store knows the teacher at T = 1 on its top-k ids S
(``logprobs``) and the total mass of the tail R = V \\ S (``tail_logmass`` = log p_R), not the
tail's shape, and p_T(i) = p_i^{1/T} / Σ_j p_j^{1/T} needs Σ_{j∈R} p_j^{1/T}. The tail is filled
with the *student's* shape there: r(j) = q(j) / q(R) for j ∈ R, q = softmax(z) at T = 1, taken
as a constant (stop-gradient, like every target). The objective is exactly::

    p̃(i) = p_i  (i ∈ S),   p̃(j) = p_R · sg[r(j)]  (j ∈ R)        a distribution over V
    L_topk = T² · KL(softmax(log p̃ / T) ‖ q_T)

Inside R the tempered p̃ and q_T have the same shape (both ∝ q(j)^{1/T}), so the KL is exactly
the KL over the k+1 buckets S ∪ {R}, computed without a (P, V) target::

    ℓ_i    = logprobs_i / T                                        i ∈ S
    ℓ_R    = tail_logmass / T + sg[log Σ_{j∈R} r(j)^{1/T}]
           = tail_logmass / T + sg[logsumexp_{j∈R}(z_j / T) - logsumexp_{j∈R}(z_j) / T]
    log p̂_b = ℓ_b - logsumexp(ℓ_1..ℓ_k, ℓ_R)                        b ∈ S ∪ {R}
    log q̂_i = log q_T(i),   log q̂_R = log(1 - Σ_{i∈S} q_T(i))
    L_topk = T² · Σ_b p̂_b (log p̂_b - log q̂_b)

Properties (tested): the minimum L_topk = 0, with gradient 0, is reached by every student with
q(i) = p_i on S (the store says nothing about the tail's shape), so a student equal to the
teacher is a minimum at every T; at T = 1 the correction is 0 and L_topk is the plain bucket
KL; with k = V it is the dense tempered KL, and as k → V it approaches it. Without the
correction (the tail tempered as one pseudo-token) a student equal to the teacher would be
pushed away from it at T ≠ 1, since Σ_{j∈R} p_j^{1/T} ≠ p_R^{1/T}. Renormalising over the k+1
buckets absorbs the small sum error of quantised (q8/fp16) stored values. The T² factor keeps
the gradient scale independent of T (Hinton et al. 2015, §2).

Sampled targets ("Sparse logit sampling: accelerating knowledge distillation in LLMs",
Anshumali et al. 2025): N draws from p at T = 1, stored as unique ids j with counts c_j. The
tempering factor p_j^{1/T - 1} / Σ p^{1/T} is unknown, and is taken from the student, as the
top-k tail's shape is (an importance weight, stop-gradient)::

    w_j = (c_j / N) · sg[q_T(j) / q(j)]          (T = 1: w_j = c_j / N)
    L_sampled = -T² · Σ_j w_j log q_T(j)

Over the draws, E[w_j] = p_j · q_T(j) / q(j). At T = 1 that is p, and E[L_sampled] is the dense
cross-entropy H(p, q) = KL(p‖q) + H(p) (same gradient as the dense KL). At any T, E[w] = p_T
when the student equals the teacher, so the expected gradient T · (Σ_j E[w_j] · q_T - E[w])
is 0 there, and only there (it vanishes iff p / q is constant). The value is a cross-entropy,
not a KL: at that point it is T² · H(p_T), not 0. The weights are linear in the counts, so
the gradient estimate is unbiased at that point (normalising w per position would bias it).

Hard MLM loss: L_mlm = -log softmax(z)_{y} at each labelled position, y the original token.
The total is ``kd_weight · L_kd + alpha_mlm · L_mlm``; ``kd_weight = 0, alpha_mlm = 1`` is the
no-distillation baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from logit_store import SampledTargets, SparseTargets, TopKTargets, log1mexp


def student_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(z / T) in float32, (P, V); no extra (P, V) pass for the division at T = 1."""
    z = logits.float()
    return F.log_softmax(z if temperature == 1.0 else z / temperature, dim=-1)


def tail_tempering(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """sg[log Σ_{j∈R} r(j)^{1/T}] (module docstring): (P, V) student logits, (P, k) ids → (P,).

    Exact (even when the student's tail mass is < 1e-7) on one no-grad copy of the logits with
    the top-k ids masked out, shifted by its row max m, which cancels:
    log Σ_R e^{(z-m)/T} - (1/T) log Σ_R e^{z-m}. Not finite where R is empty (k = V).
    """
    with torch.no_grad():
        rest = logits.float().scatter(1, ids, float("-inf"))
        rest.sub_(rest.amax(dim=1, keepdim=True))
        at_one = rest.exp().sum(dim=1).log()
        rest.div_(temperature)
        return rest.exp().sum(dim=1).log() - at_one / temperature


def tempered_teacher(
    logprobs: torch.Tensor, tail_logmass: torch.Tensor, tail_shift: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probs log p̂ over the k+1 buckets at temperature T: ((P, k), (P,)).

    ``tail_shift`` (P,) is `tail_tempering` (0 at T = 1); rows with an empty tail keep -inf.
    """
    tail = tail_logmass.float() / temperature + torch.where(
        torch.isfinite(tail_shift), tail_shift, tail_shift.new_zeros(())
    )
    scaled = torch.cat([logprobs.float() / temperature, tail[:, None]], dim=1)
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
    student_logits: torch.Tensor, targets: TopKTargets, temperature: float = 1.0
) -> torch.Tensor:
    """L_topk (module docstring): T² · KL over the top-k + tail buckets, the teacher's tail
    tempered with the student's tail shape; mean over P."""
    log_q = student_log_probs(student_logits, temperature)  # (P, V)
    log_q_topk = log_q.gather(1, targets.ids)  # (P, k)
    shift = (
        torch.zeros_like(targets.tail_logmass, dtype=torch.float32)
        if temperature == 1.0
        else tail_tempering(student_logits, targets.ids, temperature)
    )
    log_p_topk, log_p_tail = tempered_teacher(
        targets.logprobs, targets.tail_logmass, shift, temperature
    )
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
    student_logits: torch.Tensor, targets: SampledTargets, temperature: float = 1.0
) -> torch.Tensor:
    """L_sampled (module docstring): T² · count-weighted cross-entropy, the counts reweighted
    by the student's tempering ratio q_T / q at T ≠ 1; mean over P."""
    log_q = student_log_probs(student_logits, temperature)  # (P, V)
    log_q_ids = log_q.gather(1, targets.ids)  # (P, m)
    weights = targets.counts.float() / float(targets.n_samples)  # (P, m); padding columns are 0
    if temperature != 1.0:
        with torch.no_grad():
            z = student_logits.float()
            log_q1_ids = z.gather(1, targets.ids) - torch.logsumexp(z, dim=1, keepdim=True)
            weights = weights * (log_q_ids - log_q1_ids).exp()
    return -(weights * log_q_ids).sum(dim=1).mean() * temperature**2


def kd_loss(
    student_logits: torch.Tensor, targets: SparseTargets, temperature: float = 1.0
) -> torch.Tensor:
    """The KD loss of the targets' encoding: `topk_kd_loss` or `sampled_kd_loss`."""
    match targets:
        case TopKTargets():
            return topk_kd_loss(student_logits, targets, temperature)
        case SampledTargets():
            return sampled_kd_loss(student_logits, targets, temperature)
    raise AssertionError(f"no KD loss for {type(targets).__name__}")


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

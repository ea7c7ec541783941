"""Supporting distribution metrics of a task sample X (n, d) against another sample Y (m, d).

Each function returns a table (R+1, 1+G): row 0 the point estimate, rows 1.. bootstrap replicates
that resample the rows of X (Y held fixed); column 0 is all of X, column 1+g the rows of group g.
Per replicate a group is a weight vector w over X's rows (bootstrap multiplicities × membership).

* centroid cosine  cos(Σ w_i x_i, ȳ)
* Fréchet distance ‖μ_x − μ_y‖² + tr Σ_x + tr Σ_y − 2 tr (Σ_y^{½} Σ_x Σ_y^{½})^{½}
  (Heusel et al. 2017); fewer than 10·d rows of X make Σ_x rank-deficient: flagged unreliable.
* MMD² (biased V-statistic, Gretton et al. 2012) with the Gaussian kernel
  k(a, b) = exp(−‖a − b‖² / h), h = median pairwise squared distance of X ∪ Y (median heuristic):
  MMD² = wᵀK_xx w / (Σw)² − 2 wᵀK_xy 1 / (Σw·m) + 1ᵀK_yy 1 / m².
* classifier AUC: an L2-regularised logistic regression (numpy, scipy L-BFGS) separating X from Y,
  cross-fitted over FOLDS folds so every score is held out; AUC = mean_i u_i with
  u_i = P(score(y) < score(x_i)) + ½ P(tie) — 0.5 when X and Y are indistinguishable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit

from similarity.sampling import weighted_group_means

FOLDS = 2
L2 = 1e-3
FRECHET_REPLICATES = 20
"""Fréchet needs an eigendecomposition per replicate: its intervals use at most this many."""
MMD_ROWS = 2_000
"""MMD uses the first (randomly ordered) rows of each side: its kernel matrices are quadratic."""
MEDIAN_PROBE = 1_000
"""Rows per side used to estimate the median-heuristic bandwidth."""


def group_weights(idx: np.ndarray, groups: np.ndarray, n_groups: int, n: int) -> np.ndarray:
    """(1+G, n) bootstrap multiplicities of X's rows: all rows, then each group's rows."""
    counts = np.bincount(idx, minlength=n).astype(np.float64)
    members = np.zeros((1 + n_groups, n))
    members[0] = 1.0
    members[1 + groups, np.arange(n)] = 1.0
    return members * counts


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def centroid_cosine(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int, indices: list[np.ndarray]
) -> np.ndarray:
    y_mean = y.mean(axis=0, dtype=np.float64)
    y_mean /= np.linalg.norm(y_mean) + 1e-12
    weights = np.concatenate([group_weights(idx, groups, n_groups, len(x)) for idx in indices])
    sums = (weights.astype(np.float32) @ x).astype(np.float64)
    values = _safe_ratio(sums @ y_mean, np.linalg.norm(sums, axis=1))
    return values.reshape(len(indices), 1 + n_groups)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: for d ≈ 400 matrices more threads only contend (badly so on a
    shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _frechet_one(
    w: torch.Tensor,
    x: torch.Tensor,
    x_sq: torch.Tensor,
    x_proj: torch.Tensor,
    y_mean: torch.Tensor,
    y_trace: float,
) -> float:
    """Fréchet distance of the w-weighted rows of x (float64) to N(y_mean, Σ_y);
    x_proj = x Σ_y^½ (float32), x_sq = ‖x_i‖².

    tr (Σ_y^½ Σ_x Σ_y^½)^½ = Σ √eig(Σ_y^½ Σ_x Σ_y^½), that matrix formed as (x_proj)ᵀ D x_proj
    minus the weighted mean, or via the n×n Gram matrix when a group has fewer rows than d.
    """
    rows = torch.nonzero(w).squeeze(1)
    total = float(w.sum())
    if total < 2:
        return float("nan")
    mu = w @ x / total
    trace_x = float((w @ x_sq - total * mu @ mu) / (total - 1))
    proj, weight = x_proj[rows], w[rows].float()[:, None]
    mu_proj = (weight * proj).sum(dim=0).double() / total
    if len(rows) < x.shape[1]:
        centred = (proj - mu_proj.float()) * torch.sqrt(weight / (total - 1))
        inner = (centred @ centred.T).double()
    else:
        second = ((proj * weight).T @ proj).double()
        inner = (second - total * torch.outer(mu_proj, mu_proj)) / (total - 1)
    trace_sqrt = float(torch.linalg.eigvalsh(inner).clamp_min(0.0).sqrt().sum())
    return float(((mu - y_mean) ** 2).sum()) + trace_x + y_trace - 2.0 * trace_sqrt


def frechet(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int, indices: list[np.ndarray]
) -> np.ndarray:
    """Point estimates for every column; intervals only where the column has >= 10·d rows."""
    reliable = group_weights(indices[0], groups, n_groups, len(x)).sum(axis=1) >= 10 * x.shape[1]
    table = np.full((len(indices), 1 + n_groups), np.nan)
    with _one_thread():
        x64, y64 = torch.from_numpy(x).double(), torch.from_numpy(y).double()
        y_mean = y64.mean(dim=0)
        y_cov = torch.cov(y64.T)
        vals, vecs = torch.linalg.eigh(y_cov)
        x_proj = (x64 @ ((vecs * vals.clamp_min(0.0).sqrt()) @ vecs.T)).float()
        x_sq = (x64**2).sum(dim=1)
        y_trace = float(torch.trace(y_cov))
        for r, idx in enumerate(indices[: FRECHET_REPLICATES + 1]):
            weights = torch.from_numpy(group_weights(idx, groups, n_groups, len(x)))
            for col in np.flatnonzero(reliable | (r == 0)):
                table[r, col] = _frechet_one(weights[col], x64, x_sq, x_proj, y_mean, y_trace)
    return table


def mmd2(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int, indices: list[np.ndarray]
) -> np.ndarray:
    x, y, groups = x[:MMD_ROWS], y[:MMD_ROWS], groups[:MMD_ROWS]
    indices = [idx[idx < len(x)] for idx in indices]
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    probe = torch.cat([xt[:MEDIAN_PROBE], yt[:MEDIAN_PROBE]])
    probe_sq = (2.0 - 2.0 * probe @ probe.T).clamp_min(0.0)
    off_diagonal = ~torch.eye(len(probe), dtype=torch.bool)
    bandwidth = float(probe_sq[off_diagonal].median()) or 1.0

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(2.0 - 2.0 * a @ b.T).clamp_min(0.0) / bandwidth)

    k_xx = kernel(xt, xt)
    k_xy_rows = kernel(xt, yt).double().mean(dim=1)
    k_yy = float(kernel(yt, yt).double().mean())
    rows = []
    for start in range(0, len(indices), 50):
        chunk = indices[start : start + 50]
        w = np.concatenate([group_weights(idx, groups, n_groups, len(x)) for idx in chunk])
        weights = torch.from_numpy(w)
        total = weights.sum(dim=1)
        quad = ((weights.float() @ k_xx).double() * weights).sum(dim=1) / total**2
        value = torch.where(total > 0, quad - 2.0 * (weights @ k_xy_rows) / total + k_yy, torch.nan)
        rows.append(value.reshape(len(chunk), 1 + n_groups).numpy())
    return np.concatenate(rows)


def _fit_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Held-out logits of a class-balanced, L2-regularised logistic regression (L-BFGS)."""
    balance = np.where(train_y > 0, 0.5 / train_y.mean(), 0.5 / (1.0 - train_y.mean())) / len(
        train_y
    )
    sign = 2.0 * train_y - 1.0

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (train_x @ params[:-1] + params[-1])
        loss = float(balance @ np.logaddexp(0.0, -margin)) + L2 * float(params[:-1] @ params[:-1])
        dmargin = -balance * sign * expit(-margin)
        grad = np.concatenate([train_x.T @ dmargin + 2.0 * L2 * params[:-1], [dmargin.sum()]])
        return loss, grad

    start = np.zeros(train_x.shape[1] + 1)
    params = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", options={"maxiter": 200}).x
    return test_x @ params[:-1] + params[-1]


def classifier_auc(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    indices: list[np.ndarray],
    seed: int,
) -> np.ndarray:
    features = np.concatenate([x, y]).astype(np.float64)
    labels = np.concatenate([np.ones(len(x)), np.zeros(len(y))])
    folds = np.random.default_rng(seed).permutation(len(features)) % FOLDS
    scores = np.empty(len(features))
    for fold in range(FOLDS):
        test = folds == fold
        scores[test] = _fit_scores(features[~test], labels[~test], features[test])
    task_scores, other_scores = scores[: len(x)], np.sort(scores[len(x) :])
    below = np.searchsorted(other_scores, task_scores, side="left")
    ties = np.searchsorted(other_scores, task_scores, side="right") - below
    u = (below + 0.5 * ties) / len(other_scores)
    counts = (np.bincount(idx, minlength=len(x)).astype(np.float64) for idx in indices)
    return np.array([weighted_group_means(u, c, groups, n_groups) for c in counts])

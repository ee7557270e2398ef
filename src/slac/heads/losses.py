"""The losses of the paper, as pure functions with named parts (Sec. 3, Eqs. 4-9).

- `classification_loss`: L_c, Eq. 5: cross-entropy of the logits, batch mean.
- `reduce_likelihood`: L_nll, Eq. 4 (corrected): the per-sample negative log joint density
  -log[f_y(x) p(y)] reduced over the batch, by default with a **mean** (the paper writes a sum over
  the N samples; a mean keeps lambda independent of the batch size: lambda_sum = lambda_mean / N).
- `skewness_cosine`, `location_mahalanobis`, `angle_target`, `angle_constraint`: the angle-based
  constraint L_ac, Eqs. 6-8.
- `HeadLoss`: the objective of Eq. 9, L = L_c + lambda L_nll + beta L_ac, keeping each part by name.

Every head returns a `HeadLoss`; its `parts` are the *unweighted* terms and its `weights` the factors
they enter `total` with, so that `total == sum(weights[name] * parts[name])`. A part whose weight is 0
is still reported but does not enter `total` (the SL head computes its angle constraint without
gradient, only for logging).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LIKELIHOOD_REDUCTIONS",
    "HeadLoss",
    "angle_constraint",
    "angle_target",
    "check_weight",
    "classification_loss",
    "location_mahalanobis",
    "reduce_likelihood",
    "skewness_cosine",
]

LIKELIHOOD_REDUCTIONS = ("mean", "sum")

#: Norm below which a skewness vector is divided by COSINE_EPS instead of its norm in Eq. 6: the cosine
#: has no limit at gamma = 0, this makes it go to 0 continuously there with a gradient bounded by
#: about 1 / COSINE_EPS. Skewness norms in training are many orders of magnitude larger.
COSINE_EPS = 1e-6


@dataclass(frozen=True)
class HeadLoss:
    """The objective of a head and its named parts (paper Eq. 9).

    total: the scalar to minimize, sum(weights[name] * parts[name]).
    parts: unweighted scalar terms, e.g. {"classification": L_c, "likelihood": L_nll, "angle": L_ac}.
    weights: the factor of each part in `total` (1 for classification, lambda, beta).
    """

    total: Tensor
    parts: dict[str, Tensor]
    weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def combine(cls, parts: dict[str, Tensor], weights: dict[str, float]) -> HeadLoss:
        """Build total = sum(weights[name] * parts[name]); parts with weight 0 do not enter the total."""
        if set(parts) != set(weights):
            raise ValueError(f"parts {sorted(parts)} and weights {sorted(weights)} must name the same terms")
        terms = [weights[name] * value for name, value in parts.items() if weights[name] != 0.0]
        total = torch.stack(terms).sum() if terms else next(iter(parts.values())) * 0.0
        return cls(total=total, parts=dict(parts), weights=dict(weights))

    def weighted(self) -> dict[str, Tensor]:
        """The terms as they enter `total`: weights[name] * parts[name]."""
        return {name: self.weights[name] * value for name, value in self.parts.items()}

    def to_floats(self) -> dict[str, float]:
        """{"total": ..., **parts} as Python floats, for logging (synchronizes with the device)."""
        values = {"total": self.total, **self.parts}
        return {name: float(value.detach()) for name, value in values.items()}


def check_weight(name: str, value: float) -> float:
    """Validate a loss weight (lambda, beta, ...): a finite number >= 0. Returns it as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def classification_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """L_c (Eq. 5): -1/N sum_i log softmax(logits_i)[y_i]; with logits_k = log f_k(x) + log p(k) this
    is -log p(y|x) by Bayes' theorem."""
    return F.cross_entropy(logits, targets)


def reduce_likelihood(negative_log_likelihood: Tensor, reduction: str = "mean") -> Tensor:
    """Reduce per-sample negative log-likelihoods (N,) for L_nll (Eq. 4): "mean" (default) or "sum"."""
    if reduction == "mean":
        return negative_log_likelihood.mean()
    if reduction == "sum":
        return negative_log_likelihood.sum()
    raise ValueError(f"likelihood_reduction must be one of {LIKELIHOOD_REDUCTIONS}, got {reduction!r}")


def skewness_cosine(skewness: Tensor) -> Tensor:
    """D_gamma (Eq. 6): the (K, K) cosine similarities cos(gamma_m, gamma_n).

    gamma_m / max(|gamma_m|, COSINE_EPS) is the unit vector. At the initialization gamma = 0 every
    cosine, the diagonal included, is 0 and so is the gradient: the constraint cannot move gamma away
    from 0 by itself; the classification and likelihood terms do (their gradient in gamma_k is a
    weighted sum of Sigma_k^-1 (x - mu_k)), after which the constraint acts. The gradient of a cosine
    scales like 1 / |gamma_m|, so it is strong while the skewness is small.
    """
    unit = F.normalize(skewness, dim=-1, eps=COSINE_EPS)  # (K, d)
    return unit @ unit.T


def location_mahalanobis(loc: Tensor, log_cov_diag: Tensor) -> Tensor:
    """D_mu (Eq. 7): D_mu[m, n] = (mu_m - mu_n)^T Sigma_n^-1 (mu_m - mu_n), shape (K, K).

    Not symmetric: the covariance is the one of the column class n. Evaluated with three GEMMs,
    sum_j mu_mj^2 / S_nj - 2 mu_mj mu_nj / S_nj + mu_nj^2 / S_nj, in O(K^2 + K d) memory (the (K, K, d)
    differences would be 2e9 elements at K = 1000, d = 2048). The expansion's rounding error,
    about eps * (|mu_m|^2 + |mu_n|^2) / Sigma, is harmless here: D_mu only enters the angle target
    through D_mu / max(D_mu), with no square root; negative round-offs are clamped to 0 and the
    diagonal is set to exactly 0.
    """
    precision = torch.exp(-log_cov_diag)  # (K, d)  Sigma_n^-1
    cross = loc @ (loc * precision).T  # (K, K)  sum_j mu_mj mu_nj / S_nj
    row_squares = loc.square() @ precision.T  # (K, K)  sum_j mu_mj^2 / S_nj
    column_squares = (loc.square() * precision).sum(-1)  # (K,)  sum_j mu_nj^2 / S_nj
    distances = (row_squares - 2.0 * cross + column_squares[None, :]).clamp_min(0.0)
    return distances * (1.0 - torch.eye(loc.shape[0], dtype=loc.dtype, device=loc.device))


def angle_target(loc: Tensor, log_cov_diag: Tensor) -> Tensor:
    """The adaptive target of Eq. 8: (max_n D_mu[m, :] - 2 D_mu[m, n]) / max_n D_mu[m, :], shape (K, K).

    Written as 1 - 2 D_mu[m, n] / max_n D_mu[m, :], the same value, which stays defined when every
    location of a row coincides (max = 0): the row is then all ones. 1 on the diagonal, -1 at each
    row's farthest class, decreasing linearly in D_mu.
    """
    distances = location_mahalanobis(loc, log_cov_diag)
    row_max = distances.amax(dim=1, keepdim=True).clamp_min(torch.finfo(distances.dtype).tiny)
    return 1.0 - 2.0 * distances / row_max


def angle_constraint(
    loc: Tensor,
    log_cov_diag: Tensor,
    skewness: Tensor,
    *,
    target_grad: bool = False,
) -> Tensor:
    """L_ac (Eq. 8): 1/K^2 sum_{m,n} (D_gamma[m, n] - target[m, n])^2, the diagonal included.

    target_grad: whether the target passes gradients to the locations and covariances. The paper does
    not say. Default False: the target is treated as a label computed from the current mu and Sigma
    (the paper calls it "an adaptive target"), so L_ac moves only the skewness. With True, L_ac also
    moves mu and Sigma to make their distance pattern match the skewness angles; at initialization
    (gamma = 0, D_gamma = 0) that gradient pulls every row of targets towards 0, i.e. every class
    towards equal distances to all others, which is not what the constraint is for.
    """
    if target_grad:
        target = angle_target(loc, log_cov_diag)
    else:
        with torch.no_grad():
            target = angle_target(loc, log_cov_diag)
    return (skewness_cosine(skewness) - target).square().mean()

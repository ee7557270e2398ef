"""Multivariate skew Laplace distribution with diagonal covariance (paper Sec. 3.1, Eq. 2, corrected).

The density of Arslan (2010), for x in R^d with location mu, covariance Sigma = diag(cov_diag) and
skewness gamma, written with r = x - mu:

    q      = r^T Sigma^-1 r                      squared Mahalanobis distance
    t      = r^T Sigma^-1 gamma                  skew term
    alpha  = sqrt(1 + gamma^T Sigma^-1 gamma)
    log f  = -log(alpha) - 0.5 log|Sigma| - alpha sqrt(q) + t - c_d
    c_d    = d log 2 + (d - 1)/2 log(pi) + lgamma((d + 1)/2)

Erratum (paper Eq. 2): the paper prints the skew term t *inside* the square root,
exp(-alpha sqrt(q + t)). That function is not a density: the argument of the square root goes negative
for r opposite to gamma, and it does not integrate to 1. The form above (t outside the root) is Arslan's;
it integrates to 1 (tests/test_distributions.py checks it by quadrature in d = 1 and 2 with strong skew),
and its gradient d(-log f)/dx = alpha q^(-1/2) Sigma^-1 r - Sigma^-1 gamma is the paper's Eq. 10.

Stochastic representation (a normal variance-mean mixture), used by `rsample`:

    X = mu + V gamma + sqrt(V) Sigma^(1/2) Z,    V ~ chi-square(d + 1),  Z ~ N(0, I_d)
    E[X] = mu + (d + 1) gamma,    Cov[X] = (d + 1) Sigma + 2 (d + 1) gamma gamma^T

Numerical choices (shared with the heads in `slac.heads`, which call the functions of this module):
- q is computed as sum_j ((x_j - mu_j) Sigma_j^(-1/2))^2, never by expanding ||x||^2 - 2 x.mu + ||mu||^2,
  which loses all precision (and goes negative) in float32 when x is near mu;
- sqrt(q + MAHALANOBIS_EPS) keeps the derivative finite at x = mu (the density has a cusp there);
- c_d uses lgamma: it is about 160 at d = 64 and 1800 at d = 512;
- pairwise (features x classes) evaluation is blocked over classes so that the (N, K, d) intermediate
  never exceeds `max_block_elements`; blocks are recomputed in the backward pass (activation
  checkpointing), so memory stays O(N K + K d + block) instead of O(N K d); the skew term t, linear in
  x, is a GEMM.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Chi2, Distribution, constraints
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DEFAULT_MAX_BLOCK_ELEMENTS",
    "MAHALANOBIS_EPS",
    "MultivariateSkewLaplace",
    "pairwise_quadratic_forms",
    "pairwise_skew_laplace_log_prob",
    "skew_laplace_log_normalizer",
    "skew_laplace_log_prob",
]

#: Added to the squared Mahalanobis distance before the square root: sqrt(q + eps) has a bounded
#: derivative at q = 0 (the gradient with respect to x stays below alpha Sigma^-1/2 in norm) and moves
#: log f by at most alpha * 1e-6.
MAHALANOBIS_EPS = 1e-12

#: Largest (N, K_block, d) intermediate materialized by the pairwise functions: 2**24 elements,
#: 64 MiB in float32. ImageNet (N = 256, K = 1000, d = 512) is split into 8 blocks of 128 classes.
DEFAULT_MAX_BLOCK_ELEMENTS = 2**24


def skew_laplace_log_normalizer(dim: int) -> float:
    """c_d = d log 2 + (d - 1)/2 log(pi) + lgamma((d + 1)/2), the log normalizing constant of Eq. 2."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return dim * math.log(2.0) + 0.5 * (dim - 1) * math.log(math.pi) + math.lgamma(0.5 * (dim + 1))


def skew_laplace_log_prob(value: Tensor, loc: Tensor, log_cov_diag: Tensor, skewness: Tensor) -> Tensor:
    """Log density of the skew Laplace distribution (Eq. 2, corrected), elementwise with broadcasting.

    All arguments have shape (..., d) and broadcast against each other; the result has shape (...).
    The covariance is given by its log diagonal, log_cov_diag = log(diag(Sigma)).
    """
    dim = value.shape[-1]
    inv_std = torch.exp(-0.5 * log_cov_diag)  # (..., d)  Sigma^(-1/2)
    z = (value - loc) * inv_std  # (..., d)  Sigma^(-1/2) r
    w = skewness * inv_std  # (..., d)  Sigma^(-1/2) gamma
    q = z.square().sum(-1)
    t = (z * w).sum(-1)
    w_sq = w.square().sum(-1)  # gamma^T Sigma^-1 gamma
    alpha = torch.sqrt(1.0 + w_sq)
    return (
        -0.5 * torch.log1p(w_sq)
        - 0.5 * log_cov_diag.sum(-1)
        - alpha * torch.sqrt(q + MAHALANOBIS_EPS)
        + t
        - skew_laplace_log_normalizer(dim)
    )


def _squared_distances_block(features: Tensor, loc: Tensor, inv_std: Tensor) -> Tensor:
    z = (features[:, None, :] - loc[None, :, :]) * inv_std[None, :, :]  # (N, k, d)  Sigma_k^(-1/2) r
    return z.square().sum(-1)  # (N, k)


def pairwise_quadratic_forms(
    features: Tensor,
    loc: Tensor,
    log_cov_diag: Tensor,
    skewness: Tensor | None = None,
    *,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> tuple[Tensor, Tensor | None]:
    """Squared Mahalanobis distances q and skew terms t between every feature and every class.

    features (N, d); loc, log_cov_diag, skewness (K, d). Returns q (N, K) with
    q[n, k] = sum_j (x_nj - mu_kj)^2 / Sigma_kj and, when skewness is given, t (N, K) with
    t[n, k] = sum_j (x_nj - mu_kj) gamma_kj / Sigma_kj (else None).

    q is computed from the differences (never expanded: it goes under a square root, where the
    expansion's cancellation near x = mu is fatal); the classes are processed in blocks of at most
    `max_block_elements` (N, k, d) elements, and when gradients are needed each block is recomputed in
    the backward pass. t is linear in x, so it is computed by a GEMM, x . w_k - mu_k . w_k with
    w_k = Sigma_k^-1 gamma_k: its rounding error, about eps |x| |w_k|, is a negligible absolute shift
    of the log density, and it saves one pass over the (N, K, d) differences.
    """
    if features.dim() != 2 or loc.dim() != 2 or features.shape[1] != loc.shape[1]:
        raise ValueError(
            f"features must be (N, d) and loc (K, d) with the same d, got {tuple(features.shape)} "
            f"and {tuple(loc.shape)}"
        )
    inv_std = torch.exp(-0.5 * log_cov_diag)  # (K, d)
    n, d = features.shape
    k = loc.shape[0]
    block = max(1, max_block_elements // max(1, n * d))
    if block >= k:
        q = _squared_distances_block(features, loc, inv_std)
    else:
        recompute = torch.is_grad_enabled() and any(x.requires_grad for x in (features, loc, inv_std))
        blocks = []
        for start in range(0, k, block):
            args = (features, loc[start : start + block], inv_std[start : start + block])
            if recompute:
                blocks.append(checkpoint(_squared_distances_block, *args, use_reentrant=False))
            else:
                blocks.append(_squared_distances_block(*args))
        q = torch.cat(blocks, dim=1)
    if skewness is None:
        return q, None
    weights = skewness * torch.exp(-log_cov_diag)  # (K, d)  Sigma^-1 gamma
    t = features @ weights.T - (loc * weights).sum(-1)  # (N, K)
    return q, t


def pairwise_skew_laplace_log_prob(
    features: Tensor,
    loc: Tensor,
    log_cov_diag: Tensor,
    skewness: Tensor,
    *,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> Tensor:
    """log f_k(x_n) for every feature (N, d) and every class (K, d): the (N, K) matrix of Eq. 2 (corrected).

    Same values as `skew_laplace_log_prob(features[:, None], loc, log_cov_diag, skewness)` without
    materializing more than `max_block_elements` of the (N, K, d) broadcast.
    """
    q, t = pairwise_quadratic_forms(
        features, loc, log_cov_diag, skewness, max_block_elements=max_block_elements
    )
    w_sq = (skewness.square() * torch.exp(-log_cov_diag)).sum(-1)  # (K,)  gamma^T Sigma^-1 gamma
    alpha = torch.sqrt(1.0 + w_sq)  # (K,)
    class_term = -0.5 * torch.log1p(w_sq) - 0.5 * log_cov_diag.sum(-1)  # (K,)
    log_normalizer = skew_laplace_log_normalizer(features.shape[1])
    return (class_term - log_normalizer) - alpha * torch.sqrt(q + MAHALANOBIS_EPS) + t


class MultivariateSkewLaplace(Distribution):
    """Multivariate skew Laplace distribution SL(mu, Sigma, gamma) with diagonal covariance.

    Args:
        loc: location mu, shape (..., d).
        cov_diag: diagonal of the covariance Sigma, shape (..., d), strictly positive.
        skewness: skewness gamma, shape (..., d).
        validate_args: check the arguments (and `log_prob` values) against their constraints.

    The three arguments broadcast together; batch_shape is the broadcast shape without its last
    dimension, event_shape is (d,). See the module docstring for the density (paper Eq. 2, corrected)
    and the variance-mean mixture used by `rsample`.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real_vector,
        "cov_diag": constraints.independent(constraints.positive, 1),
        "skewness": constraints.real_vector,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        loc: Tensor,
        cov_diag: Tensor,
        skewness: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        loc = torch.as_tensor(loc)
        if not loc.is_floating_point():
            loc = loc.to(torch.get_default_dtype())
        cov_diag = torch.as_tensor(cov_diag, dtype=loc.dtype, device=loc.device)
        skewness = torch.as_tensor(skewness, dtype=loc.dtype, device=loc.device)
        for name, value in (("loc", loc), ("cov_diag", cov_diag), ("skewness", skewness)):
            if value.dim() < 1:
                raise ValueError(
                    f"{name} must have at least one dimension (the event dimension d), got a scalar"
                )
        try:
            self.loc, self.cov_diag, self.skewness = torch.broadcast_tensors(loc, cov_diag, skewness)
        except RuntimeError as error:
            raise ValueError(
                f"loc {tuple(loc.shape)}, cov_diag {tuple(cov_diag.shape)} and skewness "
                f"{tuple(skewness.shape)} do not broadcast together"
            ) from error
        batch_shape, event_shape = self.loc.shape[:-1], self.loc.shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def dim(self) -> int:
        """Dimension d of the event."""
        return self.event_shape[0]

    def expand(self, batch_shape: torch.Size, _instance: MultivariateSkewLaplace | None = None):
        new = self._get_checked_instance(MultivariateSkewLaplace, _instance)
        batch_shape = torch.Size(batch_shape)
        shape = batch_shape + self.event_shape
        new.loc = self.loc.expand(shape)
        new.cov_diag = self.cov_diag.expand(shape)
        new.skewness = self.skewness.expand(shape)
        super(MultivariateSkewLaplace, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.loc + (self.dim + 1) * self.skewness

    @property
    def variance(self) -> Tensor:
        return (self.dim + 1) * (self.cov_diag + 2.0 * self.skewness.square())

    @property
    def covariance_matrix(self) -> Tensor:
        outer = self.skewness[..., :, None] * self.skewness[..., None, :]  # (..., d, d)
        return (self.dim + 1) * (torch.diag_embed(self.cov_diag) + 2.0 * outer)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        shape = self._extended_shape(sample_shape)  # sample + batch + (d,)
        dof = torch.tensor(float(self.dim + 1), dtype=self.loc.dtype, device=self.loc.device)
        mixing = Chi2(dof).sample(shape[:-1]).unsqueeze(-1)  # (..., 1)  V
        normal = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)  # Z
        return self.loc + mixing * self.skewness + mixing.sqrt() * self.cov_diag.sqrt() * normal

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return skew_laplace_log_prob(value, self.loc, self.cov_diag.log(), self.skewness)

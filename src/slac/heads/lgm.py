"""Gaussian heads compared with in the paper's Table 3: LGM and MoM.

LGM, the large-margin Gaussian mixture loss (Wan et al., CVPR 2018): class k is N(mu_k, Sigma_k) with
diagonal Sigma_k, and with q_k = (x - mu_k)^T Sigma_k^-1 (x - mu_k) (the LGM paper's d_k is q_k / 2):

    logits_k = -0.5 (1 + alpha 1[k = y]) q_k - 0.5 log|Sigma_k| - d/2 log(2 pi) + log p(k)

The margin alpha multiplies the true class's distance during training only (so the true class must win
by a margin); the log-determinant is part of the logit as in the LGM paper's Eq. 17 (and its authors'
code); p(k) = 1/K. The likelihood regularization is the negative log joint density of the true class,
-log[N(x; mu_y, Sigma_y) p(y)] = 0.5 q_y + 0.5 log|Sigma_y| + d/2 log(2 pi) + log K, averaged over the
batch (the LGM paper drops the two constants, which change no gradient; its code also averages).
The objective is L_c + lambda L_lkd, alpha = 0.1 and lambda = 0.01 by default (the LGM paper uses
alpha in 0.1..0.3 and lambda in 0.01..0.1).

MoM, the "mixture of Gaussian mixture" of the SLAC paper (Sec. 4.3): LGM where each class is a mixture of
C = 2 diagonal Gaussians, f_k(x) = sum_c pi_kc N(x; mu_kc, Sigma_kc). The paper gives no more detail;
this implementation's choices: the margin multiplies the distance of every component of the true class
by (1 + alpha); the mixture weights pi_k = softmax(mixture_logits_k) are learned (initialized equal),
switchable with `learn_mixture_weights`; the likelihood is -log[f_y(x) p(y)].

Both heads initialize mu with Xavier and Sigma = 1 (s = 0), like the SL head of Algorithm 1, and store
the covariance as a log-variance s = log diag(Sigma) (see `slac.heads.base.head_param_groups`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slac.distributions import DEFAULT_MAX_BLOCK_ELEMENTS, pairwise_quadratic_forms
from slac.heads.base import DensityHead, full_precision
from slac.heads.losses import HeadLoss, check_weight, classification_loss, reduce_likelihood
from slac.heads.registry import register_head

__all__ = ["LGMHead", "MoMHead", "gaussian_mixture_log_prob", "pairwise_gaussian_mixture_log_prob"]

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_mixture_log_prob(
    value: Tensor, loc: Tensor, log_cov_diag: Tensor, log_weights: Tensor | None = None
) -> Tensor:
    """log sum_c pi_c N(value; mu_c, diag(exp(log_cov_diag_c))), broadcasting.

    value (..., d); loc and log_cov_diag (..., C, d); log_weights (..., C) (None: a single component,
    C = 1). Returns (...).
    """
    dim = value.shape[-1]
    z = (value[..., None, :] - loc) * torch.exp(-0.5 * log_cov_diag)  # (..., C, d)
    components = -0.5 * (z.square().sum(-1) + log_cov_diag.sum(-1) + dim * LOG_2PI)  # (..., C)
    if log_weights is None:
        return components.squeeze(-1)
    return torch.logsumexp(components + log_weights, dim=-1)


def pairwise_gaussian_mixture_log_prob(
    features: Tensor,
    loc: Tensor,
    log_cov_diag: Tensor,
    log_weights: Tensor | None = None,
    *,
    distance_scale: Tensor | None = None,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> Tensor:
    """log f_k(x_n) for every feature (N, d) and class k: (N, K).

    loc and log_cov_diag (K, C, d); log_weights (K, C) or None when C = 1. distance_scale (N, K), if
    given, multiplies the squared Mahalanobis distances of every component of class k for sample n
    (the LGM margin: 1 + alpha on the true class).
    """
    num_classes, num_components, dim = loc.shape
    q, _ = pairwise_quadratic_forms(
        features,
        loc.reshape(num_classes * num_components, dim),
        log_cov_diag.reshape(num_classes * num_components, dim),
        max_block_elements=max_block_elements,
    )
    q = q.view(features.shape[0], num_classes, num_components)  # (N, K, C)
    if distance_scale is not None:
        q = q * distance_scale[:, :, None]
    components = -0.5 * (q + log_cov_diag.sum(-1) + dim * LOG_2PI)  # (N, K, C)
    if log_weights is None:
        return components.squeeze(-1)
    return torch.logsumexp(components + log_weights, dim=-1)


class _GaussianHead(DensityHead):
    """Shared forward and loss of LGM and MoM; subclasses define `_mixture()`."""

    def __init__(self, in_features: int, num_classes: int, *, margin: float, **density_options) -> None:
        super().__init__(in_features, num_classes, **density_options)
        self.margin = check_weight("margin (alpha)", margin)

    def _mixture(self) -> tuple[Tensor, Tensor, Tensor | None]:  # pragma: no cover
        """(loc (K, C, d), log_variance (K, C, d), log mixture weights (K, C) or None)."""
        raise NotImplementedError

    @full_precision
    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits log f_k(x) + log p(k), (N, K); in training mode with targets the true class's squared
        distances are multiplied by (1 + margin)."""
        self.check_features(features)
        distance_scale = None
        if targets is not None:
            self.check_targets(targets, features.shape[0])
            if self.training and self.margin != 0.0:
                one_hot = F.one_hot(targets, self.num_classes).to(features.dtype)
                distance_scale = 1.0 + self.margin * one_hot  # (N, K)
        loc, log_variance, log_weights = self._mixture()
        log_density = pairwise_gaussian_mixture_log_prob(
            features, loc, log_variance, log_weights, distance_scale=distance_scale
        )
        return log_density + self.log_prior

    def negative_log_likelihood(self, features: Tensor, targets: Tensor) -> Tensor:
        """Per-sample -log[f_y(x) p(y)], (N,), without margin."""
        loc, log_variance, log_weights = self._mixture()
        log_density = gaussian_mixture_log_prob(
            features,
            loc[targets],
            log_variance[targets],
            None if log_weights is None else log_weights[targets],
        )
        return -(log_density + self.log_prior)

    @full_precision
    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        """L_c (on the given, margin-carrying logits) + lambda L_lkd; parts "classification", "likelihood"."""
        self.check_features(features)
        self.check_targets(targets, features.shape[0])
        likelihood = reduce_likelihood(
            self.negative_log_likelihood(features, targets), self.likelihood_reduction
        )
        return HeadLoss.combine(
            {"classification": classification_loss(logits, targets), "likelihood": likelihood},
            {"classification": 1.0, "likelihood": self.likelihood_weight},
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}"


class LGMHead(_GaussianHead):
    """Large-margin Gaussian mixture head (Wan et al. 2018): one diagonal Gaussian per class.

    Args:
        in_features: feature width d.
        num_classes: number of classes K.
        margin: alpha >= 0, the training-time factor (1 + alpha) on the true class's distance.
        likelihood_weight: lambda >= 0, the weight of the likelihood regularization.
        likelihood_reduction: "mean" (default) or "sum" over the batch.
        init_covariance: initial diagonal of every Sigma_k (> 0).
        learn_location, learn_covariance: False freezes mu or Sigma after initialization.

    Parameters: loc (K, d), log_variance (K, d) = log diag(Sigma_k).
    """

    head_name = "lgm"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        margin: float = 0.1,
        likelihood_weight: float = 0.01,
        likelihood_reduction: str = "mean",
        init_covariance: float = 1.0,
        learn_location: bool = True,
        learn_covariance: bool = True,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            margin=margin,
            likelihood_weight=likelihood_weight,
            likelihood_reduction=likelihood_reduction,
            init_covariance=init_covariance,
            learn_location=learn_location,
            learn_covariance=learn_covariance,
        )
        self.loc = self._location_parameter(num_classes, in_features)
        self.log_variance = self._log_variance_parameter(num_classes, in_features)

    def _mixture(self) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.loc[:, None, :], self.log_variance[:, None, :], None


class MoMHead(_GaussianHead):
    """Mixture-of-Gaussian-mixtures head (SLAC paper Sec. 4.3): LGM with C Gaussians per class.

    Args: those of `LGMHead`, and
        num_components: C >= 1 components per class (2 in the paper).
        learn_mixture_weights: learn pi_k = softmax(mixture_logits_k); False keeps them equal (1/C).

    Parameters: loc (K, C, d), log_variance (K, C, d), mixture_logits (K, C).
    """

    head_name = "mom"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_components: int = 2,
        margin: float = 0.1,
        likelihood_weight: float = 0.01,
        likelihood_reduction: str = "mean",
        init_covariance: float = 1.0,
        learn_location: bool = True,
        learn_covariance: bool = True,
        learn_mixture_weights: bool = True,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            margin=margin,
            likelihood_weight=likelihood_weight,
            likelihood_reduction=likelihood_reduction,
            init_covariance=init_covariance,
            learn_location=learn_location,
            learn_covariance=learn_covariance,
        )
        if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
            raise ValueError(f"num_components must be an integer >= 1, got {num_components!r}")
        self.num_components = num_components
        self.learn_mixture_weights = bool(learn_mixture_weights)
        self.loc = self._location_parameter(num_classes, num_components, in_features)
        self.log_variance = self._log_variance_parameter(num_classes, num_components, in_features)
        self.mixture_logits = nn.Parameter(
            torch.zeros(num_classes, num_components), requires_grad=self.learn_mixture_weights
        )

    def _mixture(self) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.loc, self.log_variance, torch.log_softmax(self.mixture_logits, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_components={self.num_components}, "
            f"learn_mixture_weights={self.learn_mixture_weights}"
        )


@register_head("lgm")
def lgm(in_features: int, num_classes: int, **options) -> LGMHead:
    """Large-margin Gaussian mixture (Wan et al. 2018), alpha = 0.1, lambda = 0.01 by default."""
    return LGMHead(in_features, num_classes, **options)


@register_head("mom")
def mom(in_features: int, num_classes: int, **options) -> MoMHead:
    """LGM with a mixture of two Gaussians per class (SLAC paper, Table 3)."""
    return MoMHead(in_features, num_classes, **options)

"""The skew Laplace mixture head, SL and SLAC (paper Sec. 3, Eqs. 2-10, Algorithm 1).

Class k is a multivariate skew Laplace distribution SL(mu_k, Sigma_k, gamma_k) with diagonal
Sigma_k = diag(exp(s_k)) (density: `slac.distributions`, Eq. 2 corrected). The head's parameters are
the distribution parameters, which replace the last layer of the network:

    loc (K, d) = mu,   log_variance (K, d) = s = log diag(Sigma),   skewness (K, d) = gamma

    logits_k = log f_k(x) + log p(k),  p(k) = 1/K                   (Eq. 3; log densities, c_d included)
    L_c   = cross-entropy of the logits, batch mean                  (Eq. 5)
    L_nll = -log[f_y(x) p(y)], batch mean by default ("sum": Eq. 4)  (Eq. 4 corrected)
    L_ac  = mean_{m,n} (cos(gamma_m, gamma_n) - target_mn)^2         (Eqs. 6-8)
    L     = L_c + lambda L_nll + beta L_ac,  lambda = 0.01, beta = 0.1 (Eq. 9); SL is beta = 0.

Erratum (Eq. 4): the paper prints alpha_k + 0.5 |Sigma_k| where the negative log density has
log(alpha_k) + 0.5 log|Sigma_k|; it also drops c_d, which is kept here so that L_nll is a true
negative log-likelihood (a constant: no gradient changes).

Erratum (Eq. 10): with g_k = d(-log f_k)/dx = alpha_k q_k^(-1/2) Sigma_k^-1 r_k - Sigma_k^-1 gamma_k
the gradient of L_c + lambda L_nll for one sample is (with mean reductions, times 1/N)

    (1 - p(y|x) + lambda) g_y + sum_{k != y} p(k|x) (-g_k),

the paper's Eq. 10 except for the sign of Sigma_y^-1 gamma_y in its first term, which it prints as +.
(tests/heads/test_skew_laplace_head.py checks the autograd gradient against this formula.)

Initialization (Algorithm 1): mu Xavier-uniform, Sigma = 1 (s = 0), gamma = 0. `learn_location`,
`learn_covariance`, `learn_skewness` = False freeze a parameter after initialization (Table 4). The
covariance learning rate is divided by 1e2 (CIFAR) or 1e3 (ImageNet): `head_param_groups`, where the
mapping of that factor onto the log-variance s is explained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slac.distributions import (
    DEFAULT_MAX_BLOCK_ELEMENTS,
    MultivariateSkewLaplace,
    pairwise_skew_laplace_log_prob,
    skew_laplace_log_prob,
)
from slac.heads.base import DensityHead, full_precision
from slac.heads.losses import HeadLoss, angle_constraint, check_weight, classification_loss, reduce_likelihood
from slac.heads.registry import register_head

__all__ = ["SkewLaplaceHead"]


class SkewLaplaceHead(DensityHead):
    """Mixture of multivariate skew Laplace distributions with the angle-based constraint (SLAC).

    Args:
        in_features: feature width d.
        num_classes: number of classes K.
        likelihood_weight: lambda >= 0 of Eq. 9 (0.01).
        angle_weight: beta >= 0 of Eq. 9 (0.1); 0 gives the SL head of Table 3.
        angle_target_grad: whether the target of Eq. 8 passes gradients to mu and Sigma (default False:
            the constraint moves only gamma; see `slac.heads.losses.angle_constraint`).
        likelihood_reduction: "mean" (default) or "sum" (the paper's Eq. 4) of L_nll over the batch.
        init_covariance: initial diagonal of every Sigma_k (Algorithm 1: 1.0), > 0.
        learn_location, learn_covariance, learn_skewness: False freezes that parameter (Table 4).
        max_block_elements: the largest (N, K_block, d) intermediate of the pairwise densities.
    """

    @property
    def head_name(self) -> str:  # type: ignore[override]
        """ "sl" without the angle-based constraint (angle_weight 0), "slac" with it: what the head computes,
        whichever name it was created under."""
        return "slac" if self.angle_weight != 0.0 else "sl"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        likelihood_weight: float = 0.01,
        angle_weight: float = 0.1,
        angle_target_grad: bool = False,
        likelihood_reduction: str = "mean",
        init_covariance: float = 1.0,
        learn_location: bool = True,
        learn_covariance: bool = True,
        learn_skewness: bool = True,
        max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            likelihood_weight=likelihood_weight,
            likelihood_reduction=likelihood_reduction,
            init_covariance=init_covariance,
            learn_location=learn_location,
            learn_covariance=learn_covariance,
        )
        self.angle_weight = check_weight("angle_weight (beta)", angle_weight)
        self.angle_target_grad = bool(angle_target_grad)
        self.learn_skewness = bool(learn_skewness)
        if (
            isinstance(max_block_elements, bool)
            or not isinstance(max_block_elements, int)
            or max_block_elements < 1
        ):
            raise ValueError(f"max_block_elements must be a positive integer, got {max_block_elements!r}")
        self.max_block_elements = max_block_elements
        self.loc = self._location_parameter(num_classes, in_features)
        self.log_variance = self._log_variance_parameter(num_classes, in_features)
        self.skewness = nn.Parameter(torch.zeros(num_classes, in_features), requires_grad=self.learn_skewness)

    def distribution(self) -> MultivariateSkewLaplace:
        """The K class distributions as one batched `MultivariateSkewLaplace` (batch_shape (K,))."""
        return MultivariateSkewLaplace(self.loc, self.log_variance.exp(), self.skewness)

    @full_precision
    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits log f_k(x) + log p(k), (N, K). `targets` is only validated (the head has no margin)."""
        self.check_features(features)
        if targets is not None:
            self.check_targets(targets, features.shape[0])
        log_density = pairwise_skew_laplace_log_prob(
            features, self.loc, self.log_variance, self.skewness, max_block_elements=self.max_block_elements
        )
        return log_density + self.log_prior

    def negative_log_likelihood(self, features: Tensor, targets: Tensor) -> Tensor:
        """Per-sample -log[f_y(x) p(y)] (Eq. 4 corrected, before the batch reduction), (N,)."""
        log_density = skew_laplace_log_prob(
            features, self.loc[targets], self.log_variance[targets], self.skewness[targets]
        )
        return -(log_density + self.log_prior)

    def angle_constraint(self) -> Tensor:
        """L_ac (Eqs. 6-8) of the current parameters."""
        return angle_constraint(
            self.loc, self.log_variance, self.skewness, target_grad=self.angle_target_grad
        )

    @full_precision
    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        """Eq. 9: parts "classification" (L_c), "likelihood" (L_nll), "angle" (L_ac), weights 1, lambda, beta.

        With beta = 0 (SL) the angle part is still computed, without gradient, for logging.
        """
        self.check_features(features)
        self.check_targets(targets, features.shape[0])
        likelihood = reduce_likelihood(
            self.negative_log_likelihood(features, targets), self.likelihood_reduction
        )
        if self.angle_weight != 0.0:
            angle = self.angle_constraint()
        else:
            with torch.no_grad():
                angle = self.angle_constraint()
        return HeadLoss.combine(
            {
                "classification": classification_loss(logits, targets),
                "likelihood": likelihood,
                "angle": angle,
            },
            {"classification": 1.0, "likelihood": self.likelihood_weight, "angle": self.angle_weight},
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, angle_weight={self.angle_weight}, "
            f"angle_target_grad={self.angle_target_grad}, learn_skewness={self.learn_skewness}"
        )


@register_head("slac")
def slac(in_features: int, num_classes: int, **options) -> SkewLaplaceHead:
    """Skew Laplace mixture with the angle-based constraint: lambda = 0.01, beta = 0.1."""
    return SkewLaplaceHead(in_features, num_classes, **options)


@register_head("sl")
def sl(in_features: int, num_classes: int, **options) -> SkewLaplaceHead:
    """Skew Laplace mixture without the angle-based constraint (SLAC with beta = 0)."""
    if options.get("angle_weight", 0.0) != 0.0:
        raise ValueError(
            f"head 'sl' has no angle constraint (angle_weight = 0); got angle_weight="
            f"{options['angle_weight']!r}; use 'slac' for a nonzero angle_weight"
        )
    options["angle_weight"] = 0.0
    return SkewLaplaceHead(in_features, num_classes, **options)

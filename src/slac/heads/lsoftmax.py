"""Large-margin softmax head (L-Softmax; Liu et al., ICML 2016), a baseline of the paper's Table 3.

The logit of class j is W_j . x = |W_j| |x| cos(theta_j) (no bias). During training, the true class's
logit is replaced by the annealed large-margin logit

    f_y = (lambda |W_y| |x| cos(theta_y) + |W_y| |x| psi(theta_y)) / (1 + lambda),
    psi(theta) = (-1)^k cos(m theta) - 2k   for theta in [k pi/m, (k+1) pi/m], k = 0, ..., m - 1,
    lambda = max(lambda_min, base (1 + gamma * iteration)^(-power)),

where `iteration` counts the training forward passes that had targets (a buffer, so it is saved in
checkpoints). lambda starts large (plain softmax) and decays, which makes the margin m take effect
gradually; psi is continuous, decreasing and differentiable, and equals cos(theta) for m = 1.
cos(m theta) is evaluated as the Chebyshev polynomial T_m(cos theta), so no arccos is differentiated.
Defaults: the authors' CIFAR-10 recipe (m = 2, base 1000, gamma 2e-5, power 45, lambda_min 0; weight
initialized with the "msra" filler, i.e. N(0, 2/d)). At evaluation the logits are the plain W x.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slac.heads.base import Head, full_precision
from slac.heads.losses import check_weight
from slac.heads.registry import register_head

__all__ = ["LSoftmaxHead", "large_margin_psi", "lsoftmax_lambda"]


def large_margin_psi(cos_theta: Tensor, margin: int) -> Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k with k = floor(m theta / pi) in [0, m - 1], from cos(theta)."""
    cos_theta = cos_theta.clamp(-1.0, 1.0)
    previous, chebyshev = torch.ones_like(cos_theta), cos_theta  # T_0, T_1
    for _ in range(margin - 1):  # T_{n+1}(c) = 2 c T_n(c) - T_{n-1}(c);  T_m(cos theta) = cos(m theta)
        previous, chebyshev = chebyshev, 2.0 * cos_theta * chebyshev - previous
    with torch.no_grad():
        k = torch.floor(margin * torch.arccos(cos_theta) / math.pi).clamp_(0, margin - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * chebyshev - 2.0 * k


def lsoftmax_lambda(
    iteration: Tensor | int, base: float, gamma: float, power: float, lambda_min: float
) -> Tensor:
    """lambda = max(lambda_min, base * (1 + gamma * iteration)^(-power))."""
    iteration = torch.as_tensor(iteration, dtype=torch.float64)
    return torch.clamp_min(base * (1.0 + gamma * iteration).pow(-power), lambda_min)


class LSoftmaxHead(Head):
    """L-Softmax: a bias-free linear classifier whose true-class logit gets the margin m in training.

    Args:
        in_features: feature width d.
        num_classes: number of classes K.
        margin: the integer angular margin m >= 1 (1 gives the plain softmax).
        lambda_base, lambda_gamma, lambda_power, lambda_min: the annealing of lambda (module docstring).
    """

    head_name = "lsoftmax"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        margin: int = 2,
        lambda_base: float = 1000.0,
        lambda_gamma: float = 2e-5,
        lambda_power: float = 45.0,
        lambda_min: float = 0.0,
    ) -> None:
        super().__init__(in_features, num_classes)
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 1:
            raise ValueError(f"margin must be an integer >= 1 (the angular margin m), got {margin!r}")
        self.margin = margin
        self.lambda_base = check_weight("lambda_base", lambda_base)
        self.lambda_gamma = check_weight("lambda_gamma", lambda_gamma)
        self.lambda_power = check_weight("lambda_power", lambda_power)
        self.lambda_min = check_weight("lambda_min", lambda_min)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight)  # N(0, 2 / d), Caffe's "msra" filler
        self.iteration.zero_()

    def current_lambda(self) -> Tensor:
        """lambda at the current iteration (a 0-dim float64 tensor on the buffer's device)."""
        return lsoftmax_lambda(
            self.iteration, self.lambda_base, self.lambda_gamma, self.lambda_power, self.lambda_min
        )

    @full_precision
    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits (N, K); in training mode with targets, the true-class logit carries the margin and the
        iteration counter advances by one."""
        self.check_features(features)
        logits = F.linear(features, self.weight)  # (N, K)
        if targets is None:
            return logits
        self.check_targets(targets, features.shape[0])
        if not self.training:
            return logits
        lam = self.current_lambda().to(logits.dtype)
        with torch.no_grad():
            self.iteration += 1
        index = targets[:, None]  # (N, 1)
        inner = logits.gather(1, index).squeeze(1)  # (N,)  W_y . x
        norm_product = torch.linalg.vector_norm(self.weight[targets], dim=1) * torch.linalg.vector_norm(
            features, dim=1
        )  # (N,)  |W_y| |x|
        cos_theta = inner / norm_product.clamp_min(torch.finfo(logits.dtype).tiny)
        margin_logit = (lam * inner + norm_product * large_margin_psi(cos_theta, self.margin)) / (1.0 + lam)
        return logits.scatter(1, index, margin_logit[:, None])

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, margin={self.margin}, lambda_base={self.lambda_base}, "
            f"lambda_gamma={self.lambda_gamma}, lambda_power={self.lambda_power}, "
            f"lambda_min={self.lambda_min}"
        )


@register_head("lsoftmax")
def lsoftmax(in_features: int, num_classes: int, **options) -> LSoftmaxHead:
    """Large-margin softmax (Liu et al. 2016), margin m = 2 by default."""
    return LSoftmaxHead(in_features, num_classes, **options)

"""The contract every classifier head honours, and the optimizer parameter groups.

A head sits on the pooled features of a backbone (width d = 2 for the LeNet visualization, 64 for
ResNet-20, 512 for ResNet-18, up to 2048) and maps them to K class logits:

    head = create_head("slac", in_features=64, num_classes=100)
    logits = head(features, targets)            # (N, K); targets only matter in training mode
    loss = head.loss(features, logits, targets) # HeadLoss: total, parts, weights
    loss.total.backward()
    optimizer = torch.optim.SGD(head_param_groups(head, base_lr=0.1, covariance_lr_factor=1e2), ...)

- `forward(features, targets=None)` returns the logits. Their argmax is the prediction. A head with a
  training-time margin (L-Softmax, LGM, MoM) applies it only when `self.training` and targets are
  given; otherwise the logits are the plain ones. The mixture heads return log joint densities,
  logits_k = log f_k(x) + log p(k), p(k) = 1/K.
- `loss(features, logits, targets)` returns a `HeadLoss` (see `slac.heads.losses`); `logits` must be
  what `forward(features, targets)` returned for the same call (the classification part is their
  cross-entropy); parts that need more (the likelihood) are recomputed from `features` and the targets,
  which costs O(N d).
- The density heads and L-Softmax compute in the dtype of their parameters with autocast disabled
  (`full_precision`): under mixed precision their features are cast up, so that log densities of
  magnitude 1e2..1e3 and their differences keep float32 accuracy.
- `covariance_parameters()` lists the parameters whose learning rate is divided by the covariance
  factor (paper Sec. 4.1: 1e2 on CIFAR, 1e3 on ImageNet); `head_param_groups` builds the groups.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from slac.errors import ConfigError
from slac.heads.losses import LIKELIHOOD_REDUCTIONS, HeadLoss, check_weight, classification_loss

__all__ = ["DensityHead", "Head", "full_precision", "head_param_groups"]

_Method = TypeVar("_Method", bound=Callable)


def full_precision(method: _Method) -> _Method:
    """Run a head method `method(self, features, ...)` with autocast disabled and floating-point
    features cast to the dtype of the head's parameters (float32 features of a bfloat16 autocast
    region, for instance)."""

    @functools.wraps(method)
    def wrapper(self, features, *args, **kwargs):
        if not isinstance(features, Tensor):
            return method(self, features, *args, **kwargs)
        if features.is_floating_point():
            features = features.to(next(self.parameters()).dtype)
        if not torch.amp.is_autocast_available(features.device.type):  # the meta device: no autocast
            return method(self, features, *args, **kwargs)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return method(self, features, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Head(nn.Module):
    """Base class of the classifier heads: argument checks and the default (classification-only) loss.

    ``head_name`` is the name the head is registered under (``list_heads()``), so that a run records the
    head that actually ran; a head class of one's own that is not registered has None (``create_head`` sets
    the name it was created under).
    """

    head_name: str | None = None

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        for name, value, minimum in (("in_features", in_features, 1), ("num_classes", num_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.in_features = in_features
        self.num_classes = num_classes

    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        """Classification only (Eq. 5)."""
        self.check_targets(targets, features.shape[0])
        return HeadLoss.combine(
            {"classification": classification_loss(logits, targets)}, {"classification": 1.0}
        )

    def covariance_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the reduced covariance learning rate (none by default)."""
        return []

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"

    # ---------------------------------------------------------------------------------- checks
    def check_features(self, features: Tensor) -> None:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError(f"features must be a floating-point tensor, got {_describe(features)}")
        if features.dim() != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"features must have shape (N, in_features={self.in_features}), got {tuple(features.shape)}"
            )

    def check_targets(self, targets: Tensor, batch_size: int) -> None:
        if (
            not isinstance(targets, Tensor)
            or targets.dtype == torch.bool
            or targets.is_floating_point()
            or targets.is_complex()
        ):
            raise TypeError(f"targets must be an integer tensor of class indices, got {_describe(targets)}")
        if targets.shape != (batch_size,):
            raise ValueError(f"targets must have shape (N,) = ({batch_size},), got {tuple(targets.shape)}")
        if not batch_size:
            return
        if targets.device.type == "cpu":  # reading the values costs nothing here: say which they are
            low, high = torch.stack(torch.aminmax(targets)).tolist()
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"targets must lie in [0, num_classes={self.num_classes}), got values in [{low}, {high}]"
                )
        else:
            # checked on the device, without a host synchronisation in the training step; a bad target
            # raises a device-side assertion at the next synchronisation (with the message in the device's
            # output), which, as cross_entropy's own, leaves the CUDA context unusable. The datasets check
            # their labels once when they load (slac.data.check_labels), where the message is clear.
            low, high = torch.aminmax(targets)
            torch._assert_async(
                (low >= 0) & (high < self.num_classes),
                f"targets must lie in [0, num_classes={self.num_classes})",
            )


class DensityHead(Head):
    """Base of the heads whose logits are log joint densities log f_k(x) + log p(k) (LGM, MoM, SL).

    Holds what they share: the likelihood weight lambda and its batch reduction, the prior
    p(k) = 1/K, the initial covariance, and the switches that freeze the location or the covariance
    after initialization (paper Table 4). Subclasses create `loc` and `log_variance` with
    `_location_parameter` and `_log_variance_parameter`; the covariance is Sigma = diag(exp(log_variance)),
    positive by construction.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        likelihood_weight: float,
        likelihood_reduction: str,
        init_covariance: float,
        learn_location: bool,
        learn_covariance: bool,
    ) -> None:
        super().__init__(in_features, num_classes)
        self.likelihood_weight = check_weight("likelihood_weight (lambda)", likelihood_weight)
        if likelihood_reduction not in LIKELIHOOD_REDUCTIONS:
            raise ValueError(
                f"likelihood_reduction must be one of {LIKELIHOOD_REDUCTIONS}, got {likelihood_reduction!r}"
            )
        self.likelihood_reduction = likelihood_reduction
        init_covariance = float(init_covariance)
        if not math.isfinite(init_covariance) or init_covariance <= 0.0:
            raise ValueError(f"init_covariance must be finite and > 0 (a variance), got {init_covariance}")
        self.init_covariance = init_covariance
        self.learn_location = bool(learn_location)
        self.learn_covariance = bool(learn_covariance)
        self.log_prior = -math.log(num_classes)  # log p(k), p(k) = 1/K

    def _location_parameter(self, *shape: int) -> nn.Parameter:
        """Locations, Xavier-uniform over (K * components, d) (Algorithm 1: mu by Xavier initialization)."""
        loc = torch.empty(*shape)
        nn.init.xavier_uniform_(loc.view(-1, shape[-1]))
        return nn.Parameter(loc, requires_grad=self.learn_location)

    def _log_variance_parameter(self, *shape: int) -> nn.Parameter:
        """log diag(Sigma), filled with log(init_covariance) (Algorithm 1: Sigma = 1.0, so 0)."""
        return nn.Parameter(
            torch.full(shape, math.log(self.init_covariance)), requires_grad=self.learn_covariance
        )

    def covariance_parameters(self) -> list[nn.Parameter]:
        return [self.log_variance]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, likelihood_weight={self.likelihood_weight}, "
            f"likelihood_reduction={self.likelihood_reduction!r}, learn_location={self.learn_location}, "
            f"learn_covariance={self.learn_covariance}"
        )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


def head_param_groups(head: Head, base_lr: float, covariance_lr_factor: float = 1e2) -> list[dict]:
    """SGD parameter groups for a head: the covariance parameters at base_lr / covariance_lr_factor.

    Returns up to two groups, {"name": "head", "params": [...], "lr": base_lr} and
    {"name": "head_covariance", "params": [...], "lr": base_lr / covariance_lr_factor}; frozen
    parameters (requires_grad False) and empty groups are left out. The paper divides the covariance
    learning rate by 1e2 on CIFAR and 1e3 on ImageNet. The heads store the covariance as a log-variance
    s = log diag(Sigma); an SGD step eta_s on s moves Sigma by about Sigma^2 eta_s dL/dSigma, the same
    as a step eta on Sigma itself when eta_s = eta / Sigma^2; at the initialization Sigma = 1 of
    Algorithm 1 the two coincide, so the paper's factor is applied unchanged to s. Weight decay is
    left to the optimizer's default (on s it pulls Sigma towards 1, not towards 0).
    """
    if not isinstance(head, Head):
        raise TypeError(f"head must be a slac.heads.Head, got {type(head).__name__}")
    base_lr = float(base_lr)
    covariance_lr_factor = float(covariance_lr_factor)
    if not math.isfinite(base_lr) or base_lr < 0.0:
        raise ValueError(f"base_lr must be finite and >= 0, got {base_lr}")
    if not math.isfinite(covariance_lr_factor) or covariance_lr_factor <= 0.0:
        raise ValueError(f"covariance_lr_factor must be finite and > 0, got {covariance_lr_factor}")
    covariance_ids = {id(p) for p in head.covariance_parameters()}
    trainable = [p for p in head.parameters() if p.requires_grad]
    groups = [
        {"name": "head", "params": [p for p in trainable if id(p) not in covariance_ids], "lr": base_lr},
        {
            "name": "head_covariance",
            "params": [p for p in trainable if id(p) in covariance_ids],
            "lr": base_lr / covariance_lr_factor,
        },
    ]
    return [group for group in groups if group["params"]]

"""Softmax classifier head: logits = W x + b, trained with the cross-entropy (the vanilla ANN's head)."""

from __future__ import annotations

from torch import Tensor, nn

from slac.heads.base import Head
from slac.heads.registry import register_head

__all__ = ["LinearHead"]


class LinearHead(Head):
    """A fully connected layer (torch's default initialization) and the plain cross-entropy.

    Args:
        in_features: feature width d.
        num_classes: number of classes K.
        bias: learn a bias per class.
    """

    head_name = "linear"

    def __init__(self, in_features: int, num_classes: int, *, bias: bool = True) -> None:
        super().__init__(in_features, num_classes)
        self.linear = nn.Linear(in_features, num_classes, bias=bias)

    def forward(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits (N, K). `targets` is accepted for the common head contract and only validated."""
        self.check_features(features)
        if targets is not None:
            self.check_targets(targets, features.shape[0])
        return self.linear(features)


@register_head("linear")
def linear(in_features: int, num_classes: int, **options) -> LinearHead:
    """Softmax classifier (fully connected layer + cross-entropy)."""
    return LinearHead(in_features, num_classes, **options)

"""Classifier heads: the skew Laplace mixture (SL, SLAC; paper Sec. 3) and the heads it is compared with
(softmax, L-Softmax, LGM, MoM; Table 3).

    from slac.heads import create_head, head_param_groups, list_heads
    head = create_head("slac", in_features=64, num_classes=100)   # see list_heads()
    logits = head(features, targets)                              # (N, K)
    loss = head.loss(features, logits, targets)                   # loss.total, loss.parts, loss.weights
    groups = head_param_groups(head, base_lr=0.1, covariance_lr_factor=1e2)

The contract every head honours is described in `slac.heads.base`; the losses in `slac.heads.losses`.
"""

from slac.heads.base import DensityHead, Head, head_param_groups
from slac.heads.lgm import LGMHead, MoMHead
from slac.heads.linear import LinearHead
from slac.heads.losses import HeadLoss, angle_constraint, angle_target, classification_loss
from slac.heads.lsoftmax import LSoftmaxHead, large_margin_psi
from slac.heads.registry import create_head, list_heads, register_head
from slac.heads.skew_laplace import SkewLaplaceHead

__all__ = [
    "DensityHead",
    "Head",
    "HeadLoss",
    "LGMHead",
    "LSoftmaxHead",
    "LinearHead",
    "MoMHead",
    "SkewLaplaceHead",
    "angle_constraint",
    "angle_target",
    "classification_loss",
    "create_head",
    "head_param_groups",
    "large_margin_psi",
    "list_heads",
    "register_head",
]

"""The optimizer and learning-rate schedule of the paper's recipe (Sec. 4.1): SGD with momentum and weight
decay over three parameter groups, the rate following the schedule per step.

Parameter groups: the backbone (with the ANN's logit BatchNorm) at ``lr``; the head at ``lr``; the head's
covariance parameters at ``lr / covariance_lr_factor`` (``slac.heads.head_param_groups``). Weight decay
applies to every group, as in the official AdderNet recipe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slac.errors import ConfigError
from slac.heads import head_param_groups
from slac.train.config import TrainConfig

__all__ = ["build_optimizer", "lr_factor"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): a linear warm-up from 0
    over ``warmup_steps``, then ``cosine`` (to 0 at ``total_steps``), ``constant`` or ``step`` (x0.1 at 50%
    and at 75% of the steps after the warm-up)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    raise ConfigError(f"schedule: unknown schedule {schedule!r}")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over ``model``'s trainable parameters in the recipe's groups (``model.head`` may be None: a
    model's own classifier is part of the backbone)."""
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    groups = [{"name": "backbone", "params": backbone, "lr": config.lr}]
    if head is not None:
        groups += head_param_groups(head, config.lr, config.covariance_lr_factor)
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )

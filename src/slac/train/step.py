"""One training step of the paper's recipe, and an epoch of them for a loop of one's own.

A step: forward through the backbone and the head (margin heads see the targets), the head's loss (Eq. 9:
classification + lambda likelihood + beta angle), backward (DistributedDataParallel all-reduces the
gradients), ``scale_adder_grads`` on the synchronised gradient (AdderNet's adaptive learning-rate scaling,
eta), the optimizer step.

    metrics = train_one_epoch(model, loader, optimizer, eta=0.2)   # any nn.Module: images -> logits

The model may be any module mapping images to logits (trained with the cross-entropy) or one with slac's
contract (``forward_features``, ``forward_head``, ``loss``: the zoo's models, ``slac.train.UserModel``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from slac.nn import scale_adder_grads
from slac.train.meters import EpochMeters
from slac.train.model import as_slac_model

__all__ = ["TrainModule", "amp_forward", "autocast", "train_one_epoch", "train_step"]


def autocast(device: torch.device | str, amp: str) -> Any:
    """The recipe's mixed precision (``amp``: off, bf16, fp16) as a context manager."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def amp_forward(device: torch.device, amp: str) -> Callable[[nn.Module, Tensor], Any]:
    """``forward(model, images)`` under the recipe's autocast: how BatchNorm recalibration runs a model."""

    def forward(model: nn.Module, images: Tensor) -> Any:
        with autocast(device, amp):
            return model(images)

    return forward


class TrainModule(nn.Module):
    """One forward of the training step as a module, so that DDP sees the whole computation:
    ``(images, targets) -> (logits, loss total, loss parts)``; ``images -> logits`` for evaluation."""

    def __init__(self, model: nn.Module, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.features: Callable[[Tensor], Tensor] = (
            torch.compile(model.forward_features) if compile else model.forward_features
        )

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Any:
        features = self.features(images)  # (B, d)
        logits = self.model.forward_head(features, targets)  # (B, K)
        if targets is None:
            return logits
        loss = self.model.loss(features, logits, targets)
        return logits, loss.total, loss.parts


def train_step(
    module: nn.Module,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    eta: float | None = 0.2,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One training step: forward through ``module`` (a ``TrainModule``, or DDP around one: (images, labels)
    -> logits, loss, loss parts), backward, AdderNet's adaptive gradient scaling of ``model``'s adder layers
    (``eta``; None: off) on the synchronised gradient, the optimizer step (through ``scaler`` under fp16).
    Returns the logits, the total loss and its parts."""
    with autocast(images.device, amp):
        logits, total, parts = module(images, labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    if eta is not None:
        scale_adder_grads(model, eta=eta)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return logits, total, parts


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    *,
    eta: float | None = 0.2,
    scheduler: Any = None,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` ((images, labels) batches on the model's device) with ``train_step``, for a
    training loop of one's own (timm-style). ``model``: any module mapping images to logits (trained with
    the cross-entropy), or one with slac's contract (its head's loss). ``scheduler.step()`` runs after
    every step when given. Returns the mean loss and its parts, top-1/top-5 (%) on the logits the loss
    saw, and the image count."""
    model = as_slac_model(model)
    module = TrainModule(model)
    model.train()
    meters = EpochMeters(next(model.parameters()).device)
    for images, labels in loader:
        logits, total, parts = train_step(module, model, images, labels, optimizer, eta, amp, scaler)
        if scheduler is not None:
            scheduler.step()
        meters.record_step(logits, total, parts, labels)
    if not meters.sums:
        raise ValueError("train_one_epoch: the loader yielded no batches")
    return EpochMeters.means(meters.sums)

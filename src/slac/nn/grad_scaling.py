"""Adaptive learning-rate scaling of adder weights (AdderNet, Chen et al. 2020, Eq. 13):

    grad_W <- eta * sqrt(numel(W)) * grad_W / ||grad_W||_2        for each adder layer separately

The official code rescales inside the adder op's autograd backward. Here it is a separate step, called
between ``loss.backward()`` and ``optimizer.step()``, because the gradient it should see is the final one:

- under DistributedDataParallel the all-reduce happens after backward; rescaling each rank's local
  gradient first, as the official code does, averages individually normalized gradients, which is not
  the normalized average a single process would compute on the combined batch;
- with gradient accumulation over micro-batches, rescaling inside backward normalizes each micro-batch;
- with ``torch.amp.GradScaler`` the normalization would erase the loss scale that ``unscale_`` later
  divides out. Call ``scaler.unscale_(optimizer)`` first, then this function.

SGD's weight decay and momentum then act on the rescaled gradient, as in the official recipe.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slac.nn.adder import AdderLayer

__all__ = ["adder_weights", "scale_adder_grads"]


def adder_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weight parameters of every adder layer in ``module`` (bias excluded)."""
    return [m.weight for m in module.modules() if isinstance(m, AdderLayer)]


@torch.no_grad()
def scale_adder_grads(module: nn.Module, eta: float = 0.2) -> list[Tensor]:
    """Rescale each adder weight's ``.grad`` in place to norm ``eta * sqrt(numel)``.

    Weights without a gradient are skipped; an all-zero gradient stays zero. Returns the gradient norms
    before scaling (0-dim tensors, for logging; no device synchronization happens here).
    """
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a positive finite number, got {eta!r}")
    norms = []
    for weight in adder_weights(module):
        grad = weight.grad
        if grad is None:
            continue
        norm = torch.linalg.vector_norm(grad)
        tiny = torch.finfo(norm.dtype).tiny
        grad.mul_(eta * math.sqrt(grad.numel()) / norm.clamp_min(tiny))
        norms.append(norm)
    return norms

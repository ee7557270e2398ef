"""BatchNorm statistics recomputed from training batches ("precise BN", Wu & Johnson 2021).

An AdderNet's BatchNorm running statistics lag its batch statistics: adder outputs carry large per-channel
offsets (-sum |w| from every padded tap), and AdderNet's adaptive gradient scaling moves every adder weight
by a fixed norm per step, so the offsets drift by a sizeable fraction of a standard deviation each step
while a momentum of 0.1 remembers about 10 steps. Evaluated on the running statistics, a model that is
learning can score at chance (a uniform shift of the features makes one class win under the density
heads). Recomputing the statistics as the plain average over K training batches, with the weights fixed,
measures the model instead:

    recalibrate_batchnorm(model, batches, num_batches=50)          # in place: the new statistics stay
    with recalibrated_batchnorm(model, batches, num_batches=50):    # evaluate, then the old ones return
        accuracy = evaluate(model, test_loader)

``torch.optim.swa_utils.update_bn`` does the core of this (reset, momentum None, forward in train mode),
but it has no batch limit, leaves momentum and mode changed when a forward raises, leaves the statistics
reset when the loader is empty, consumes the global random state in train-mode layers such as dropout, and
does not average over processes; hence this module.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from slac.errors import ConfigError, DataError

__all__ = ["batchnorm_layers", "recalibrate_batchnorm", "recalibrated_batchnorm"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (SyncBatchNorm and slac's
    DistributedBatchNorm included)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
    ]


def _images(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"recalibrate_batchnorm: a batch must be a tensor or (images, ...), got {type(batch).__name__}"
    )


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    forward: Callable[[nn.Module, Tensor], Any] | None = None,
    average_over_processes: bool = True,
) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by their average over
    ``num_batches`` batches of ``batches`` (all of them when None); returns the number of batches used.

    Each batch is a tensor of inputs or a tuple whose first element is (``(images, labels)`` from a loader).
    The model runs in train mode without gradients, through ``forward(model, images)`` (default:
    ``model(images)``); afterwards every layer's momentum and the model's train/eval mode are what they were,
    even if a forward raises, and the global random state is as before (dropout draws no numbers from it).
    The statistics are the cumulative average of the batch statistics (momentum None), mean and unbiased
    variance as BatchNorm computes them; the batches should be training images without augmentation.
    Under torch.distributed, each process averages over its own batches and then the processes' statistics
    are averaged (``average_over_processes``; every process must call this, with the same number of
    batches). Raises DataError (a ValueError) when ``batches`` yields nothing, leaving the old statistics.
    """
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ConfigError(f"num_batches must be a positive integer or None, got {num_batches!r}")
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    forward = forward or (lambda module, images: module(images))
    saved = [_statistics(layer) for layer in layers]
    momenta = [layer.momentum for layer in layers]
    modes = {module: module.training for module in model.modules()}
    tensors = itertools.chain(model.parameters(), model.buffers())
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    used = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: batch k enters with weight 1/k
        model.train()
        with torch.random.fork_rng(devices=cuda):  # dropout in train mode draws from a copy
            for batch in itertools.islice(batches, num_batches):
                forward(model, _images(batch))
                used += 1
        if used == 0:
            raise DataError(
                "recalibrate_batchnorm: the batches yielded nothing; the statistics are unchanged"
            )
    except BaseException:
        for layer, statistics in zip(layers, saved, strict=True):
            _restore(layer, statistics)
        raise
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for module, training in modes.items():
            module.training = training
    if average_over_processes and torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            for layer in layers:
                for buffer in (layer.running_mean, layer.running_var):
                    torch.distributed.all_reduce(buffer)
                    buffer.div_(world)
    return used


@contextlib.contextmanager
def recalibrated_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    forward: Callable[[nn.Module, Tensor], Any] | None = None,
    average_over_processes: bool = True,
) -> Iterator[int]:
    """``recalibrate_batchnorm`` for the duration of a ``with`` block; on leaving it every layer's running
    statistics (and batch count) are restored bit for bit, so that training goes on exactly as without it.
    Yields the number of batches used."""
    layers = batchnorm_layers(model)
    saved = [_statistics(layer) for layer in layers]
    try:
        yield recalibrate_batchnorm(model, batches, num_batches, forward, average_over_processes)
    finally:
        for layer, statistics in zip(layers, saved, strict=True):
            _restore(layer, statistics)


def _statistics(layer: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor, Tensor | None]:
    tracked = layer.num_batches_tracked
    return (
        layer.running_mean.detach().clone(),
        layer.running_var.detach().clone(),
        tracked.detach().clone() if tracked is not None else None,
    )


@torch.no_grad()
def _restore(
    layer: nn.modules.batchnorm._BatchNorm, statistics: tuple[Tensor, Tensor, Tensor | None]
) -> None:
    mean, var, tracked = statistics
    layer.running_mean.copy_(mean)
    layer.running_var.copy_(var)
    if tracked is not None and layer.num_batches_tracked is not None:
        layer.num_batches_tracked.copy_(tracked)

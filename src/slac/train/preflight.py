"""Checks of a run before its first step: the model against the data, so that a mismatch is an error in the
user's terms now, not after an epoch of training or from deep inside torch ("Target 11 is out of bounds").

One forward of the first two images of each split, in eval mode, without gradients, drawing nothing from
the random generators: the images reach the model, the model gives logits (N, K), every label of the data
is below K, and the test images have the training images' shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from slac.data import ArrayDataset
from slac.errors import ConfigError, SlacError
from slac.train.config import TrainConfig
from slac.train.data import DataBundle, dataset_image_shape, evaluation_loader

__all__ = ["check_model_against_data"]


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).splitlines()), "")


def _label_range(dataset: Any, num_classes: int) -> tuple[int, int]:
    """(lowest, highest) label of a split: read from an in-memory split, else the class count's."""
    if isinstance(dataset, ArrayDataset):
        if len(dataset) == 0:
            return 0, -1
        low, high = torch.aminmax(dataset.labels)
        return int(low), int(high)
    return 0, num_classes - 1


def check_model_against_data(model: nn.Module, data: DataBundle, config: TrainConfig) -> None:
    """Raise a ``ConfigError`` saying what does not fit (see the module docstring)."""
    train, test = data.splits
    if data.test_size == 0:
        raise ConfigError(
            "test split: it has no images"
            + (f" (test_subset {config.test_subset})" if config.test_subset is not None else "")
            + "; every epoch is scored on it, so give a test split with images"
        )
    train_shape = tuple(data.image_shape)
    test_shape = tuple(dataset_image_shape(test))
    if test_shape != train_shape:
        raise ConfigError(
            f"test split: images of shape {test_shape}, but the training images are {train_shape}; "
            "give both splits images of one shape"
        )
    quiet = dataclasses.replace(config, workers=0)  # two images: no worker processes
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for name, split in (("train", train), ("test", test)):
            images, _ = next(iter(evaluation_loader(quiet, split, device, limit=2)))
            try:
                with torch.no_grad(), torch.random.fork_rng(devices=[]):
                    logits = model(images)
            except SlacError:  # already said in the user's terms (a backend that cannot run, ...)
                raise
            except Exception as error:  # the model cannot take these images: say which and why
                raise ConfigError(
                    f"{name} split: the model cannot take its images of shape {tuple(images.shape[1:])} "
                    f"({type(error).__name__}: {_first_line(error)})"
                ) from error
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ConfigError(
                    f"model: it must give logits of shape (N, classes), got {shape} for "
                    f"{tuple(images.shape)} "
                    "images; flatten its output, or give a head for its features"
                )
            classes = logits.shape[1]
            low, high = _label_range(split, data.num_classes)
            if low < 0 or high >= classes:
                raise ConfigError(
                    f"{name} split: labels lie in [{low}, {high}], but the model gives {classes} logits "
                    f"(classes 0-{classes - 1}); give the model {high + 1} outputs, or remap the labels"
                )
    finally:
        model.train(was_training)

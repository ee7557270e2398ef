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
from slac.train.checkpoint import isolated_rng
from slac.train.config import TrainConfig
from slac.train.data import DataBundle, dataset_image_shape, evaluation_loader

__all__ = ["check_model_against_data", "probe"]


def _is_failure(error: BaseException) -> bool:
    """A failure of the machine, not a mismatch of model and data: it keeps its own type and traceback."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError | MemoryError | NotImplementedError) or text.startswith(
        ("CUDA error", "NCCL error", "CUDA out of memory")
    )


def probe(model: nn.Module, images: Tensor, what: str) -> Tensor:
    """``model``'s output on ``images`` in eval mode, without gradients, changing no state; an error of the
    model on them becomes a ``ConfigError`` naming ``what`` (failures of the machine stay as they are);
    the output must be (N, width)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), isolated_rng():
            output = model(images)
    except SlacError:  # already said in the user's terms (a backend that cannot run, ...)
        raise
    except Exception as error:
        if _is_failure(error):
            raise
        first_line = next(iter(str(error).splitlines()), "")
        raise ConfigError(
            f"{what}: the model cannot take images of shape {tuple(images.shape[1:])} "
            f"({type(error).__name__}: {first_line})"
        ) from error
    finally:
        model.train(was_training)
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ConfigError(
            f"model: it must give a tensor of shape (N, width), got {shape} for {tuple(images.shape)} images "
            "(logits (N, classes), or with a head its features (N, d)); flatten its output or pool it"
        )
    return output


def _label_range(dataset: Any, num_classes: int, name: str) -> tuple[int, int, str]:
    """(lowest, highest) label and what they are of: read from an in-memory split; of both splits (the
    class count found when the data was loaded) for a streaming one."""
    if isinstance(dataset, ArrayDataset):
        if len(dataset) == 0:
            return 0, -1, f"{name} split"
        low, high = torch.aminmax(dataset.labels)
        return int(low), int(high), f"{name} split"
    return 0, num_classes - 1, "train and test splits"


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
    with isolated_rng():  # a streaming loader draws its workers' seed
        for name, split in (("train", train), ("test", test)):
            images, _ = next(iter(evaluation_loader(quiet, split, device, limit=2)))
            logits = probe(model, images, f"{name} split")
            classes = logits.shape[1]
            low, high, where = _label_range(split, data.num_classes, name)
            if low < 0 or high >= classes:
                raise ConfigError(
                    f"{where}: labels lie in [{low}, {high}], but the model gives {classes} logits "
                    f"(classes 0-{classes - 1}); give the model {high + 1} outputs, or remap the labels"
                )

"""``load_dataset(name, ...)`` and ``list_datasets()``: one entry point for every dataset."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from slac.data.base import ArrayDataset
from slac.data.cifar import load_cifar
from slac.data.digits import load_digits_dataset
from slac.data.imagenet import load_imagenet
from slac.data.mnist import load_idx_dataset
from slac.errors import ConfigError

_LOADERS: dict[str, Callable[..., Any]] = {
    "digits": load_digits_dataset,
    "mnist": partial(load_idx_dataset, "mnist"),
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "imagenet": load_imagenet,
}
# (C, H, W) of the images and the number of classes of each dataset, known without reading any file.
DATASET_SPECS: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}
# Datasets that stream from disk (torchvision datasets), not in-memory ``ArrayDataset``s.
STREAMING = frozenset({"imagenet"})


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def dataset_spec(name: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), num_classes) of dataset ``name`` as its loader returns it (ImageNet: the 224 crop)."""
    key = name.lower().replace("_", "-")
    if key not in DATASET_SPECS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return DATASET_SPECS[key]


def load_dataset(
    name: str, root: str | Path | None = None, split: str = "train", **kwargs: Any
) -> ArrayDataset | Any:
    """Load split ``"train"`` or ``"test"`` of dataset ``name`` (see ``list_datasets()``).

    Small datasets come back as an in-memory ``ArrayDataset``; ``imagenet`` as a torchvision dataset.
    ``kwargs`` go to the dataset's loader (``download=`` for CIFAR, ``transform=`` for ImageNet).
    """
    key = name.lower().replace("_", "-")
    if key not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _LOADERS[key](root=root, split=split, **kwargs)

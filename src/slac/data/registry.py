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

_LOADERS: dict[str, Callable[..., Any]] = {
    "digits": load_digits_dataset,
    "mnist": partial(load_idx_dataset, "mnist"),
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "imagenet": load_imagenet,
}
# Datasets that stream from disk (torchvision datasets), not in-memory ``ArrayDataset``s.
STREAMING = frozenset({"imagenet"})


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(
    name: str, root: str | Path | None = None, split: str = "train", **kwargs: Any
) -> ArrayDataset | Any:
    """Load split ``"train"`` or ``"test"`` of dataset ``name`` (see ``list_datasets()``).

    Small datasets come back as an in-memory ``ArrayDataset``; ``imagenet`` as a torchvision dataset.
    ``kwargs`` go to the dataset's loader (``download=`` for CIFAR, ``transform=`` for ImageNet).
    """
    key = name.lower().replace("_", "-")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _LOADERS[key](root=root, split=split, **kwargs)

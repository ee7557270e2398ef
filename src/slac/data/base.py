"""The in-memory dataset record shared by every small dataset, and where datasets live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slac.errors import ConfigError, DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ArrayDataset:
    """A whole split held in memory.

    ``images`` (N, C, H, W) uint8 holds raw pixel values in ``0..max_value`` (255 for MNIST and CIFAR,
    16 for the scikit-learn digits); ``labels`` (N,) int64 in ``0..num_classes-1``. ``mean`` and ``std``
    (one per channel) normalise ``images / max_value``: ``x = (images / max_value - mean) / std``.
    ``flip`` says whether horizontal flips are a label-preserving augmentation for this data (CIFAR
    yes; digits no) and ``padding`` is the default random-crop padding, both used by ``DeviceLoader``.
    """

    name: str
    split: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_value: float = 255.0
    padding: int = 0
    flip: bool = False
    classes: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{self.name}: mean/std need {channels} values (one per channel)")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One normalised float image (C, H, W) and its label, for code that wants a torch Dataset."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (self.images[index].float() / self.max_value - mean) / std, int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")


def default_root(name: str) -> Path:
    """``$SLAC_DATA_ROOT/<name>``, by default ``~/.cache/slac/data/<name>``."""
    base = os.environ.get("SLAC_DATA_ROOT") or os.path.join("~", ".cache", "slac", "data")
    return Path(base).expanduser() / name


def check_labels(labels: torch.Tensor, num_classes: int, where: str, hint: str = "") -> None:
    """Labels must lie in ``0..num_classes-1``; the error names the file and the range found."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{where}: labels range over {low}..{high} but this dataset has {num_classes} classes "
            f"(expected 0..{num_classes - 1}).{(' ' + hint) if hint else ''}"
        )

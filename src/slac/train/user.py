"""A user's own model and data in slac's trainer: the adapters behind ``fit`` and ``Trainer(model=...)``.

    from slac.train import fit
    model = slac.convert_to_adder(my_cnn)                                # any nn.Module: images -> logits
    summary = fit(model, train=(x_train, y_train), test=(x_test, y_test), epochs=5, out_dir="runs")

The trainer works with slac's model contract (``forward_features``, ``forward_head``, ``loss``, ``head``).
``UserModel`` gives any module that contract: the module maps images to logits (or, with a slac head, to
the head's features), and the loss is the cross-entropy (or the head's loss: SLAC's likelihood and angle
terms). Data may be a pair of tensors ``(images, labels)``, an ``ArrayDataset``, or any map-style
``torch.utils.data.Dataset`` of ``(image, label)`` pairs; tensors and ArrayDatasets are held on the training
device (``DeviceLoader``), other datasets stream through worker processes (``StreamingLoader``), and both
resume exactly inside an epoch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slac.data.base import ArrayDataset
from slac.errors import ConfigError
from slac.heads import Head
from slac.heads.losses import HeadLoss

__all__ = ["CUSTOM", "UserModel", "as_dataset", "dataset_classes", "dataset_image_shape"]

CUSTOM = "custom"  # config.model / config.dataset of a run whose model or data came from Python


class UserModel(nn.Module):
    """``module`` (images -> logits, or images -> features when ``head`` is given) in slac's model
    contract. Its state dict keys start with ``module.`` (and ``head.``)."""

    def __init__(self, module: nn.Module, head: Head | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(module).__name__}")
        if head is not None and not isinstance(head, Head):
            raise TypeError(f"head must be a slac.heads.Head (slac.create_head), got {type(head).__name__}")
        self.module = module
        self.head = head
        self.form = "custom"

    def forward_features(self, images: Tensor) -> Tensor:
        return self.module(images)

    def forward_head(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        return features if self.head is None else self.head(features, targets)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        if self.head is not None:
            return self.head.loss(features, logits, targets)
        if logits.dim() != 2:
            raise ValueError(
                f"the model must map images to logits of shape (N, classes), got {tuple(logits.shape)}; "
                "flatten its output, or give a slac head for its features"
            )
        return HeadLoss.combine({"classification": F.cross_entropy(logits, targets)}, {"classification": 1.0})


def as_dataset(data: Any, what: str) -> Any:
    """``(images, labels)`` tensors as an ``ArrayDataset`` (held as given: no scaling), an ArrayDataset or a
    map-style Dataset as it is."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, labels = data
        if images.dim() != 4 or not images.is_floating_point():
            raise ConfigError(
                f"{what}: images must be a float tensor (N, C, H, W), got {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],) or labels.is_floating_point():
            raise ConfigError(
                f"{what}: labels must be integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and labels.min() < 0:
            raise ConfigError(f"{what}: labels must be class indices >= 0")
        channels = images.shape[1]
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
        return ArrayDataset(
            name=what, split=what, images=images.detach().cpu(), labels=labels.detach().cpu().long(),
            num_classes=num_classes, mean=(0.0,) * channels, std=(1.0,) * channels, max_value=1.0,
        )  # fmt: skip
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return data
    raise ConfigError(
        f"{what}: give (images, labels) tensors, a slac ArrayDataset or a map-style torch Dataset of "
        f"(image, label) pairs; got {type(data).__name__}"
    )


def dataset_classes(*datasets: Any) -> int:
    """The number of classes: an ArrayDataset's, a Dataset's ``classes``, or the largest label + 1."""
    counts = []
    for dataset in datasets:
        if isinstance(dataset, ArrayDataset):
            counts.append(dataset.num_classes)
        elif hasattr(dataset, "classes"):
            counts.append(len(dataset.classes))
        elif isinstance(getattr(dataset, "targets", None), (list, Tensor)):  # torchvision's datasets
            counts.append(int(torch.as_tensor(dataset.targets).max()) + 1)
        else:  # reads every item once (transforms included): give the dataset a `classes` to avoid it
            counts.append(max(int(dataset[i][1]) for i in range(len(dataset))) + 1)
    return max(counts)


def dataset_image_shape(dataset: Any) -> tuple[int, int, int]:
    if isinstance(dataset, ArrayDataset):
        return dataset.image_shape
    return tuple(dataset[0][0].shape)

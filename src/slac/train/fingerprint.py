"""What identifies a run's data, so that a resumed run can refuse other data than it trained on.

    fingerprint = data_fingerprint(train, test)     # recorded in every checkpoint and in summary.json
    differences = compare_fingerprints(saved, fingerprint)   # [] when the data is the same

Per split: the number of images, of classes, the image shape, and a SHA-256 of a sample of 64 items taken at
evenly spaced positions. What the hash covers depends on what can be read without running a random
transform: the pixels and labels of an in-memory split (the datasets of slac's registry, tensors passed
from Python); the files and labels of an ImageFolder (``samples``); the labels alone of another Dataset.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from slac.data import ArrayDataset

__all__ = ["compare_fingerprints", "data_fingerprint", "split_fingerprint"]

SAMPLE = 64  # items hashed per split


def _positions(size: int) -> list[int]:
    if size <= SAMPLE:
        return list(range(size))
    return sorted({round(i * (size - 1) / (SAMPLE - 1)) for i in range(SAMPLE)})


def split_fingerprint(dataset: Any, num_classes: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """Size, classes, image shape and the sample's hash of one split (see the module docstring)."""
    digest = hashlib.sha256()
    positions = _positions(len(dataset))
    if isinstance(dataset, ArrayDataset):
        covers = "images and labels"
        index = torch.tensor(positions, dtype=torch.long)
        digest.update(str(dataset.images.dtype).encode())
        digest.update(np.ascontiguousarray(dataset.images[index].numpy()).tobytes())
        digest.update(dataset.labels[index].to(torch.int64).numpy().tobytes())
    elif isinstance(getattr(dataset, "samples", None), list):  # ImageFolder: (path, label) per item
        covers = "file names and labels"
        for position in positions:
            path, label = dataset.samples[position]
            digest.update(f"{'/'.join(str(path).split('/')[-2:])}\0{int(label)}\n".encode())
    else:
        covers = "labels"
        for position in positions:
            digest.update(f"{int(dataset[position][1])}\n".encode())
    return {
        "images": len(dataset),
        "classes": int(num_classes),
        "image_shape": [int(n) for n in image_shape],
        "sample_sha256": digest.hexdigest(),
        "sample_covers": covers,
    }


def data_fingerprint(
    train: Any, test: Any, num_classes: int, image_shape: tuple[int, ...]
) -> dict[str, dict[str, Any]]:
    """The fingerprints of a run's training and test splits (as loaded, before ``train_subset``)."""
    return {
        "train": split_fingerprint(train, num_classes, image_shape),
        "test": split_fingerprint(test, num_classes, image_shape),
    }


def compare_fingerprints(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words ("train split: 80 images, the run trained on 40")."""
    differences = []
    for split in ("train", "test"):
        old, new = saved.get(split, {}), current.get(split, {})
        for key, what in (("images", "images"), ("classes", "classes"), ("image_shape", "image shape")):
            if old.get(key) != new.get(key):
                differences.append(f"{split} split: {what} {new.get(key)}, the run's were {old.get(key)}")
        same_sizes = all(old.get(key) == new.get(key) for key in ("images", "classes", "image_shape"))
        if same_sizes and old.get("sample_sha256") != new.get("sample_sha256"):
            differences.append(
                f"{split} split: other {new.get('sample_covers', 'contents')} in the same sizes"
            )
    return differences

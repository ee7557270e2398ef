"""scikit-learn's embedded 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits").

``sklearn.datasets.load_digits``: 1797 grey images, 8x8, integer values 0..16, 10 classes; shipped
inside scikit-learn, so always available offline. There is no official split: we take a stratified
split of 360 test / 1437 train images with ``sklearn.model_selection.train_test_split(...,
random_state=DIGITS_SPLIT_SEED, stratify=labels)``, identical on every machine.

Normalisation: mean and std of the training split's pixels scaled by 1/16, computed when loaded
(mean 0.30538, std 0.37612 with scikit-learn 1.9.1; the exact values are in ``ArrayDataset.mean``/``std``).
"""

from __future__ import annotations

import numpy as np
import torch

from slac.data.base import ArrayDataset, check_split

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    return train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )


def load_digits_dataset(root: object = None, split: str = "train") -> ArrayDataset:
    """The digits as a (N, 1, 8, 8) uint8 dataset (values 0..16, ``max_value=16``); ``root`` is unused."""
    check_split(split)
    train_images, test_images, train_labels, test_labels = _split()
    train = train_images.astype(np.float64) / 16.0
    mean, std = float(train.mean()), float(train.std())
    images, labels = (train_images, train_labels) if split == "train" else (test_images, test_labels)
    return ArrayDataset(
        name="digits",
        split=split,
        images=torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),  # (N, 1, 8, 8)
        labels=torch.from_numpy(np.ascontiguousarray(labels)),
        num_classes=10,
        mean=(mean,),
        std=(std,),
        max_value=16.0,
        padding=1,
        flip=False,
        classes=tuple(str(i) for i in range(10)),
    )

"""Datasets for the training loop, and on-device batching with augmentation.

    from slac.data import DeviceLoader, list_datasets, load_dataset
    train = load_dataset("cifar10", root="~/data", split="train")   # ArrayDataset (50000, 3, 32, 32) uint8
    loader = DeviceLoader(train, batch_size=512, augment=True, device="cuda", seed=0)
    for images, labels in loader: ...                                # normalised float, on the device

``list_datasets()``: ``cifar10``, ``cifar100``, ``digits`` (scikit-learn's 8x8 digits, always there),
``fashion-mnist`` (Debian's ``/usr/share/datasets/fashion-mnist`` by default), ``imagenet`` (streams
through torchvision, optional), ``mnist``. Nothing is downloaded unless ``download=True`` (CIFAR).
Formats and sources are in each module's docstring: ``mnist`` (IDX), ``cifar`` (pickles), ``digits``,
``imagenet`` (ImageFolder).
"""

from slac.data.base import ArrayDataset, default_root
from slac.data.cifar import CIFAR_SPECS, ChecksumError, load_cifar, md5sum, verify_md5
from slac.data.digits import DIGITS_SPLIT_SEED, load_digits_dataset
from slac.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes, load_imagenet
from slac.data.loader import DeviceLoader, random_crop, random_flip
from slac.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load_idx_dataset, read_idx
from slac.data.registry import DATASET_SPECS, STREAMING, dataset_spec, list_datasets, load_dataset
from slac.data.streaming import StreamingLoader

__all__ = [
    "CIFAR_SPECS",
    "DATASET_SPECS",
    "DIGITS_SPLIT_SEED",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STREAMING",
    "ArrayDataset",
    "ChecksumError",
    "DeviceLoader",
    "StreamingLoader",
    "dataset_spec",
    "default_root",
    "imagenet_classes",
    "list_datasets",
    "load_cifar",
    "load_dataset",
    "load_digits_dataset",
    "load_idx_dataset",
    "load_imagenet",
    "md5sum",
    "random_crop",
    "random_flip",
    "read_idx",
    "verify_md5",
]

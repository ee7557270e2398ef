"""MNIST and Fashion-MNIST from the standard IDX files.

IDX format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE"): a 4-byte magic
number ``0x00 0x00 <type> <ndim>`` (type 0x08 = unsigned byte), then ``ndim`` big-endian uint32 sizes,
then the values in row-major (C) order. Images are ``0x00000803`` (N, 28, 28); labels ``0x00000801`` (N,).
Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``), as published by LeCun et al. and by
Zalando Research (Fashion-MNIST, https://github.com/zalandoresearch/fashion-mnist). Debian's package
``dataset-fashion-mnist`` installs the four ``.gz`` files under ``/usr/share/datasets/fashion-mnist/``.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from slac.data.base import ArrayDataset, check_labels, check_split, default_root
from slac.errors import ConfigError, DataError

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Published per-channel statistics of the training split, pixels scaled to [0, 1].
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Layouts other tools leave behind (torchvision: <root>/MNIST/raw, <root>/FashionMNIST/raw).
_SUBDIRS = (".", "raw", "MNIST/raw", "FashionMNIST/raw")

_HOW_TO_GET = {
    "mnist": "download the four IDX files from http://yann.lecun.com/exdb/mnist/ (or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/) into that directory, or pass root=",
    "fashion-mnist": "install the Debian package dataset-fashion-mnist (files under "
    f"{DEBIAN_FASHION_MNIST}), or download the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist into that directory, or pass root=",
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({error}); the file is corrupt, download it again") from error


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a uint8 array, checking it against its header.

    ``magic`` (e.g. ``IDX_IMAGES_MAGIC``) is the header the caller expects. Errors name the file: a bad
    magic number, a type other than unsigned byte, or a length that does not match the sizes in the
    header (truncated or padded file: expected and actual byte counts).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header (4-byte magic number)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataError(f"{path}: IDX magic number 0x{found:08x}, expected 0x{magic:08x}; not this IDX file")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(
            f"{path}: IDX magic number 0x{found:08x} is not an unsigned-byte IDX file (0x000008NN)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: {len(data)} bytes, expected at least {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path}: IDX file {what}: header gives shape {dims}, so {expected} bytes "
            f"(uncompressed) expected, found {len(data)}; download the file again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_file(root: Path, base: str, name: str) -> Path:
    for subdir in _SUBDIRS:
        for candidate in (root / subdir / base, root / subdir / f"{base}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{name}: no {base} or {base}.gz under {root} (looked in {', '.join(_SUBDIRS)}); {_HOW_TO_GET[name]}"
    )


def load_idx_dataset(
    name: str, root: str | Path | None = None, split: str = "train", num_classes: int = 10
) -> ArrayDataset:
    """Load ``mnist`` or ``fashion-mnist`` from IDX files under ``root`` as a (N, 1, 28, 28) uint8 dataset.

    With ``root=None``: Fashion-MNIST looks in ``/usr/share/datasets/fashion-mnist`` (Debian), then in
    ``default_root(name)``; MNIST in ``default_root("mnist")``. Nothing is downloaded.
    """
    check_split(split)
    if name not in _HOW_TO_GET:
        raise ConfigError(f"IDX datasets are {sorted(_HOW_TO_GET)}, got {name!r}")
    if root is None:
        candidates = [DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else []
        candidates.append(default_root(name))
        root = next((c for c in candidates if c.is_dir()), candidates[0])
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: data directory {root} does not exist; {_HOW_TO_GET[name]}")
    images_file, labels_file = (_find_file(root, base, name) for base in _FILES[split])
    images = read_idx(images_file, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_file, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{name}: {images_file} has {images.shape[0]} images "
            f"but {labels_file} has {labels.shape[0]} labels"
        )
    labels_t = torch.from_numpy(labels.astype(np.int64))
    check_labels(labels_t, num_classes, str(labels_file))
    mean, std = (MNIST_MEAN, MNIST_STD) if name == "mnist" else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return ArrayDataset(
        name=name,
        split=split,
        images=torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, H, W)
        labels=labels_t,
        num_classes=num_classes,
        mean=mean,
        std=std,
        max_value=255.0,
        padding=2,
        flip=False,
    )

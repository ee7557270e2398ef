"""Writers for tiny files in the exact on-disk formats (IDX, CIFAR pickles, CIFAR .tar.gz)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x000008<ndim>, big-endian uint32 sizes, then the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gzipped: bool) -> Path:
    data = idx_bytes(array)
    if gzipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(root: Path, n_train: int = 5, n_test: int = 3, gzipped: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gzipped)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gzipped)
        arrays[prefix] = (images, labels)
    return arrays


def cifar_batch(n: int, num_classes: int, label_key: bytes, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"filenames": [b"x.png"] * n,
    }


def cifar_files(name: str, n: int = 4, protocol: int = 2, label_max: int | None = None) -> dict[str, bytes]:
    """Member name -> pickled bytes of a tiny CIFAR-10 or CIFAR-100 folder."""
    if name == "cifar10":
        members, key, classes = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": n}
        meta_name = "batches.meta"
    else:
        members, key, classes = ["train", "test"], b"fine_labels", 100
        meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
        meta_name = "meta"
    files = {}
    for i, member in enumerate(members):
        batch = cifar_batch(n, classes, key, seed=i)
        if label_max is not None:
            batch[key][0] = label_max
        files[member] = pickle.dumps(batch, protocol=protocol)
    files[meta_name] = pickle.dumps(meta, protocol=protocol)
    return files


def write_cifar_dir(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for member, data in files.items():
        (folder / member).write_bytes(data)
    return folder


def write_cifar_tar(path: Path, folder_name: str, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{folder_name}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path

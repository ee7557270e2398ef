"""CIFAR-10 and CIFAR-100 from the standard python-pickle archives.

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout", python version): each batch file
is a pickled dict with ``b"data"``, a (N, 3072) uint8 array whose rows hold the red, green and blue
32x32 planes in row-major order, and ``b"labels"`` (CIFAR-10, list of 0..9) or ``b"fine_labels"``
(CIFAR-100, 0..99). CIFAR-10: ``cifar-10-batches-py/data_batch_1..5`` (train, 5 x 10000),
``test_batch``, ``batches.meta`` (``b"label_names"``). CIFAR-100: ``cifar-100-python/train`` (50000),
``test``, ``meta`` (``b"fine_label_names"``).

``root`` may be the extracted directory, a directory containing it, or the ``.tar.gz`` (or a directory
containing the ``.tar.gz``): archives are read in place, without extracting. Pickles are loaded with an
unpickler that only builds numpy arrays and plain containers, so a foreign pickle cannot run code.
``download=True`` fetches the official archive with urllib and checks its MD5; nothing is downloaded
unless asked.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from slac.data.base import ArrayDataset, check_labels, check_split, default_root
from slac.errors import ChecksumError, ConfigError, DataError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    url: str
    archive: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Published per-channel statistics of the training split, pixels scaled to [0, 1].
CIFAR_SPECS = {
    "cifar10": CifarSpec(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | Path, md5: str) -> None:
    """Raise ``ChecksumError`` naming the file and both digests unless ``path`` has MD5 ``md5``."""
    actual = md5sum(path)
    if actual != md5.lower():
        raise ChecksumError(
            f"{path}: MD5 {actual} but the published checksum is {md5}; the file is corrupt or "
            "incomplete: delete it and download it again"
        )


# Globals a CIFAR pickle may name: numpy's array reconstruction, under its numpy 1 and numpy 2 homes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith(("numpy.core", "numpy._core")):  # numpy 2 moved numpy.core to numpy._core
            suffix = module.split(".", 2)[2]
            try:
                module = importlib.import_module(f"numpy._core.{suffix}")
            except ImportError:  # numpy 1
                module = importlib.import_module(f"numpy.core.{suffix}")
            return getattr(module, name)
        return getattr(importlib.import_module(module), name)


def _unpickle(stream: IO[bytes], where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
    except Exception as error:  # any unpickling failure means a corrupt or foreign file
        raise DataError(
            f"{where}: not a readable CIFAR pickle ({type(error).__name__}: {error}); the file is corrupt, "
            "download the archive again"
        ) from error
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return obj


class _Source:
    """Opens member files of a CIFAR folder, extracted on disk or inside the .tar.gz."""

    def __init__(self, spec: CifarSpec, location: Path):
        self.spec, self.location = spec, location
        # Kept open across members and closed by close().
        self.tar = tarfile.open(location, "r:gz") if location.is_file() else None  # noqa: SIM115

    def open(self, member: str) -> tuple[IO[bytes], str]:
        if self.tar is None:
            path = self.location / member
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.spec.name}: {path} is missing; the {self.spec.folder} folder is incomplete "
                    f"(expected {', '.join(self.spec.train_files + self.spec.test_files)})"
                )
            return open(path, "rb"), str(path)
        name = f"{self.spec.folder}/{member}"
        where = f"{self.location}:{name}"
        try:
            extracted = self.tar.extractfile(name)
        except KeyError:
            raise FileNotFoundError(f"{self.spec.name}: {where} is not in the archive") from None
        if extracted is None:
            raise DataError(f"{where}: not a regular file")
        return io.BytesIO(extracted.read()), where

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _locate(spec: CifarSpec, root: Path) -> Path | None:
    """The extracted folder or the archive under ``root``, if any."""
    first = spec.train_files[0]
    for candidate in (root, root / spec.folder):
        if (candidate / first).is_file():
            return candidate
    for candidate in (root, root / spec.archive):
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
            return candidate
    return None


def download_archive(
    spec: CifarSpec, directory: Path, fetch: Callable[[str, str], Any] | None = None
) -> Path:
    """Fetch ``spec.url`` into ``directory`` (via a ``.part`` file) and verify its MD5."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / spec.archive
    if not target.is_file():
        partial = target.with_name(target.name + ".part")
        try:
            (fetch or urllib.request.urlretrieve)(spec.url, str(partial))
        except OSError as error:  # URLError, a refused or dropped connection, a full disk
            partial.unlink(missing_ok=True)
            reason = getattr(error, "reason", None) or error
            raise DataError(
                f"{spec.name}: could not download {spec.url} ({reason}); download it where there is a "
                f"connection and put {spec.archive} (or its extracted folder) into {directory}"
            ) from error
        verify_md5(partial, spec.md5)
        partial.replace(target)
    else:
        verify_md5(target, spec.md5)
    return target


def load_cifar(
    name: str, root: str | Path | None = None, split: str = "train", download: bool = False
) -> ArrayDataset:
    """Load ``cifar10`` or ``cifar100`` (fine labels) as a (N, 3, 32, 32) uint8 dataset.

    ``root`` defaults to ``default_root(name)``. With ``download=True`` and no data under ``root``, the
    official archive is fetched into ``root`` and checked against its published MD5.
    """
    check_split(split)
    if name not in CIFAR_SPECS:
        raise ConfigError(f"CIFAR datasets are {sorted(CIFAR_SPECS)}, got {name!r}")
    spec = CIFAR_SPECS[name]
    root = Path(root).expanduser() if root is not None else default_root(name)
    location = _locate(spec, root)
    if location is None:
        if not download:
            raise FileNotFoundError(
                f"{name}: no {spec.folder}/ folder or {spec.archive} under {root}; download {spec.url} "
                f"(MD5 {spec.md5}) into that directory, or pass download=True"
            )
        location = download_archive(spec, root if not root.name.endswith(".tar.gz") else root.parent)
    elif download and location.is_file():
        verify_md5(location, spec.md5)

    source = _Source(spec, location)
    try:
        images, labels = [], []
        for member in spec.train_files if split == "train" else spec.test_files:
            stream, where = source.open(member)
            with stream:
                batch = _unpickle(stream, where)
            if b"data" not in batch or spec.label_key not in batch:
                other = b"fine_labels" if spec.label_key == b"labels" else b"labels"
                hint = f" (it has {other!r}: is this the other CIFAR?)" if other in batch else ""
                raise DataError(f"{where}: keys {sorted(batch)} lack b'data' or {spec.label_key!r}{hint}")
            data = np.asarray(batch[b"data"])
            batch_labels = torch.as_tensor(np.asarray(batch[spec.label_key], dtype=np.int64))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"{where}: data must be (N, 3072) uint8, found {data.shape} {data.dtype}")
            if batch_labels.shape != (data.shape[0],):
                raise DataError(f"{where}: {data.shape[0]} rows of data but {batch_labels.numel()} labels")
            hint = "Is this the CIFAR-100 folder? use cifar100." if name == "cifar10" else ""
            check_labels(batch_labels, spec.num_classes, where, hint)
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # (N, 3, 32, 32)
            labels.append(batch_labels)
        classes = _class_names(source, spec)
    finally:
        source.close()
    return ArrayDataset(
        name=name,
        split=split,
        images=torch.cat(images),
        labels=torch.cat(labels),
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        max_value=255.0,
        padding=4,
        flip=True,
        classes=classes,
    )


def _class_names(source: _Source, spec: CifarSpec) -> tuple[str, ...] | None:
    """Class names from the meta file; ``None`` when it is absent (the labels do not need it)."""
    try:
        stream, where = source.open(spec.meta_file)
    except FileNotFoundError:
        return None
    with stream:
        meta = _unpickle(stream, where)
    names = meta.get(spec.names_key)
    if names is None or len(names) != spec.num_classes:
        raise DataError(f"{where}: expected {spec.num_classes} names under {spec.names_key!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)

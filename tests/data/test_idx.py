"""MNIST / Fashion-MNIST IDX reading on tiny files written in the exact format."""

import gzip

import numpy as np
import pytest
import torch

from slac.data import IDX_IMAGES_MAGIC, load_dataset, read_idx
from slac.data.mnist import DEBIAN_FASHION_MNIST

from .helpers import idx_bytes, write_idx, write_mnist


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path, name, gzipped):
    arrays = write_mnist(tmp_path, n_train=5, n_test=3, gzipped=gzipped)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(name, root=tmp_path, split=split)
        images, labels = arrays[prefix]
        assert ds.images.shape == (len(labels), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
        assert ds.num_classes == 10 and ds.padding == 2 and not ds.flip
    assert load_dataset(name, root=tmp_path).mean == ((0.1307,) if name == "mnist" else (0.2860,))


def test_torchvision_raw_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    assert len(load_dataset("mnist", root=tmp_path)) == 5


def test_missing_directory_names_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*yann.lecun"):
        load_dataset("mnist", root=missing)


def test_missing_file_names_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    load_dataset("mnist", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path, split="test")


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "raw"])
def test_truncated_file(tmp_path, gzipped):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100]
    path = tmp_path / "train-images-idx3-ubyte"
    if gzipped:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    expected = 16 + 4 * 28 * 28
    with pytest.raises(
        ValueError, match=rf"train-images-idx3-ubyte.*truncated.*{expected} bytes.*found {expected - 100}"
    ):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_bad_magic(tmp_path):
    path = write_idx(tmp_path / "x-idx1-ubyte", np.zeros(3, np.uint8), gzipped=False)
    with pytest.raises(ValueError, match=r"x-idx1-ubyte.*0x00000801.*expected 0x00000803"):
        read_idx(path, IDX_IMAGES_MAGIC)
    path.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(12))  # float32 type code
    with pytest.raises(ValueError, match=r"not an unsigned-byte"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz.*corrupt"):
        read_idx(path)


def test_label_range_and_count(tmp_path):
    write_mnist(tmp_path, n_train=5, gzipped=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 10], np.uint8), gzipped=False)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: labels range over 0\.\.10.*10 classes"):
        load_dataset("mnist", root=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8), gzipped=False)
    with pytest.raises(ValueError, match=r"5 images but .* 3 labels"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_debian_fashion_mnist():
    ds = load_dataset("fashion-mnist", split="test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 1000))

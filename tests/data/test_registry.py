"""The registry, the scikit-learn digits and the ImageNet folder checks."""

import importlib.util
import sys

import pytest
import torch

from slac.data import DIGITS_SPLIT_SEED, imagenet_classes, list_datasets, load_dataset

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def test_list_and_unknown_name():
    names = list_datasets()
    assert names == sorted(["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet"])
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known datasets: cifar10, cifar100, digits"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", split="val")


def test_digits_split_sizes_and_determinism():
    assert DIGITS_SPLIT_SEED == 0
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 16 and train.max_value == 16
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    assert test.labels.bincount().min() >= 35  # stratified: 36 or 35 per class
    again = load_dataset("digits", split="train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert train.mean == test.mean  # statistics of the training split for both
    pixels = train.images.double() / 16
    assert train.mean[0] == pytest.approx(pixels.mean().item()) and train.std[0] == pytest.approx(
        pixels.std(unbiased=False).item()
    )
    # The two splits partition the 1797 images (no image lost or duplicated, by multiset of rows).
    from sklearn.datasets import load_digits

    everything = torch.cat([train.images, test.images]).flatten(1).tolist()
    assert sorted(map(tuple, everything)) == sorted(
        map(tuple, load_digits().images.astype(int).reshape(-1, 64).tolist())
    )
    assert not train.flip and train.padding == 1


def make_tree(root, train_classes, val_classes):
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            (root / split / c / "x.JPEG").write_bytes(b"")


def test_imagenet_class_mismatch_checked_without_torchvision(tmp_path):
    make_tree(tmp_path, ["n01", "n02", "n03"], ["n01", "n02", "n04"])
    with pytest.raises(
        ValueError, match=r"different class folders.*only in train: \['n03'\].*only in val: \['n04'\]"
    ):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere/train does not exist"):
        load_dataset("imagenet", root=tmp_path / "nowhere")


def test_imagenet_missing_torchvision(tmp_path, monkeypatch):
    make_tree(tmp_path, ["n01", "n02"], ["n01", "n02"])
    assert imagenet_classes(tmp_path) == ["n01", "n02"]
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match=r"pip install slac\[imagenet\]"):
        load_dataset("imagenet", root=tmp_path, split="test")


@pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision not installed (optional: pip install slac[imagenet])"
)
def test_imagenet_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / split / c / "a.JPEG")
    ds = load_dataset("imagenet", root=tmp_path, split="test", image_size=32)
    image, label = ds[0]
    assert ds.classes == ["n01", "n02"] and image.shape == (3, 32, 32) and label == 0

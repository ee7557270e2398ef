"""ImageNet (ILSVRC-2012) in the ImageFolder layout, streamed from disk through torchvision.

Layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the validation images sorted into
class folders, e.g. with the ``valprep.sh`` script commonly used with the PyTorch ImageNet example).
Split ``"test"`` means ``val`` (the test labels were never published). torchvision is optional
(``pip install slac[imagenet]``) and imported only when the dataset is built; the layout checks run
first, without it. Transforms follow the standard ResNet recipe (random-resized crop 224 and flip for
training; resize 256 and centre crop 224 for evaluation) with the usual ImageNet mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slac.data.base import check_split, default_root
from slac.errors import DataError, MissingDependencyError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SPLIT_DIRS = {"train": "train", "test": "val"}


def imagenet_classes(root: str | Path) -> list[str]:
    """The sorted class folders, after checking that ``train`` and ``val`` hold the same ones."""
    root = Path(root).expanduser()
    found = {}
    for split_dir in ("train", "val"):
        directory = root / split_dir
        if not directory.is_dir():
            raise FileNotFoundError(
                f"imagenet: {directory} does not exist; expected {root}/train/<class>/*.JPEG and "
                f"{root}/val/<class>/*.JPEG (download ILSVRC-2012 from https://image-net.org and sort the "
                "validation images into class folders)"
            )
        found[split_dir] = sorted(p.name for p in directory.iterdir() if p.is_dir())
        if not found[split_dir]:
            raise FileNotFoundError(f"imagenet: {directory} has no class folders")
    if found["train"] != found["val"]:
        only_train = sorted(set(found["train"]) - set(found["val"]))
        only_val = sorted(set(found["val"]) - set(found["train"]))
        raise DataError(
            f"imagenet: {root}/train and {root}/val have different class folders "
            f"({len(found['train'])} vs {len(found['val'])}; only in train: {only_train[:5]}, "
            f"only in val: {only_val[:5]}); class indices would not agree between the splits"
        )
    return found["train"]


def default_transform(split: str, image_size: int = 224) -> Any:
    import torchvision.transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if split == "train":
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    return T.Compose(
        [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), T.ToTensor(), normalize]
    )


def load_imagenet(
    root: str | Path | None = None, split: str = "train", transform: Any = None, image_size: int = 224
) -> Any:
    """A ``torchvision.datasets.ImageFolder`` over ``root/train`` or ``root/val`` (for ``split="test"``).

    Raises ``FileNotFoundError`` for a missing folder, ``ValueError`` when train and val disagree on the
    classes, and ``ImportError`` (saying ``pip install slac[imagenet]``) without torchvision.
    """
    check_split(split)
    root = Path(root).expanduser() if root is not None else default_root("imagenet")
    imagenet_classes(root)
    try:
        from torchvision.datasets import ImageFolder
    except ImportError as error:
        raise MissingDependencyError(
            "the imagenet dataset needs torchvision: pip install slac[imagenet] (or pip install torchvision)"
        ) from error
    if transform is None:
        transform = default_transform(split, image_size)
    return ImageFolder(str(root / _SPLIT_DIRS[split]), transform=transform)

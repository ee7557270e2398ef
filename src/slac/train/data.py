"""The data side of a run: the splits a recipe names, or data passed from Python, as loaders for training
and evaluation.

In-memory datasets (digits, MNIST, Fashion-MNIST, CIFAR, ``(images, labels)`` tensors) go to
``slac.data.DeviceLoader``: the split lives on the training device, crop and flip run there, no worker
processes. Streaming datasets (ImageNet, map-style Datasets passed from Python) go through
``slac.data.StreamingLoader``: worker processes and a resumable, sharded sampler. Both loaders have the same
interface: iteration yields (images, labels) on the device, ``len()`` is batches per epoch,
``state_dict``/``load_state_dict`` resume inside an epoch.

Data passed from Python (``as_dataset``): ``(images, labels)`` tensors (held as given: float images, no
scaling, no augmentation, since slac cannot know which crops and flips keep a label), a
``slac.data.ArrayDataset``, or any map-style ``torch.utils.data.Dataset`` of (image, label) pairs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from slac.data import STREAMING, ArrayDataset, DeviceLoader, StreamingLoader, load_dataset
from slac.train.checkpoint import isolated_rng
from slac.train.config import ConfigError, TrainConfig
from slac.train.distributed import Distributed

__all__ = [
    "DataBundle",
    "as_dataset",
    "build_data",
    "dataset_classes",
    "dataset_image_shape",
    "evaluation_loader",
    "load_split",
    "recalibration_loader",
    "recalibration_split",
]

# The recalibration batches are drawn by a generator of their own, seeded from the run's seed with this
# offset, so that they are the same at every evaluation and in `slac eval`, and training draws nothing less.
RECALIBRATION_SEED_OFFSET = 7919


@dataclass
class DataBundle:
    train: Any  # DeviceLoader | StreamingLoader
    test: Any  # DeviceLoader | StreamingLoader (this process's shard of the test split)
    image_shape: tuple[int, int, int]
    num_classes: int
    train_size: int  # images per epoch, all processes together
    test_size: int
    recalibration: Any = None  # () -> the loader of the BatchNorm recalibration batches, rewound; or None
    splits: tuple[Any, Any] = ()  # the (train, test) datasets as loaded or given, before train_subset


def load_split(config: TrainConfig, split: str, augmented: bool = True) -> Any:
    """The recipe's ``split``. ``augmented=False`` asks a streaming dataset for its training images under
    the evaluation transform (the in-memory datasets are augmented by their loader, not here)."""
    kwargs: dict[str, Any] = {}
    if config.dataset in STREAMING and split == "train" and not augmented:
        from slac.data.imagenet import default_transform

        kwargs["transform"] = default_transform("test")
    if config.download:  # the CIFAR datasets only (TrainConfig checks)
        kwargs["download"] = True
    return load_dataset(config.dataset, config.data_root, split, **kwargs)


def _subset(dataset: ArrayDataset, start: int, stop: int) -> ArrayDataset:
    return dataclasses.replace(dataset, images=dataset.images[start:stop], labels=dataset.labels[start:stop])


def _scored(size: int, limit: int | None) -> int:
    """How many of a split's ``size`` images a run is scored on: the first ``limit`` (all when None)."""
    return size if limit is None else min(limit, size)


def _shard_bounds(size: int, distributed: Distributed) -> tuple[int, int]:
    """Contiguous, nearly equal shard of ``size`` items for this process (evaluation)."""
    return (
        size * distributed.rank // distributed.world_size,
        size * (distributed.rank + 1) // distributed.world_size,
    )


def build_data(
    config: TrainConfig,
    distributed: Distributed,
    device: torch.device,
    log: Any = print,
    splits: tuple[Any, Any] | None = None,
) -> DataBundle:
    """Loaders of the recipe's dataset (or of ``splits``, a (train, test) pair of ``ArrayDataset``s or
    map-style Datasets given from Python): the training split sharded per batch, the test split per process.
    ArrayDatasets live on the device (``DeviceLoader``); other datasets stream (``StreamingLoader``)."""
    train, test = splits if splits is not None else (load_split(config, "train"), load_split(config, "test"))
    if _streams(train):
        bundle = _build_streaming(config, distributed, device, train, test, given=splits is not None)
        return dataclasses.replace(bundle, splits=(train, test))
    loaded = (train, test)
    for key, split in (("train_subset", train), ("test_subset", test)):
        size = getattr(config, key)
        if size is not None and size > len(split):
            raise ConfigError(
                f"{key}: {size} is more than the {len(split)} images of the {split.split} split"
            )
    train = _train_subset(config, train)
    drop_last = config.drop_last
    remainder = len(train) % config.batch_size
    if distributed.enabled and 0 < remainder < distributed.world_size and not drop_last:
        log(
            f"note: the last batch ({remainder} images) is smaller than the {distributed.world_size} "
            "processes; it is dropped (drop_last) so that no process gets an empty batch"
        )
        drop_last = True
    train_loader = DeviceLoader(
        train,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=drop_last,
        augment=config.augment,
        device=device,
        seed=config.seed,
        rank=distributed.rank,
        world_size=distributed.world_size,
        dtype=getattr(torch, config.dtype),
    )
    if len(train_loader) == 0:
        why = (
            f"the {len(train)} training images"
            + (f" (train_subset {config.train_subset})" if config.train_subset is not None else "")
            + (" are fewer than one batch" if drop_last else " are none")
            + f" of {config.batch_size}"
            + (" and drop_last drops the smaller last batch" if drop_last else "")
        )
        advice = "lower batch_size or use more images" if len(train) else "give a training split with images"
        raise ConfigError(f"no training step per epoch: {why}; {advice}")
    test_loader = evaluation_loader(config, test, device, config.test_subset, distributed)
    used = len(train_loader) * config.batch_size if drop_last else len(train)
    test_size = _scored(len(test), config.test_subset)
    recalibration = (
        _rewinding(recalibration_loader(config, train, device, distributed))
        if config.bn_recalibration
        else None
    )
    return DataBundle(
        train_loader,
        test_loader,
        train.image_shape,
        dataset_classes(train, test),
        used,
        test_size,
        recalibration,
        loaded,
    )


def recalibration_loader(
    config: TrainConfig, train: Any, device: torch.device, distributed: Distributed | None = None
) -> Any:
    """A fresh loader of the batches that BatchNorm statistics are recomputed from: training images
    (``train``: the run's training split, ``train_subset`` applied) without augmentation, in batches of the
    recipe's size split over the processes as in training, in an order drawn once from the run's seed, so
    that every call yields the same batches (iterate at most ``config.bn_recalibration`` of them)."""
    distributed = distributed or Distributed()
    seed = config.seed + RECALIBRATION_SEED_OFFSET
    dtype = getattr(torch, config.dtype)
    drop_last = len(train) >= config.batch_size  # batches of one size, unless the split is smaller
    if _streams(train):
        return StreamingLoader(
            train, config.batch_size, True, device, seed, config.workers, distributed.rank,
            distributed.world_size, drop_last=drop_last, dtype=dtype,
        )  # fmt: skip
    return DeviceLoader(
        train,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=drop_last,
        augment=False,
        device=device,
        seed=seed,
        rank=distributed.rank,
        world_size=distributed.world_size,
        dtype=dtype,
    )


def evaluation_loader(
    config: TrainConfig,
    dataset: Any,
    device: torch.device,
    limit: int | None = None,
    distributed: Distributed | None = None,
) -> Any:
    """In order, without augmentation, the first ``limit`` images of ``dataset`` (all when None; more
    than there are means all), this process's contiguous share of them: the images a run is scored on,
    the same in training, ``slac eval`` and the plots."""
    distributed = distributed or Distributed()
    start, stop = _shard_bounds(_scored(len(dataset), limit), distributed)
    dtype = getattr(torch, config.dtype)
    if _streams(dataset):
        subset = torch.utils.data.Subset(dataset, range(start, stop))
        return StreamingLoader(
            subset, config.eval_batch_size, False, device, config.seed, config.workers, dtype=dtype
        )
    return DeviceLoader(
        _subset(dataset, start, stop), config.eval_batch_size, shuffle=False, device=device, dtype=dtype
    )


def _build_streaming(
    config: TrainConfig, distributed: Distributed, device: torch.device, train: Any, test: Any, given: bool
) -> DataBundle:
    train = _train_subset(config, train)
    common = {
        "device": device,
        "seed": config.seed,
        "workers": config.workers,
        "dtype": getattr(torch, config.dtype),
    }
    train_loader = StreamingLoader(
        train,
        config.batch_size,
        shuffle=True,
        rank=distributed.rank,
        world_size=distributed.world_size,
        drop_last=config.drop_last,
        **common,
    )
    test_loader = evaluation_loader(config, test, device, config.test_subset, distributed)
    test_size = _scored(len(test), config.test_subset)
    recalibration = None
    if config.bn_recalibration:
        # a dataset given from Python is recalibrated on as given (its own transform)
        plain = train if given else recalibration_split(config)
        recalibration = _rewinding(recalibration_loader(config, plain, device, distributed))

    classes = len(test.classes) if hasattr(test, "classes") else dataset_classes(train, test)
    return DataBundle(
        train_loader, test_loader, dataset_image_shape(train), classes, len(train), test_size, recalibration
    )


def _rewinding(loader: Any) -> Any:
    """``() -> loader`` rewound to where it started, so that every call yields the same batches without
    building the loader (and its copy of the split on the device) again."""
    start = copy.deepcopy(loader.state_dict())

    def rewound() -> Any:
        loader.load_state_dict(copy.deepcopy(start))
        return loader

    return rewound


def recalibration_split(config: TrainConfig) -> Any:
    """The training images of a run (``train_subset`` applied) without augmentation: what
    ``recalibration_loader`` draws from when the run's data bundle is not at hand (``slac eval``)."""
    return _train_subset(config, load_split(config, "train", augmented=False))


def _streams(dataset: Any) -> bool:
    """Whether ``dataset`` goes through the streaming loader: anything but an in-memory ArrayDataset (the
    disk-backed registry datasets, ImageNet, and map-style Datasets given from Python)."""
    return not isinstance(dataset, ArrayDataset)


def _train_subset(config: TrainConfig, train: Any) -> Any:
    """The first ``train_subset`` images of the training split (all when None), for either kind of data."""
    if config.train_subset is None:
        return train
    if isinstance(train, ArrayDataset):
        return _subset(train, 0, config.train_subset)
    return torch.utils.data.Subset(train, range(min(config.train_subset, len(train))))


def as_dataset(data: Any, what: str) -> Any:
    """``(images, labels)`` tensors as an ``ArrayDataset`` (held as given: no scaling), an ArrayDataset or a
    map-style Dataset as it is; ``what`` names the argument in errors."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, labels = data
        if images.dim() != 4 or not images.is_floating_point():
            raise ConfigError(
                f"{what}: images must be a float tensor (N, C, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ConfigError(
                f"{what}: labels must be integers of shape ({images.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.numel() and labels.min() < 0:
            raise ConfigError(f"{what}: labels must be class indices >= 0, got {int(labels.min())}")
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
            with isolated_rng():  # a random transform must not move the run's generators
                counts.append(max((int(dataset[i][1]) for i in range(len(dataset))), default=-1) + 1)
    return max(counts)


def dataset_image_shape(dataset: Any) -> tuple[int, int, int]:
    """(C, H, W) of a split's images (an empty Dataset from Python has none: an error)."""
    if isinstance(dataset, ArrayDataset):
        return dataset.image_shape
    if len(dataset) == 0:
        raise ConfigError(f"{getattr(dataset, 'split', 'a split')}: the dataset has no images")
    with isolated_rng():  # a random transform must not move the run's generators
        return tuple(dataset[0][0].shape)

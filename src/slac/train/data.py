"""The data side of a run: the splits a recipe names, as loaders for training and evaluation.

In-memory datasets (digits, MNIST, Fashion-MNIST, CIFAR) go to ``slac.data.DeviceLoader``: the split
lives on the training device, crop and flip run there, no worker processes. Streaming datasets
(ImageNet) go through a ``torch.utils.data.DataLoader`` with worker processes and ``StreamingLoader``'s
resumable, sharded sampler. Both loaders have the same interface: iteration yields (images, labels) on
the device, ``len()`` is batches per epoch, ``state_dict``/``load_state_dict`` resume inside an epoch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from slac.data import STREAMING, ArrayDataset, DeviceLoader, load_dataset
from slac.train.config import ConfigError, TrainConfig
from slac.train.distributed import Distributed
from slac.train.user import dataset_classes

__all__ = [
    "DataBundle",
    "StreamingLoader",
    "build_data",
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


def load_split(config: TrainConfig, split: str, augmented: bool = True) -> Any:
    """The recipe's ``split``. ``augmented=False`` asks a streaming dataset for its training images under
    the evaluation transform (the in-memory datasets are augmented by their loader, not here)."""
    kwargs: dict[str, Any] = {}
    if config.dataset in STREAMING and split == "train" and not augmented:
        from slac.data.imagenet import default_transform

        kwargs["transform"] = default_transform("test")
    if config.download:
        if not config.dataset.startswith("cifar"):
            raise ConfigError(f"download: only the CIFAR datasets can be downloaded, not {config.dataset!r}")
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
        return _build_streaming(config, distributed, device, train, test, given=splits is not None)
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
        raise ConfigError(
            f"no training step per epoch: {len(train)} training images (train_subset) in batches of "
            f"{config.batch_size} with drop_last; lower batch_size or use more images"
        )
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


class _ResumableShardSampler(torch.utils.data.Sampler):
    """Indices of one epoch: a permutation seeded by (seed, epoch) when shuffling, this process's
    every ``world_size``-th index, starting after ``skip`` indices already consumed."""

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        usable = self.size - self.size % self.world_size  # equal shards
        return order[self.rank : usable : self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return len(self.indices()) - self.skip


class StreamingLoader:
    """Batches of a disk-backed dataset through worker processes, resumable inside an epoch."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        seed: int,
        workers: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} must be divisible by the {world_size} processes")
        self.dataset, self.device = dataset, device
        self.per_process = batch_size // world_size
        self.drop_last = drop_last
        self.sampler = _ResumableShardSampler(len(dataset), shuffle, seed, rank, world_size)
        self.workers, self.dtype = workers, dtype
        self.epoch, self._batches_done = 0, 0

    def __len__(self) -> int:
        self.sampler.epoch = self.epoch
        count = len(self.sampler.indices())
        return count // self.per_process if self.drop_last else -(-count // self.per_process)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch = self.epoch
        self.sampler.skip = self._batches_done * self.per_process
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.per_process,
            sampler=self.sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
            persistent_workers=False,
        )
        for images, labels in loader:
            self._batches_done += 1
            images = images.to(self.device, non_blocking=True).to(self.dtype)
            yield images, labels.to(self.device, non_blocking=True)
        self.epoch += 1
        self._batches_done = 0
        self.sampler.skip = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self._batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self._batches_done = state["epoch"], state["batch"]


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
    image = test[0][0] if len(test) else torch.empty(3, 224, 224)
    test_size = _scored(len(test), config.test_subset)
    recalibration = None
    if config.bn_recalibration:
        # a dataset given from Python is recalibrated on as given (its own transform)
        plain = train if given else recalibration_split(config)
        recalibration = _rewinding(recalibration_loader(config, plain, device, distributed))

    classes = len(test.classes) if hasattr(test, "classes") else dataset_classes(train, test)
    return DataBundle(
        train_loader, test_loader, tuple(image.shape), classes, len(train), test_size, recalibration
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

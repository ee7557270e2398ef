"""Batches of a disk-backed dataset (ImageNet, any map-style ``torch.utils.data.Dataset``) through worker
processes, sharded over distributed processes, resumable inside an epoch: the streaming counterpart of
``DeviceLoader`` with the same interface (iteration yields (images, labels) on the device, ``len()`` is
batches per epoch, ``state_dict``/``load_state_dict`` resume inside an epoch).

Resuming is exact in the order of the images; with ``workers > 0`` the random augmentations after the
resume point differ (each DataLoader iteration seeds its workers afresh).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from slac.errors import ConfigError

__all__ = ["StreamingLoader"]


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

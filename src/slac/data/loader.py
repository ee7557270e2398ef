"""On-device batching and augmentation for in-memory datasets (airbench style: no worker processes).

``DeviceLoader`` puts the whole split on the device once as a normalised float tensor and, each epoch,
yields shuffled ``(images, labels)`` batches with random crops (zero-pad by ``padding`` pixels in pixel
space, i.e. black, then take an HxW window at a random offset) and random horizontal flips, all done
with batched tensor ops on the device. Defaults come from the dataset: padding 4 for CIFAR (32x32),
2 for MNIST/Fashion-MNIST (28x28), 1 for the 8x8 digits; flips only for CIFAR (a flipped digit is a
different or no digit).

Randomness comes from one CPU ``torch.Generator`` seeded by ``seed``; an epoch's permutation, crop
offsets and flips are all drawn at its start, so the batches depend only on the seed and the epoch,
not on the device. ``state_dict()``/``load_state_dict()`` save and restore the generator, the epoch
counter and the position inside the current epoch, so a resumed run sees exactly the remaining batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from slac.data.base import ArrayDataset
from slac.errors import ConfigError


def random_crop(
    images: torch.Tensor, padding: int, offsets: torch.Tensor, fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Crop each image (B, C, H, W) at its own offset into the image padded by ``padding`` with ``fill``.

    ``offsets`` (B, 2) long holds (row, column) offsets in ``0..2*padding`` into the padded image; an
    offset equal to ``padding`` returns the image unchanged. ``fill`` is a scalar or (C,) per-channel
    value. Vectorised: one padded copy of the batch, then one gather with per-sample index grids.
    """
    if padding == 0:
        return images
    batch, channels, height, width = images.shape
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(-1, 1, 1)  # (C|1, 1, 1)
    padded = fill.expand(
        batch, channels, height + 2 * padding, width + 2 * padding
    ).clone()  # (B, C, H+2p, W+2p)
    padded[:, :, padding : padding + height, padding : padding + width] = images  # exact: no arithmetic
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
    return padded[
        torch.arange(batch, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]  # (B, C, H, W)


def random_crop_reference(
    images: torch.Tensor, padding: int, offsets: torch.Tensor, fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Plain per-sample loop form of ``random_crop``: the oracle for tests."""
    out = torch.empty_like(images)
    fill = torch.as_tensor(fill, dtype=images.dtype).reshape(-1, 1, 1)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        canvas = fill.expand(
            images.shape[1], images.shape[2] + 2 * padding, images.shape[3] + 2 * padding
        ).clone()
        canvas[:, padding : padding + images.shape[2], padding : padding + images.shape[3]] = images[i]
        out[i] = canvas[:, dy : dy + images.shape[2], dx : dx + images.shape[3]]
    return out


def random_flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Reverse the width axis of the images (B, C, H, W) where ``flips`` (B,) bool is true."""
    return torch.where(flips.to(images.device)[:, None, None, None], images.flip(-1), images)


class DeviceLoader:
    """Batches of a whole in-memory ``ArrayDataset`` held on ``device``, with on-device augmentation.

    Args:
        dataset: the split; its ``mean``/``std``/``max_value`` normalise it, its ``padding``/``flip``
            give the augmentation defaults.
        batch_size: images per batch; the last one is smaller unless ``drop_last``.
        shuffle: a new random order each epoch.
        augment: random crop (if ``padding > 0``) and random horizontal flip (if ``flip``).
        device, dtype: where and in which float type the normalised images live.
        seed: seeds the loader's CPU generator (order and augmentation).
        padding, flip: override the dataset's defaults.
        rank, world_size: distributed training: this process takes images ``rank::world_size`` of each
            batch of ``batch_size`` (the global batch), so the processes' shards make up the batch a
            single process would see; every process must use the same seed.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        padding: int | None = None,
        flip: bool | None = None,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if batch_size < world_size:
            raise ConfigError(
                f"batch_size {batch_size} is smaller than world_size {world_size}: "
                "a process would get no images"
            )
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        self.padding = dataset.padding if padding is None else padding
        self.flip = dataset.flip if flip is None else flip
        if self.padding < 0:
            raise ConfigError(f"padding must be >= 0, got {self.padding}")
        self.device = torch.device(device)
        mean = torch.tensor(dataset.mean, dtype=dtype, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std, dtype=dtype, device=self.device).view(1, -1, 1, 1)
        pixels = dataset.images.to(self.device, dtype) / dataset.max_value  # (N, C, H, W) in [0, 1]
        self.images = (pixels - mean) / std  # (N, C, H, W), normalised
        self.labels = dataset.labels.to(self.device)  # (N,)
        self.fill = (-mean / std).flatten()  # (C,): black in normalised units, the crop's padding
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0  # epochs completed
        self._epoch_start: torch.Tensor | None = None  # generator state when the epoch in progress began
        self._batches_done = 0  # batches of the epoch in progress already handed out
        self._skip = 0  # batches to skip after load_state_dict

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _draw_epoch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        offsets = flips = None
        if self.augment and self.padding > 0:
            offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=self.generator)
        if self.augment and self.flip:
            flips = torch.rand(n, generator=self.generator) < 0.5
        return order, offsets, flips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._epoch_start is not None and self._skip == 0:
            self.epoch += 1  # the previous epoch was abandoned part-way: start the next one
            self._epoch_start = None
        if self._epoch_start is not None:  # resuming inside an epoch: redraw it from its start
            self.generator.set_state(self._epoch_start)
        self._epoch_start = self.generator.get_state()
        order, offsets, flips = self._draw_epoch()
        order = order.to(self.device)
        start_batch, self._skip = self._skip, 0
        for b in range(start_batch, len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, order.numel())
            shard = slice(lo + self.rank, hi, self.world_size)  # this process's part of the global batch
            index = order[shard]
            images = self.images[index]  # (B, C, H, W)
            if offsets is not None:
                images = random_crop(images, self.padding, offsets[shard], self.fill)
            if flips is not None:
                images = random_flip(images, flips[shard])
            self._batches_done = b + 1
            yield images, self.labels[index]
        self.epoch += 1
        self._epoch_start, self._batches_done = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Seed, completed epochs, generator state, and the position inside an epoch in progress."""
        in_epoch = self._epoch_start is not None
        if in_epoch and self._batches_done >= len(self) and self._skip == 0:
            # Every batch handed out: the epoch is over even if the loop has not seen StopIteration,
            # and the generator has already drawn it.
            return {
                "seed": self.seed,
                "epoch": self.epoch + 1,
                "batch": 0,
                "generator": self.generator.get_state(),
            }
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "batch": self._batches_done if in_epoch else 0,
            "generator": (self._epoch_start if in_epoch else self.generator.get_state()).clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``: the next iteration yields the batches the saved loader would have."""
        self.seed, self.epoch = state["seed"], state["epoch"]
        self.generator.set_state(state["generator"])
        if state["batch"] > 0:
            self._epoch_start, self._skip = state["generator"].clone(), state["batch"]
        else:
            self._epoch_start, self._skip = None, 0
        self._batches_done = state["batch"]

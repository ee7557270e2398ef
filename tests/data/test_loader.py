"""DeviceLoader: normalisation, on-device crop and flip, reproducibility and resume."""

import pytest
import torch

from slac.data import ArrayDataset, DeviceLoader, load_dataset, random_crop, random_flip
from slac.data.loader import random_crop_reference


def tiny_rgb(n=10, size=32):
    gen = torch.Generator().manual_seed(1)
    return ArrayDataset(
        name="tiny", split="train",
        images=torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8),
        labels=torch.arange(n) % 10, num_classes=10,
        mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), padding=4, flip=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="train")


def epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batch_shapes_and_lengths(digits):
    loader = DeviceLoader(digits, batch_size=500, augment=True)
    batches = epoch(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [500, 500, 437]
    assert all(x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 for x, _ in batches)
    assert len(DeviceLoader(digits, batch_size=500, drop_last=True)) == 2
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels.sort().values, digits.labels.sort().values)  # each sample once per epoch


def test_normalisation(digits):
    images = torch.cat([x for x, _ in DeviceLoader(digits, batch_size=1000, shuffle=False)])
    assert abs(images.mean().item()) < 1e-5 and images.std(unbiased=False).item() == pytest.approx(
        1, abs=1e-5
    )
    ds = tiny_rgb()
    x, _ = next(iter(DeviceLoader(ds, batch_size=10, shuffle=False)))
    expected = (ds.images.float() / 255 - torch.tensor(ds.mean).view(1, 3, 1, 1)) / torch.tensor(ds.std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(x, expected)


def test_crop_matches_loop_reference_and_identity():
    images = torch.randn(7, 3, 5, 6)
    offsets = torch.randint(0, 2 * 2 + 1, (7, 2))
    fill = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(
        random_crop(images, 2, offsets, fill), random_crop_reference(images, 2, offsets, fill)
    )
    centre = torch.full((7, 2), 2)
    assert torch.equal(random_crop(images, 2, centre, fill), images)
    shifted = random_crop(images, 2, torch.tensor([[0, 4]] * 7), fill)  # 2 rows down, 2 columns left
    assert torch.equal(shifted[:, :, 2:, :4], images[:, :, :3, 2:])
    assert torch.equal(shifted[:, :, :2], fill.view(1, 3, 1, 1).expand(7, 3, 2, 6))


def test_flip_reverses_width():
    images = torch.randn(4, 2, 3, 5)
    flips = torch.tensor([True, False, True, False])
    out = random_flip(images, flips)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    assert torch.equal(out[2, :, :, 0], images[2, :, :, -1])


def test_crop_padding_is_black():
    ds = tiny_rgb(n=64)
    loader = DeviceLoader(ds, batch_size=64, augment=True, flip=False, shuffle=False, seed=3)
    x, _ = next(iter(loader))
    black = loader.fill.view(1, 3, 1)
    # Every image with a row offset of 0 has 4 padded rows on top, all black.
    top = x[:, :, 0, :]  # (B, C, W)
    assert (top == black).all(dim=(1, 2)).any()


def test_augment_defaults_no_flip_for_digits(digits):
    loader = DeviceLoader(digits, batch_size=64, augment=True, seed=0)
    assert loader.padding == 1 and loader.flip is False
    _, offsets, flips = loader._draw_epoch()
    assert flips is None and offsets is not None and offsets.max() == 2
    cifar_like = DeviceLoader(tiny_rgb(), batch_size=4, augment=True)
    assert cifar_like.padding == 4 and cifar_like.flip is True
    plain = DeviceLoader(digits, batch_size=64, augment=False)
    assert plain._draw_epoch()[1:] == (None, None)


def test_seed_reproducibility(digits):
    a = epoch(DeviceLoader(digits, batch_size=300, augment=True, seed=5))
    b = epoch(DeviceLoader(digits, batch_size=300, augment=True, seed=5))
    c = epoch(DeviceLoader(digits, batch_size=300, augment=True, seed=6))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])
    loader = DeviceLoader(digits, batch_size=300, augment=True, seed=5)
    first, second = epoch(loader), epoch(loader)
    assert not torch.equal(first[0][1], second[0][1]) and loader.epoch == 2


@pytest.mark.parametrize("stop_after", [0, 2, 5], ids=["epoch-boundary", "mid-epoch", "after-last-batch"])
def test_state_dict_resume(digits, stop_after):
    def make():
        return DeviceLoader(digits, batch_size=300, augment=True, seed=11)

    reference = make()
    full = epoch(reference) + epoch(reference)  # two epochs, 5 batches each
    original = make()
    seen = epoch(original)  # epoch 0 complete
    it = iter(original)
    seen += [tuple(t.clone() for t in next(it)) for _ in range(stop_after)]
    state = original.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = epoch(resumed)
    if stop_after == 5:  # the whole epoch was handed out: resume starts the next one
        assert state["epoch"] == 2 and state["batch"] == 0
        assert len(seen) + len(rest) == 15
        return
    seen += rest
    assert len(seen) == len(full) and resumed.epoch == 2
    for (x1, y1), (x2, y2) in zip(seen, full, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert resumed.state_dict()["epoch"] == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches():
    ds = tiny_rgb(n=50)
    cpu = epoch(DeviceLoader(ds, batch_size=16, augment=True, seed=2))
    gpu = epoch(DeviceLoader(ds, batch_size=16, augment=True, seed=2, device="cuda"))
    for (x1, y1), (x2, y2) in zip(cpu, gpu, strict=True):
        assert x2.is_cuda and torch.equal(y1, y2.cpu())
        torch.testing.assert_close(x1, x2.cpu())


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_make_up_the_single_process_batches(world_size):
    """Distributed training: process r takes images r::world_size of each global batch, with the same
    crops and flips as the single process gives those images."""
    data = tiny_rgb(n=23)
    kwargs = {"batch_size": 6, "augment": True, "seed": 5}
    single = epoch(DeviceLoader(data, **kwargs))
    shards = [epoch(DeviceLoader(data, rank=r, world_size=world_size, **kwargs)) for r in range(world_size)]
    for b, (images, labels) in enumerate(single):
        for r in range(world_size):
            shard_images, shard_labels = shards[r][b]
            assert torch.equal(shard_images, images[r::world_size])
            assert torch.equal(shard_labels, labels[r::world_size])
    with pytest.raises(ValueError, match="rank"):
        DeviceLoader(data, batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="smaller than world_size"):
        DeviceLoader(data, batch_size=1, world_size=2)

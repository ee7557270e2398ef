"""slac.nn.recalibrate_batchnorm: the statistics it computes, and everything it must leave as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slac.nn import batchnorm_layers, recalibrate_batchnorm, recalibrated_batchnorm


def _batches(count: int, size: int = 8, offset: float = 30.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [offset + 5 * torch.randn(size, 3, 4, 4, generator=generator) for _ in range(count)]


def _model() -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(3, momentum=0.1), nn.Dropout(0.5), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)
    )


def test_statistics_are_the_average_of_the_batch_statistics():
    model = _model().eval()
    batches = _batches(5)
    used = recalibrate_batchnorm(model, batches, num_batches=3)
    assert used == 3
    bn = model[0]
    means = torch.stack([b.mean((0, 2, 3)) for b in batches[:3]])
    variances = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches[:3]])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert int(bn.num_batches_tracked) == 3
    # the running statistics would still be far from the data after 3 steps of momentum 0.1
    assert (bn.running_mean - 30).abs().max() < 2


def test_momentum_mode_and_random_state_are_left_as_they_were():
    model = _model()
    model.eval()
    model[1].train()  # a mixed state: restored module by module
    state = torch.random.get_rng_state()
    recalibrate_batchnorm(model, [(b, torch.zeros(8)) for b in _batches(2)])  # (images, labels) batches
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout drew from a forked generator
    assert [m.training for m in model] == [False, True, False, False]
    assert [layer.momentum for layer in batchnorm_layers(model)] == [0.1, 0.1]


def test_the_context_manager_restores_the_statistics_bit_for_bit():
    model = _model()
    for batch in _batches(3, offset=0.0):  # some training-time statistics
        model(batch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with recalibrated_batchnorm(model, _batches(4), num_batches=2) as used:
        assert used == 2
        assert not torch.equal(model[0].running_mean, before["0.running_mean"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_no_batches_or_a_failing_forward_leave_everything_unchanged():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="yielded nothing"):
        recalibrate_batchnorm(model, [])

    def failing(module, images):
        module(images)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        recalibrate_batchnorm(model, _batches(2), forward=failing)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training and [layer.momentum for layer in batchnorm_layers(model)] == [0.1, 0.1]
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batchnorm(model, _batches(1), num_batches=0)
    assert recalibrate_batchnorm(nn.Linear(2, 2), [torch.randn(3, 2)]) == 0  # no BatchNorm: nothing to do

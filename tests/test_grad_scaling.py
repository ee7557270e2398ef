"""Adaptive learning-rate scaling: grad <- eta * sqrt(numel) * grad / ||grad||."""

import math

import pytest
import torch
from torch import nn

from slac.nn import Adder2d, AdderLinear, adder_weights, scale_adder_grads


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), Adder2d(4, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), AdderLinear(6, 2)
    )


@pytest.mark.parametrize("eta", [0.2, 0.05])
def test_scaled_gradients_have_the_formula_norm_and_direction(eta):
    model = _model()
    model(torch.randn(3, 1, 5, 5)).sum().backward()
    before = {id(p): p.grad.clone() for p in model.parameters()}
    norms = scale_adder_grads(model, eta)
    assert len(norms) == 2
    for w, norm in zip(adder_weights(model), norms, strict=True):
        assert math.isclose(w.grad.norm().item(), eta * math.sqrt(w.numel()), rel_tol=1e-5)
        assert math.isclose(norm.item(), before[id(w)].norm().item(), rel_tol=1e-6)
        assert (
            torch.nn.functional.cosine_similarity(w.grad.flatten(), before[id(w)].flatten(), dim=0) > 0.9999
        )
    # everything else is untouched: the first conv, BatchNorm, biases
    adder_ids = {id(w) for w in adder_weights(model)}
    for p in model.parameters():
        if id(p) not in adder_ids:
            assert torch.equal(p.grad, before[id(p)])


def test_zero_and_missing_gradients():
    model = _model()
    adder_weights(model)[0].grad = torch.zeros_like(adder_weights(model)[0])
    assert len(scale_adder_grads(model)) == 1  # the second has no gradient: skipped
    assert torch.equal(adder_weights(model)[0].grad, torch.zeros_like(adder_weights(model)[0]))


@pytest.mark.parametrize("eta", [0, -1, float("nan"), float("inf"), "0.2"])
def test_invalid_eta(eta):
    with pytest.raises(ValueError, match="eta must be a positive finite number"):
        scale_adder_grads(_model(), eta)

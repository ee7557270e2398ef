"""Every head learns a separable 2-D problem; SLAC spreads the skewness directions apart (vs SL)."""

from __future__ import annotations

import pytest
import torch

from slac.heads import list_heads


@pytest.mark.parametrize("name", list_heads())
def test_head_learns_a_separable_2d_problem(name, toy_problem, trainer):
    features, targets = toy_problem(seed=0)
    head = trainer(name, features, targets)
    test_features, test_targets = toy_problem(seed=1)  # a fresh sample of the same distribution
    accuracy = (head(test_features).argmax(1) == test_targets).float().mean().item()
    assert accuracy >= 0.97, accuracy


def mean_pairwise_cosine(skewness: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(skewness.detach(), dim=1)
    cosine = unit @ unit.T
    k = cosine.shape[0]
    return ((cosine.sum() - cosine.diagonal().sum()) / (k * k - k)).item()


@pytest.mark.parametrize("seed", [0, 1])
def test_angle_constraint_spreads_the_skewness_directions(seed, toy_problem, trainer):
    """Four clusters whose tails all point along +x. With a likelihood weight that lets the SL head fit
    the data (lambda = 1), SL learns nearly parallel skewness vectors; SLAC (same lambda, beta = 0.1)
    turns them apart, as its target asks (opposite clusters -1, neighbours 0)."""
    features, targets = toy_problem(seed=seed)
    sl = trainer("sl", features, targets, steps=200, seed=seed, likelihood_weight=1.0)
    slac = trainer("slac", features, targets, steps=200, seed=seed, likelihood_weight=1.0)
    cosine_sl, cosine_slac = mean_pairwise_cosine(sl.skewness), mean_pairwise_cosine(slac.skewness)
    assert cosine_sl > 0.9, cosine_sl
    assert cosine_slac < cosine_sl - 0.2, (cosine_sl, cosine_slac)
    for head in (sl, slac):
        accuracy = (head(features).argmax(1) == targets).float().mean().item()
        assert accuracy >= 0.97

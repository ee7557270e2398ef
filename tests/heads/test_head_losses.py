"""The loss functions of slac.heads.losses: angle-based constraint (Eqs. 6-8) and HeadLoss (Eq. 9)."""

from __future__ import annotations

import math

import pytest
import torch

from slac.heads.losses import (
    COSINE_EPS,
    HeadLoss,
    angle_constraint,
    angle_target,
    check_weight,
    location_mahalanobis,
    reduce_likelihood,
    skewness_cosine,
)

F64 = torch.float64


def exact_location_mahalanobis(loc, log_cov):
    difference = loc[:, None, :] - loc[None, :, :]  # (K, K, d)  mu_m - mu_n
    return (difference.square() * torch.exp(-log_cov)[None, :, :]).sum(-1)  # Sigma of the column n


def test_location_mahalanobis_uses_the_covariance_of_the_column_class():
    loc = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=F64)
    cov = torch.tensor([[1.0, 1.0], [4.0, 1.0], [1.0, 9.0]], dtype=F64)
    expected = torch.tensor(
        [
            [0.0, 4.0 / 4.0, 9.0 / 9.0],  # m = 0: (mu_0 - mu_n)^T Sigma_n^-1 (mu_0 - mu_n)
            [4.0, 0.0, 4.0 + 9.0 / 9.0],
            [9.0, 4.0 / 4.0 + 9.0, 0.0],
        ],
        dtype=F64,
    )
    torch.testing.assert_close(location_mahalanobis(loc, cov.log()), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_location_mahalanobis_matches_the_exact_differences(dtype):
    torch.manual_seed(0)
    loc, log_cov = torch.randn(7, 5, dtype=dtype) + 3.0, torch.randn(7, 5, dtype=dtype) * 0.5
    actual = location_mahalanobis(loc, log_cov)
    torch.testing.assert_close(actual, exact_location_mahalanobis(loc, log_cov), rtol=1e-5, atol=1e-4)
    assert (actual.diagonal() == 0).all() and (actual >= 0).all()


def test_angle_target_is_one_on_the_diagonal_minus_one_at_the_farthest_and_decreasing():
    torch.manual_seed(0)
    loc, log_cov = torch.randn(6, 3, dtype=F64), torch.randn(6, 3, dtype=F64) * 0.3
    target = angle_target(loc, log_cov)
    distances = exact_location_mahalanobis(loc, log_cov)
    torch.testing.assert_close(target.diagonal(), torch.ones(6, dtype=F64))
    farthest = distances.argmax(dim=1)
    torch.testing.assert_close(target[torch.arange(6), farthest], -torch.ones(6, dtype=F64))
    assert target.min() >= -1.0 - 1e-12 and target.max() <= 1.0 + 1e-12
    for row in range(6):  # strictly decreasing in D_mu within each row
        order = distances[row].argsort()
        assert (target[row, order].diff() < 0).all()
    # and linear in D_mu: the printed form (max - 2 D) / max
    row_max = distances.max(dim=1, keepdim=True).values
    torch.testing.assert_close(target, (row_max - 2 * distances) / row_max)


def test_angle_target_with_coinciding_locations_is_finite():
    target = angle_target(torch.zeros(3, 2), torch.zeros(3, 2))
    torch.testing.assert_close(target, torch.ones(3, 3))


def test_skewness_cosine_by_hand_and_zero_skewness():
    skewness = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=F64, requires_grad=True)
    cosine = skewness_cosine(skewness)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[1.0, s, 0.0], [s, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(cosine, expected)
    cosine.sum().backward()
    assert torch.isfinite(skewness.grad).all()  # also for the zero row (bounded by about 1 / COSINE_EPS)
    assert skewness.grad.abs().max() < 10 / COSINE_EPS


def test_angle_constraint_at_zero_skewness_has_zero_gradient():
    torch.manual_seed(0)
    skewness = torch.zeros(4, 3, dtype=F64, requires_grad=True)
    loss = angle_constraint(torch.randn(4, 3, dtype=F64), torch.zeros(4, 3, dtype=F64), skewness)
    (grad,) = torch.autograd.grad(loss, skewness)
    assert torch.isfinite(loss) and torch.count_nonzero(grad) == 0


def test_angle_constraint_recomputed_by_hand():
    # K = 3 on a line, Sigma = I: D_mu row 0 = [0, 1, 4] -> target [1, 0.5, -1];
    # row 1 = [1, 0, 1] -> [-1, 1, -1] (two farthest classes); row 2 = [4, 1, 0] -> [-1, 0.5, 1]
    loc = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=F64)
    skewness = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    target = torch.tensor([[1.0, 0.5, -1.0], [-1.0, 1.0, -1.0], [-1.0, 0.5, 1.0]], dtype=F64)
    torch.testing.assert_close(angle_target(loc, torch.zeros_like(loc)), target)
    cosine = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]], dtype=F64)
    expected = ((cosine - target) ** 2).sum() / 9  # = (0.25 + 2 + 0.25) / 9
    actual = angle_constraint(loc, torch.zeros_like(loc), skewness)
    torch.testing.assert_close(actual, expected)
    assert actual.item() == pytest.approx(2.5 / 9)


@pytest.mark.parametrize("target_grad", [False, True], ids=["detached-target", "target-grad"])
def test_angle_target_gradient_switch(target_grad):
    torch.manual_seed(0)
    loc = torch.randn(4, 3, dtype=F64, requires_grad=True)
    log_cov = (0.3 * torch.randn(4, 3, dtype=F64)).requires_grad_(True)
    skewness = torch.randn(4, 3, dtype=F64, requires_grad=True)
    loss = angle_constraint(loc, log_cov, skewness, target_grad=target_grad)
    grad_loc, grad_cov, grad_skew = torch.autograd.grad(loss, (loc, log_cov, skewness), allow_unused=True)
    if target_grad:
        assert grad_loc.abs().sum() > 0 and grad_cov.abs().sum() > 0
    else:
        assert grad_loc is None and grad_cov is None
    # the skewness gradient does not depend on the switch
    loc_const, cov_const = loc.detach(), log_cov.detach()
    (reference,) = torch.autograd.grad(angle_constraint(loc_const, cov_const, skewness), skewness)
    torch.testing.assert_close(grad_skew, reference)


def test_head_loss_combines_weighted_parts():
    parts = {
        "classification": torch.tensor(2.0),
        "likelihood": torch.tensor(30.0),
        "angle": torch.tensor(0.5),
    }
    loss = HeadLoss.combine(parts, {"classification": 1.0, "likelihood": 0.01, "angle": 0.1})
    assert loss.total.item() == pytest.approx(2.0 + 0.3 + 0.05)
    assert {k: v.item() for k, v in loss.weighted().items()} == pytest.approx(
        {"classification": 2.0, "likelihood": 0.3, "angle": 0.05}
    )
    assert loss.to_floats() == pytest.approx(
        {"total": 2.35, "classification": 2.0, "likelihood": 30.0, "angle": 0.5}
    )
    unweighted_angle = HeadLoss.combine(parts, {"classification": 1.0, "likelihood": 0.0, "angle": 0.0})
    assert unweighted_angle.total.item() == 2.0 and unweighted_angle.parts["angle"].item() == 0.5
    with pytest.raises(ValueError, match="same terms"):
        HeadLoss.combine(parts, {"classification": 1.0})


def test_likelihood_reduction_and_weight_checks():
    values = torch.tensor([1.0, 2.0, 6.0])
    assert reduce_likelihood(values).item() == 3.0
    assert reduce_likelihood(values, "sum").item() == 9.0
    with pytest.raises(ValueError, match="likelihood_reduction"):
        reduce_likelihood(values, "max")
    assert check_weight("beta", 0) == 0.0
    with pytest.raises(TypeError, match="beta must be a number"):
        check_weight("beta", "0.1x")
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        check_weight("beta", -0.1)

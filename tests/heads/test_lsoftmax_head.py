"""L-Softmax head: psi by hand, the annealed lambda, the margin logit, the iteration buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slac.heads import LSoftmaxHead, create_head, large_margin_psi
from slac.heads.lsoftmax import lsoftmax_lambda

F64 = torch.float64
PI = math.pi


@pytest.mark.parametrize(
    ("margin", "theta", "expected"),
    [
        # m = 2: psi = cos 2t on [0, pi/2], -cos 2t - 2 on [pi/2, pi]
        pytest.param(2, 0.0, 1.0, id="m2-0"),
        pytest.param(2, PI / 4, 0.0, id="m2-pi/4"),
        pytest.param(2, PI / 2, -1.0, id="m2-pi/2"),
        pytest.param(2, 3 * PI / 4, -2.0, id="m2-3pi/4"),
        pytest.param(2, PI, -3.0, id="m2-pi"),
        # m = 3: k = 0 on [0, pi/3], 1 on [pi/3, 2pi/3], 2 on [2pi/3, pi]
        pytest.param(3, PI / 3, -1.0, id="m3-pi/3"),
        pytest.param(3, PI / 2, -2.0, id="m3-pi/2"),  # -cos(3 pi/2) - 2
        pytest.param(3, 2 * PI / 3, -3.0, id="m3-2pi/3"),  # cos(2 pi) - 4
        pytest.param(3, PI, -5.0, id="m3-pi"),  # cos(3 pi) - 4
        pytest.param(4, PI / 8, 0.0, id="m4-pi/8"),
        pytest.param(1, 1.0, math.cos(1.0), id="m1-is-cos"),
    ],
)
def test_psi_by_hand(margin, theta, expected):
    psi = large_margin_psi(torch.tensor([math.cos(theta)], dtype=F64), margin)
    assert psi.item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("margin", [2, 3, 4])
def test_psi_is_continuous_decreasing_and_below_cos(margin):
    theta = torch.linspace(0.0, PI, 20001, dtype=F64)
    psi = large_margin_psi(theta.cos(), margin)
    assert (psi.diff() <= 1e-12).all()  # monotonically decreasing
    assert psi.diff().abs().max() < 1e-2  # no jumps at the boundaries k pi / m
    assert (psi <= theta.cos() + 1e-12).all()  # the margin makes the target harder
    np.testing.assert_allclose(psi[-1].item(), -2 * margin + 1, atol=1e-9)


def test_lambda_schedule():
    assert lsoftmax_lambda(0, 1000.0, 2e-5, 45.0, 0.0).item() == 1000.0
    assert lsoftmax_lambda(10_000, 1000.0, 2e-5, 45.0, 0.0).item() == pytest.approx(1000.0 * 1.2**-45)
    assert lsoftmax_lambda(10**7, 1000.0, 2e-5, 45.0, 5.0).item() == 5.0  # clamped at lambda_min


def test_training_forward_replaces_the_true_logit_by_the_margin_logit():
    head = LSoftmaxHead(2, 3, margin=2, lambda_base=3.0, lambda_gamma=0.5, lambda_power=1.0).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        head.iteration.fill_(2)  # lambda = 3 * (1 + 0.5 * 2)^-1 = 1.5
    features = torch.tensor([[1.0, 1.0], [3.0, -1.0]], dtype=F64)
    targets = torch.tensor([0, 1])
    logits = head.train()(features, targets)
    lam = 1.5
    expected = features @ head.weight.detach().T
    for n, y in enumerate(targets.tolist()):
        w, x = head.weight.detach()[y].numpy(), features[n].numpy()
        norms = np.linalg.norm(w) * np.linalg.norm(x)
        theta = math.acos(w @ x / norms)
        k = math.floor(2 * theta / PI)
        psi = (-1) ** k * math.cos(2 * theta) - 2 * k
        expected[n, y] = (lam * (w @ x) + norms * psi) / (1 + lam)
    torch.testing.assert_close(logits, expected)
    assert head.iteration.item() == 3
    # classification loss: cross-entropy of the margin logits
    loss = head.loss(features, logits, targets)
    torch.testing.assert_close(loss.total, torch.nn.functional.cross_entropy(expected, targets))


def test_no_margin_and_no_iteration_outside_training_with_targets():
    torch.manual_seed(0)
    head = create_head("lsoftmax", 4, 3, lambda_base=0.0)
    features, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    plain = features @ head.weight.detach().T
    torch.testing.assert_close(head.train()(features), plain)
    torch.testing.assert_close(head.eval()(features, targets), plain)
    assert head.iteration.item() == 0
    margin_logits = head.train()(features, targets)
    assert head.iteration.item() == 1
    assert (margin_logits.gather(1, targets[:, None]) < plain.gather(1, targets[:, None])).all()


def test_margin_one_is_the_plain_softmax():
    torch.manual_seed(0)
    head = create_head("lsoftmax", 4, 3, margin=1, lambda_base=0.0).train()
    features, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(head(features, targets), features @ head.weight.detach().T)


def test_iteration_counter_is_saved_and_restored():
    head = create_head("lsoftmax", 4, 3).train()
    for _ in range(7):
        head(torch.randn(2, 4), torch.tensor([0, 1]))
    restored = create_head("lsoftmax", 4, 3)
    restored.load_state_dict(head.state_dict())
    assert restored.iteration.item() == 7
    assert restored.current_lambda().item() == pytest.approx(1000.0 * (1 + 2e-5 * 7) ** -45)

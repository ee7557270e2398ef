"""SL / SLAC head: logits as log densities, the objective's parts, and the gradient of Eq. 10."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slac.heads import SkewLaplaceHead, angle_constraint, create_head

F64 = torch.float64


def random_head(dim: int = 4, num_classes: int = 5, seed: int = 0, **options) -> SkewLaplaceHead:
    torch.manual_seed(seed)
    head = SkewLaplaceHead(dim, num_classes, **options).double()
    with torch.no_grad():
        head.log_variance.normal_(std=0.4)
        head.skewness.normal_(std=0.7)
    return head


def test_logits_are_log_densities_plus_log_prior():
    head = random_head()
    features = torch.randn(6, 4, dtype=F64) * 2
    expected = head.distribution().log_prob(features[:, None, :]) + math.log(1 / 5)  # (N, K)
    torch.testing.assert_close(head(features), expected)


def test_blocked_head_equals_unblocked_head():
    head = random_head()
    blocked = random_head(max_block_elements=8)
    features, targets = torch.randn(6, 4, dtype=F64), torch.tensor([0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(blocked(features), head(features))
    loss = head.loss(features, head(features), targets).total
    blocked_loss = blocked.loss(features, blocked(features), targets).total
    grads = torch.autograd.grad(loss, list(head.parameters()))
    blocked_grads = torch.autograd.grad(blocked_loss, list(blocked.parameters()))
    for grad, blocked_grad in zip(grads, blocked_grads, strict=True):
        torch.testing.assert_close(blocked_grad, grad)


def test_objective_parts_recomputed_by_hand():
    head = random_head(likelihood_weight=0.3, angle_weight=0.7)
    features, targets = torch.randn(6, 4, dtype=F64), torch.tensor([0, 1, 2, 3, 4, 0])
    logits = head(features, targets)
    loss = head.loss(features, logits, targets)
    log_joint = logits.gather(1, targets[:, None]).squeeze(1)  # log f_y(x) + log p(y)
    expected = {
        "classification": -torch.log_softmax(logits, 1).gather(1, targets[:, None]).mean(),
        "likelihood": -log_joint.mean(),
        "angle": angle_constraint(head.loc, head.log_variance, head.skewness),
    }
    for name, value in expected.items():
        torch.testing.assert_close(loss.parts[name], value)
    assert loss.weights == {"classification": 1.0, "likelihood": 0.3, "angle": 0.7}
    torch.testing.assert_close(
        loss.total, expected["classification"] + 0.3 * expected["likelihood"] + 0.7 * expected["angle"]
    )


def test_sl_head_logs_the_angle_constraint_without_training_it():
    head = create_head("sl", 4, 5)
    with torch.no_grad():
        head.skewness.normal_()
    features, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = head.loss(features, head(features), targets)
    assert loss.weights["angle"] == 0.0 and loss.parts["angle"] > 0
    assert not loss.parts["angle"].requires_grad
    torch.testing.assert_close(
        loss.total, loss.parts["classification"] + 0.01 * loss.parts["likelihood"], rtol=1e-6, atol=1e-6
    )


def eq10_gradient(x, targets, loc, cov, skew, likelihood_weight):
    """Eq. 10 with the corrected density, for each sample, in NumPy (independent of slac):
    (1 - p(y|x) + lambda) g_y + sum_{k != y} p(k|x) (-g_k),
    g_k = alpha_k q_k^-1/2 S_k^-1 r_k - S_k^-1 gamma_k.
    """
    d = x.shape[1]
    r = x[:, None, :] - loc[None]  # (N, K, d)
    q = (r**2 / cov[None]).sum(-1)  # (N, K)
    alpha = np.sqrt(1 + (skew**2 / cov).sum(-1))  # (K,)
    log_norm = d * np.log(2) + (d - 1) / 2 * np.log(np.pi) + math.lgamma((d + 1) / 2)
    log_f = (
        -np.log(alpha) - 0.5 * np.log(cov).sum(-1) - alpha * np.sqrt(q) + (r * skew / cov).sum(-1) - log_norm
    )
    posterior = np.exp(log_f - log_f.max(1, keepdims=True))
    posterior /= posterior.sum(1, keepdims=True)  # p(k|x), uniform prior
    g = alpha[None, :, None] * q[..., None] ** -0.5 * r / cov[None] - (skew / cov)[None]  # (N, K, d)
    gradient = np.empty_like(x)
    for i, y in enumerate(targets):
        others = [k for k in range(loc.shape[0]) if k != y]
        gradient[i] = (1 - posterior[i, y] + likelihood_weight) * g[i, y] + (
            posterior[i, others, None] * -g[i, others]
        ).sum(0)
    return gradient


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["sl", "slac"])
def test_feature_gradient_is_equation_10(name, reduction):
    head = random_head(dim=5, num_classes=4, seed=3, likelihood_weight=0.2, likelihood_reduction=reduction)
    head.angle_weight = 0.0 if name == "sl" else 0.1  # L_ac does not depend on x: same gradient
    features = (torch.randn(7, 5, dtype=F64) * 1.5).requires_grad_(True)
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    loss = head.loss(features, head(features, targets), targets)
    (gradient,) = torch.autograd.grad(loss.total, features)
    expected = eq10_gradient(
        features.detach().numpy(),
        targets.numpy(),
        head.loc.detach().numpy(),
        head.log_variance.detach().exp().numpy(),
        head.skewness.detach().numpy(),
        likelihood_weight=0.2 if reduction == "mean" else 0.2 * 7,  # sum: lambda counts N times vs L_c
    )
    np.testing.assert_allclose(gradient.numpy() * 7, expected, rtol=1e-8, atol=1e-10)


def test_printed_eq10_sign_is_wrong():
    """The paper's Eq. 10 adds Sigma_y^-1 gamma_y in the true-class term; with gamma != 0 that differs
    from the gradient of the density (the test above passes with the minus sign)."""
    head = random_head(dim=3, num_classes=3, seed=1, likelihood_weight=0.01)
    features = torch.randn(4, 3, dtype=F64, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0])
    (gradient,) = torch.autograd.grad(head.loss(features, head(features), targets).total, features)
    precision_skew = (head.skewness / head.log_variance.exp()).detach()[targets]  # Sigma_y^-1 gamma_y
    posterior = torch.softmax(head(features).detach(), 1).gather(1, targets[:, None])
    printed_minus_corrected = 2 * (1 - posterior + 0.01) * precision_skew / 4  # per sample, batch mean
    assert (printed_minus_corrected.abs().sum(1) > 1e-3).all()
    expected = eq10_gradient(
        features.detach().numpy(),
        targets.numpy(),
        head.loc.detach().numpy(),
        head.log_variance.detach().exp().numpy(),
        head.skewness.detach().numpy(),
        0.01,
    )
    printed = expected / 4 + printed_minus_corrected.numpy()
    assert not np.allclose(gradient.numpy(), printed, atol=1e-6)
    np.testing.assert_allclose(gradient.numpy(), expected / 4, rtol=1e-8, atol=1e-10)

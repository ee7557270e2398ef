"""LGM and MoM heads: logits, margin and likelihood recomputed by hand on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from slac.heads import LGMHead, MoMHead

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def tiny_lgm(margin: float = 0.2, likelihood_weight: float = 0.05) -> LGMHead:
    head = LGMHead(2, 2, margin=margin, likelihood_weight=likelihood_weight).double()
    with torch.no_grad():
        head.loc.copy_(torch.tensor([[0.0, 0.0], [2.0, 1.0]]))
        head.log_variance.copy_(torch.tensor([[0.0, 0.0], [math.log(2.0), math.log(0.5)]]))
    return head


def test_lgm_logits_margin_and_loss_by_hand():
    head = tiny_lgm()
    features = torch.tensor([[1.0, 1.0], [0.0, -1.0]], dtype=F64)
    targets = torch.tensor([1, 0])
    # q_k = (x - mu_k)^T Sigma_k^-1 (x - mu_k);  log|Sigma_0| = 0, log|Sigma_1| = log 2 + log 0.5 = 0
    q = torch.tensor([[2.0, 1.0 / 2.0 + 0.0 / 0.5], [1.0, 4.0 / 2.0 + 4.0 / 0.5]], dtype=F64)
    log_det = torch.tensor([0.0, 0.0], dtype=F64)
    constant = -LOG_2PI + math.log(0.5)  # -d/2 log 2 pi + log p(k), d = 2, K = 2
    plain = -0.5 * q - 0.5 * log_det + constant
    torch.testing.assert_close(head.eval()(features, targets), plain)
    # training: the true class's distance is multiplied by 1 + alpha
    margin = plain.clone()
    margin[0, 1] = -0.5 * 1.2 * q[0, 1] + constant
    margin[1, 0] = -0.5 * 1.2 * q[1, 0] + constant
    logits = head.train()(features, targets)
    torch.testing.assert_close(logits, margin)
    # loss: cross-entropy of the margin logits + lambda * mean(-log N(x; mu_y, Sigma_y) - log p(y))
    loss = head.loss(features, logits, targets)
    classification = torch.nn.functional.cross_entropy(margin, targets)
    likelihood = torch.stack(
        [0.5 * q[0, 1] + LOG_2PI + math.log(2), 0.5 * q[1, 0] + LOG_2PI + math.log(2)]
    ).mean()
    torch.testing.assert_close(loss.parts["classification"], classification)
    torch.testing.assert_close(loss.parts["likelihood"], likelihood)
    torch.testing.assert_close(loss.total, classification + 0.05 * likelihood)


def test_lgm_log_determinant_enters_the_logits():
    torch.manual_seed(0)
    head = LGMHead(3, 4).double().eval()
    with torch.no_grad():
        head.log_variance.normal_()
    features = torch.randn(6, 3, dtype=F64)
    normal = Independent(Normal(head.loc, head.log_variance.mul(0.5).exp()), 1)  # batch (K,)
    expected = normal.log_prob(features[:, None, :]) - math.log(4)
    torch.testing.assert_close(head(features), expected.detach())


def test_lgm_sum_reduction_is_batch_size_times_mean():
    torch.manual_seed(0)
    features, targets = torch.randn(8, 2, dtype=F64), torch.randint(0, 2, (8,))
    parts = {}
    for reduction in ("mean", "sum"):
        head = tiny_lgm()
        head.likelihood_reduction = reduction
        parts[reduction] = head.loss(features, head(features, targets), targets).parts["likelihood"]
    torch.testing.assert_close(parts["sum"], 8 * parts["mean"])


def test_mom_logits_are_mixture_log_densities_with_margin_on_the_true_class():
    torch.manual_seed(0)
    head = MoMHead(3, 2, num_components=2, margin=0.3).double()
    with torch.no_grad():
        head.log_variance.normal_(std=0.3)
        head.mixture_logits.copy_(torch.tensor([[0.5, -0.5], [0.0, 1.0]]))
    features, targets = torch.randn(5, 3, dtype=F64), torch.tensor([0, 1, 1, 0, 1])
    std = head.log_variance.detach().mul(0.5).exp()
    mixture = MixtureSameFamily(
        Categorical(logits=head.mixture_logits.detach()),
        Independent(Normal(head.loc.detach(), std), 1),
    )  # batch (K,), components (C,)
    expected = mixture.log_prob(features[:, None, :]) - math.log(2)  # (N, K)
    torch.testing.assert_close(head.eval()(features), expected)
    # margin: every component distance of the true class times (1 + alpha), by hand
    log_weights = torch.log_softmax(head.mixture_logits.detach(), -1)
    with_margin = expected.clone()
    for n, y in enumerate(targets.tolist()):
        z = (features[n] - head.loc.detach()[y]) / std[y]  # (C, d)
        q = z.square().sum(-1)
        components = log_weights[y] - 0.5 * (1.3 * q + head.log_variance.detach()[y].sum(-1) + 3 * LOG_2PI)
        with_margin[n, y] = torch.logsumexp(components, 0) - math.log(2)
    torch.testing.assert_close(head.train()(features, targets), with_margin)
    # likelihood: -log f_y(x) - log p(y) without margin
    loss = head.loss(features, head(features, targets), targets)
    nll = -(expected.gather(1, targets[:, None]).squeeze(1)).mean()
    torch.testing.assert_close(loss.parts["likelihood"], nll)


def test_mom_with_one_component_equals_lgm():
    torch.manual_seed(0)
    lgm = LGMHead(3, 4, margin=0.2).double()
    mom = MoMHead(3, 4, num_components=1, margin=0.2).double()
    with torch.no_grad():
        mom.loc.copy_(lgm.loc[:, None])
        lgm.log_variance.normal_()
        mom.log_variance.copy_(lgm.log_variance[:, None])
    features, targets = torch.randn(6, 3, dtype=F64), torch.tensor([0, 1, 2, 3, 0, 1])
    for training in (True, False):
        logits_lgm = lgm.train(training)(features, targets)
        logits_mom = mom.train(training)(features, targets)
        torch.testing.assert_close(logits_mom, logits_lgm)
        torch.testing.assert_close(
            mom.loss(features, logits_mom, targets).total, lgm.loss(features, logits_lgm, targets).total
        )


@pytest.mark.parametrize("learn_mixture_weights", [True, False], ids=["learned", "fixed"])
def test_mom_mixture_weights_switch(learn_mixture_weights):
    head = MoMHead(3, 4, learn_mixture_weights=learn_mixture_weights)
    assert head.mixture_logits.requires_grad == learn_mixture_weights
    torch.testing.assert_close(torch.softmax(head.mixture_logits, -1), torch.full((4, 2), 0.5))

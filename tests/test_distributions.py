"""MultivariateSkewLaplace: normalization, closed form, sampling, shapes and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from slac.distributions import (
    MultivariateSkewLaplace,
    pairwise_quadratic_forms,
    pairwise_skew_laplace_log_prob,
    skew_laplace_log_normalizer,
    skew_laplace_log_prob,
)

F64 = torch.float64


def skew_laplace(loc, cov_diag, skewness, **kwargs) -> MultivariateSkewLaplace:
    as_tensor = lambda value: torch.as_tensor(value, dtype=F64)  # noqa: E731
    return MultivariateSkewLaplace(as_tensor(loc), as_tensor(cov_diag), as_tensor(skewness), **kwargs)


# ----------------------------------------------------------------------------------------- density
@pytest.mark.parametrize(
    ("loc", "cov", "skew"),
    [
        pytest.param(0.0, 1.0, 0.0, id="symmetric"),
        pytest.param(0.0, 1.0, 3.0, id="gamma=3-sigma=1"),
        pytest.param(1.5, 0.3, -2.0, id="gamma=-2-sigma2=0.3"),
        pytest.param(-2.0, 4.0, 8.0, id="gamma=8-sigma2=4"),
    ],
)
def test_density_integrates_to_one_in_1d(loc, cov, skew):
    dist = skew_laplace([loc], [cov], [skew])

    def density(x: float) -> float:
        return math.exp(float(dist.log_prob(torch.tensor([x], dtype=F64))))

    left, _ = integrate.quad(density, -np.inf, loc, limit=200, epsabs=1e-12)
    right, _ = integrate.quad(density, loc, np.inf, limit=200, epsabs=1e-12)
    assert left + right == pytest.approx(1.0, abs=1e-7)


def polar_integral_2d(dist: MultivariateSkewLaplace, radial_nodes: int = 600, angles: int = 256) -> float:
    """Integral of the density over R^2 in polar coordinates around the location.

    rho = scale * u / (1 - u) maps u in [0, 1) (Gauss-Legendre) onto [0, inf); the angle uses the
    trapezoid rule, exact to spectral accuracy for a smooth periodic integrand.
    """
    nodes, weights = np.polynomial.legendre.leggauss(radial_nodes)
    u, w_u = 0.5 * (nodes + 1.0), 0.5 * weights
    scale = 5.0
    rho = scale * u / (1.0 - u)
    w_rho = w_u * scale / (1.0 - u) ** 2
    phi = 2.0 * np.pi * np.arange(angles) / angles
    directions = np.stack([np.cos(phi), np.sin(phi)], axis=1)  # (A, 2)
    points = dist.loc.numpy() + rho[:, None, None] * directions[None]  # (R, A, 2)
    density = dist.log_prob(torch.from_numpy(points)).exp().numpy()  # (R, A)
    return float(((w_rho * rho)[:, None] * density).sum() * (2.0 * np.pi / angles))


@pytest.mark.parametrize(
    ("cov", "skew"),
    [
        pytest.param([1.0, 1.0], [0.0, 0.0], id="symmetric"),
        pytest.param([1.0, 0.25], [2.0, -1.5], id="strong-skew-anisotropic"),
        pytest.param([0.5, 2.0], [0.0, 3.0], id="strong-skew-along-y"),
    ],
)
def test_density_integrates_to_one_in_2d(cov, skew):
    dist = skew_laplace([0.3, -0.7], cov, skew)
    assert polar_integral_2d(dist) == pytest.approx(1.0, abs=1e-6)


def scipy_log_density(x: np.ndarray, loc: np.ndarray, cov_diag: np.ndarray, skew: np.ndarray) -> np.ndarray:
    """Arslan's closed form with full matrices (np.linalg) and scipy's log-gamma, independent of slac."""
    d = loc.shape[0]
    sigma = np.diag(cov_diag)
    precision = np.linalg.inv(sigma)
    _, log_det = np.linalg.slogdet(sigma)
    alpha = np.sqrt(1.0 + skew @ precision @ skew)
    r = x - loc
    q = np.einsum("ni,ij,nj->n", r, precision, r)
    log_norm = d * np.log(2.0) + (d - 1) / 2.0 * np.log(np.pi) + special.gammaln((d + 1) / 2.0)
    return -0.5 * log_det - np.log(alpha) - log_norm - alpha * np.sqrt(q) + r @ precision @ skew


def test_log_prob_matches_scipy_closed_form_in_5d():
    rng = np.random.default_rng(0)
    loc, skew = rng.normal(size=5), rng.normal(size=5) * 2.0
    cov_diag = rng.uniform(0.2, 3.0, size=5)
    x = rng.normal(size=(64, 5)) * 3.0
    expected = scipy_log_density(x, loc, cov_diag, skew)
    actual = skew_laplace(loc, cov_diag, skew).log_prob(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


def test_log_normalizer_matches_lgamma_at_large_d():
    # c_d = d log 2 + (d - 1)/2 log(pi) + log Gamma((d + 1)/2); about 1800 at d = 512.
    assert skew_laplace_log_normalizer(512) == pytest.approx(
        512 * math.log(2) + 511 / 2 * math.log(math.pi) + special.gammaln(513 / 2), rel=1e-12
    )
    assert 1700 < skew_laplace_log_normalizer(512) < 1900


def test_printed_eq2_is_not_a_density():
    """The erratum: Eq. 2 as printed puts the skew term inside the square root; for r opposite to gamma
    the argument goes negative, while the corrected density is finite there."""
    r, q, gamma = -0.5, 0.25, 1.0  # d = 1, Sigma = 1
    assert q + r * gamma < 0.0
    corrected = skew_laplace([0.0], [1.0], [gamma]).log_prob(torch.tensor([r], dtype=F64))
    assert torch.isfinite(corrected)


def test_pairwise_log_prob_equals_broadcast_log_prob():
    torch.manual_seed(0)
    features, loc = torch.randn(7, 4, dtype=F64), torch.randn(5, 4, dtype=F64)
    log_cov, skew = torch.randn(5, 4, dtype=F64) * 0.5, torch.randn(5, 4, dtype=F64)
    expected = skew_laplace_log_prob(features[:, None, :], loc, log_cov, skew)  # (7, 5)
    torch.testing.assert_close(pairwise_skew_laplace_log_prob(features, loc, log_cov, skew), expected)


def test_blocked_pairwise_forms_equal_unblocked_with_gradients():
    torch.manual_seed(0)
    leaves = [torch.randn(6, 3, dtype=F64, requires_grad=True)] + [
        torch.randn(11, 3, dtype=F64, requires_grad=True) for _ in range(3)
    ]

    def run(max_block_elements):
        q, t = pairwise_quadratic_forms(*leaves, max_block_elements=max_block_elements)
        upstream = torch.linspace(-1, 1, q.numel(), dtype=F64).view_as(q)
        grads = torch.autograd.grad((q * upstream).sum() + (t * upstream.flip(0)).sum(), leaves)
        return q, t, grads

    q_full, t_full, grads_full = run(10**9)
    q_blocked, t_blocked, grads_blocked = run(6 * 3 * 4)  # blocks of 4 classes: 4 + 4 + 3
    torch.testing.assert_close(q_blocked, q_full)
    torch.testing.assert_close(t_blocked, t_full)
    for blocked, full in zip(grads_blocked, grads_full, strict=True):
        torch.testing.assert_close(blocked, full)


# ---------------------------------------------------------------------------------------- sampling
def test_sample_mean_and_covariance_match_the_mixture_moments():
    torch.manual_seed(0)
    dist = skew_laplace([0.5, -1.0, 2.0], [1.0, 0.25, 2.0], [0.8, -0.5, 0.3])
    n = 200_000
    x = dist.sample((n,))  # (n, 3)
    d = 3
    expected_mean = dist.loc + (d + 1) * dist.skewness
    outer = torch.outer(dist.skewness, dist.skewness)
    expected_cov = (d + 1) * torch.diag(dist.cov_diag) + 2 * (d + 1) * outer
    torch.testing.assert_close(dist.mean, expected_mean)
    torch.testing.assert_close(dist.covariance_matrix, expected_cov)
    torch.testing.assert_close(dist.variance, torch.diagonal(expected_cov))

    mean_error = x.mean(0) - expected_mean
    assert (mean_error.abs() < 5 * x.std(0) / math.sqrt(n)).all(), mean_error
    centered = x - x.mean(0)
    products = centered[:, :, None] * centered[:, None, :]  # (n, 3, 3)
    cov_error = products.mean(0) - expected_cov
    assert (cov_error.abs() < 5 * products.std(0) / math.sqrt(n)).all(), cov_error


def asymmetric_laplace_cdf(x: np.ndarray, loc: float, cov: float, skew: float) -> np.ndarray:
    """CDF of the d = 1 skew Laplace, integrated by hand: f(u) = C exp(-a|u| + b u), u = x - loc."""
    sigma = math.sqrt(cov)
    alpha = math.sqrt(1.0 + skew**2 / cov)
    a, b, c = alpha / sigma, skew / cov, 1.0 / (2.0 * sigma * alpha)
    u = x - loc
    below = c / (a + b) * np.exp((a + b) * np.minimum(u, 0.0))
    above = c / (a + b) + c / (a - b) * (1.0 - np.exp(-(a - b) * np.maximum(u, 0.0)))
    return np.where(u < 0.0, below, above)


def test_samples_pass_a_goodness_of_fit_test_in_1d():
    torch.manual_seed(1)
    loc, cov, skew = 0.5, 0.8, 0.6
    samples = skew_laplace([loc], [cov], [skew]).sample((4000,)).squeeze(-1).numpy()
    cdf = lambda x: asymmetric_laplace_cdf(x, loc, cov, skew)  # noqa: E731
    assert stats.kstest(samples, cdf).pvalue > 1e-3
    # The same test rejects samples of a wrong representation (chi-square with d instead of d + 1
    # degrees of freedom), so it has the power to catch a mistake in `rsample`.
    mixing = torch.distributions.Chi2(torch.tensor(1.0, dtype=F64)).sample((4000,))
    wrong = (loc + mixing * skew + mixing.sqrt() * math.sqrt(cov) * torch.randn(4000, dtype=F64)).numpy()
    assert stats.kstest(wrong, cdf).pvalue < 1e-6


def test_rsample_is_differentiable_in_the_parameters():
    loc = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    cov = torch.ones(2, 3, dtype=F64, requires_grad=True)
    skew = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    x = MultivariateSkewLaplace(loc, cov, skew).rsample((5,))
    assert x.shape == (5, 2, 3)
    x.sum().backward()
    torch.testing.assert_close(loc.grad, torch.full_like(loc, 5.0))
    assert skew.grad.abs().sum() > 0 and cov.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- shapes and checks
def test_batch_shapes_broadcast_and_expand():
    dist = skew_laplace(torch.zeros(4, 1, 3), torch.ones(5, 3), torch.zeros(3))
    assert dist.batch_shape == (4, 5) and dist.event_shape == (3,)
    assert dist.sample((2,)).shape == (2, 4, 5, 3)
    assert dist.log_prob(torch.zeros(3, dtype=F64)).shape == (4, 5)
    assert dist.covariance_matrix.shape == (4, 5, 3, 3)
    expanded = dist.expand((6, 4, 5))
    assert expanded.batch_shape == (6, 4, 5) and expanded.sample().shape == (6, 4, 5, 3)
    assert dist.support.check(torch.zeros(3)).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")], ids=["zero", "negative", "nan"])
def test_non_positive_covariance_is_rejected_naming_cov_diag(bad):
    with pytest.raises(ValueError, match="cov_diag"):
        skew_laplace([0.0, 0.0], [1.0, bad], [0.0, 0.0], validate_args=True)


def test_validation_can_be_switched_off():
    dist = skew_laplace([0.0], [-1.0], [0.0], validate_args=False)
    assert dist.cov_diag.item() == -1.0


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="loc must have at least one dimension"):
        MultivariateSkewLaplace(torch.tensor(0.0), torch.tensor([1.0]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="do not broadcast"):
        skew_laplace([0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="dim must be >= 1"):
        skew_laplace_log_normalizer(0)

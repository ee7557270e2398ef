"""The contract every registered head honours: argument checks, gradients, numerical robustness,
parameter groups and freezing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from slac.heads import DensityHead, SkewLaplaceHead, create_head, head_param_groups, list_heads

F64 = torch.float64
ALL_HEADS = list_heads()  # every registered head gets these tests
MIXTURE_HEADS = ["lgm", "mom", "sl", "slac"]


def logits_and_loss(head, features, targets):
    logits = head(features, targets)
    return logits, head.loss(features, logits, targets)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ALL_HEADS)
def test_bad_features_and_targets_are_rejected_naming_the_argument(name):
    head = create_head(name, 4, 3).train()
    features, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"features must have shape \(N, in_features=4\), got \(5, 3\)"):
        head(torch.randn(5, 3), targets)
    with pytest.raises(ValueError, match="features must have shape"):
        head(torch.randn(4))
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        head(torch.ones(5, 4, dtype=torch.long))
    for bad in (torch.tensor([0, 1, 3, 0, 1]), torch.tensor([0, -1, 2, 0, 1])):
        with pytest.raises(ValueError, match=r"targets must lie in \[0, num_classes=3\)"):
            head(features, bad)
        with pytest.raises(ValueError, match="targets must lie in"):
            head.loss(features, torch.zeros(5, 3), bad)
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        head(features, targets.float())
    with pytest.raises(ValueError, match=r"targets must have shape \(N,\) = \(5,\)"):
        head(features, targets[:4])


@pytest.mark.parametrize("name", ALL_HEADS)
def test_training_step_reads_no_values_off_the_device(name):
    """forward and loss of a training step validate the targets without copying anything to the host (on
    a GPU, each .tolist()/.item() is a synchronisation that stalls the step). Run on the meta device, which
    has shapes but no values: any read of a value raises there."""
    with torch.device("meta"):
        head = create_head(name, 4, 3).train()
        features, targets = torch.randn(6, 4, requires_grad=True), torch.zeros(6, dtype=torch.long)
        logits, loss = logits_and_loss(head, features, targets)
        loss.total.backward()
    assert logits.shape == (6, 3) and features.grad.shape == (6, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL_HEADS)
def test_training_step_does_not_synchronise_on_cuda(name):
    head = create_head(name, 4, 3).cuda().train()
    features, targets = torch.randn(6, 4, device="cuda"), torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logits, loss = logits_and_loss(head, features, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert logits.shape == (6, 3) and loss.total.isfinite()
    # a bad target is caught on the device: a device-side assertion, which leaves the CUDA context unusable
    # (as cross_entropy's own does), so it runs in a process of its own
    import subprocess
    import sys

    code = (
        "import torch; from slac.heads import create_head; "
        f"head = create_head({name!r}, 4, 3).cuda().train(); "
        "head(torch.randn(6, 4, device='cuda'), torch.tensor([0, 1, 3, 0, 1, 2], device='cuda')); "
        "torch.cuda.synchronize()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "device-side assert" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ALL_HEADS)
@pytest.mark.parametrize(
    ("in_features", "num_classes", "argument"),
    [pytest.param(0, 3, "in_features", id="no-features"), pytest.param(4, 1, "num_classes", id="one-class")],
)
def test_bad_sizes_are_rejected(name, in_features, num_classes, argument):
    with pytest.raises(ValueError, match=argument):
        create_head(name, in_features, num_classes)


@pytest.mark.parametrize(
    ("name", "options", "argument"),
    [
        pytest.param("slac", {"likelihood_weight": -0.01}, "likelihood_weight", id="slac-negative-lambda"),
        pytest.param("slac", {"likelihood_weight": math.nan}, "likelihood_weight", id="slac-nan-lambda"),
        pytest.param("slac", {"angle_weight": -0.1}, "angle_weight", id="slac-negative-beta"),
        pytest.param("slac", {"angle_weight": math.inf}, "angle_weight", id="slac-infinite-beta"),
        pytest.param("sl", {"init_covariance": 0.0}, "init_covariance", id="sl-zero-covariance"),
        pytest.param("lgm", {"init_covariance": -1.0}, "init_covariance", id="lgm-negative-covariance"),
        pytest.param("slac", {"likelihood_reduction": "median"}, "likelihood_reduction", id="reduction"),
        pytest.param("lgm", {"margin": -0.1}, "margin", id="lgm-negative-margin"),
        pytest.param("mom", {"margin": math.nan}, "margin", id="mom-nan-margin"),
        pytest.param("mom", {"num_components": 0}, "num_components", id="mom-no-components"),
        pytest.param("lgm", {"likelihood_weight": -1.0}, "likelihood_weight", id="lgm-negative-lambda"),
        pytest.param("lsoftmax", {"margin": 0}, "margin", id="lsoftmax-margin-0"),
        pytest.param("lsoftmax", {"margin": 1.5}, "margin", id="lsoftmax-fractional-margin"),
        pytest.param("lsoftmax", {"lambda_min": -1.0}, "lambda_min", id="lsoftmax-negative-lambda-min"),
        pytest.param("lsoftmax", {"lambda_power": math.nan}, "lambda_power", id="lsoftmax-nan-power"),
    ],
)
def test_invalid_options_are_rejected_naming_the_argument(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        create_head(name, 4, 3, **options)


def test_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="no_such_option"):
        create_head("slac", 4, 3, no_such_option=1)


# -------------------------------------------------------------------------------------- gradients
GRADCHECK_CASES = [
    pytest.param("linear", {}, id="linear"),
    # lambda held constant (gamma = 0) so that repeated training forwards see the same function
    pytest.param("lsoftmax", {"margin": 3, "lambda_base": 0.5, "lambda_gamma": 0.0}, id="lsoftmax-m3"),
    pytest.param("lgm", {"margin": 0.3}, id="lgm"),
    pytest.param("mom", {"margin": 0.3}, id="mom"),
    pytest.param("sl", {}, id="sl"),
    pytest.param("slac", {"likelihood_weight": 0.5, "angle_target_grad": True}, id="slac-target-grad"),
    # N * d = 15 features: blocks of 2 classes, recomputed in the backward pass
    pytest.param("slac", {"max_block_elements": 30, "angle_target_grad": True}, id="slac-blocked"),
]


class _LogitsAndLoss(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, features, targets):
        logits, loss = logits_and_loss(self.head, features, targets)
        return logits, loss.total


def gradcheck_head(head, constant=()):
    """gradcheck of (logits, loss.total) in the features and every parameter not named in `constant`."""
    torch.manual_seed(0)
    with torch.no_grad():  # move away from the initialization (gamma = 0, Sigma = 1) to a generic point
        for parameter in head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    wrapper = _LogitsAndLoss(head)
    named = {name: p.detach().clone() for name, p in wrapper.named_parameters()}
    varying = [name for name in named if name.removeprefix("head.") not in constant]
    features = torch.randn(5, head.in_features, dtype=F64, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 1])

    def function(features, *params):
        return torch.func.functional_call(
            wrapper, {**named, **dict(zip(varying, params, strict=True))}, (features, targets)
        )

    inputs = (features, *(named[name].requires_grad_(True) for name in varying))
    return torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("name", "options"), GRADCHECK_CASES)
def test_gradcheck_float64(name, options, training):
    head = create_head(name, 3, 4, **options).double().train(training)
    assert gradcheck_head(head)


def test_gradcheck_float64_slac_with_detached_angle_target():
    """With the default stop-gradient on the angle target, L_ac is not differentiated through mu and
    Sigma by design, so finite differences in them disagree; gradcheck the features and gamma."""
    head = create_head("slac", 3, 4, likelihood_weight=0.5).double().train()
    assert not head.angle_target_grad
    assert gradcheck_head(head, constant=("loc", "log_variance"))


# ------------------------------------------------------------------------------------- robustness
def assert_all_finite(head, features, targets):
    features = features.detach().requires_grad_(True)
    logits, loss = logits_and_loss(head, features, targets)
    assert torch.isfinite(logits).all()
    for part, value in {"total": loss.total, **loss.parts}.items():
        assert torch.isfinite(value), part
    loss.total.backward()
    assert torch.isfinite(features.grad).all()
    for parameter_name, parameter in head.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", MIXTURE_HEADS)
def test_features_equal_to_class_locations_and_zero_skewness_stay_finite(name):
    head = create_head(name, 8, 5).train()
    loc = head.loc.detach()
    features = (loc if loc.dim() == 2 else loc[:, 0]).clone()  # (5, 8): sample k sits on class k
    targets = torch.arange(5)
    assert_all_finite(head, features, targets)
    if isinstance(head, SkewLaplaceHead):
        assert torch.count_nonzero(head.skewness) == 0  # gamma = 0 (Algorithm 1)
        # gamma can leave 0: the likelihood and classification give it a nonzero gradient
        assert head.skewness.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["linear", "lsoftmax"])
def test_zero_features_stay_finite(name):
    assert_all_finite(create_head(name, 8, 5).train(), torch.zeros(4, 8), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("name", ALL_HEADS)
@pytest.mark.parametrize(
    ("dim", "num_classes", "scale"),
    [
        pytest.param(512, 100, 10.0, id="d512-K100"),
        pytest.param(2048, 1000, 3.0, id="d2048-K1000"),
        pytest.param(64, 10, 1e15, id="huge-1e15"),
    ],
)
def test_float32_stays_finite_at_large_width_and_huge_values(name, dim, num_classes, scale):
    torch.manual_seed(0)
    head = create_head(name, dim, num_classes).train()
    with torch.no_grad():
        if isinstance(head, SkewLaplaceHead):
            head.skewness.normal_()
    features = torch.randn(4, dim) * scale
    assert_all_finite(head, features, torch.randint(0, num_classes, (4,)))


# --------------------------------------------------------------------- parameter groups, freezing
@pytest.mark.parametrize("name", ALL_HEADS)
def test_param_groups_divide_only_the_covariance_learning_rate(name):
    head = create_head(name, 4, 3)
    groups = head_param_groups(head, base_lr=0.1, covariance_lr_factor=1e3)
    grouped = [p for group in groups for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, head.parameters()))  # each parameter exactly once
    by_name = {group["name"]: group for group in groups}
    assert by_name["head"]["lr"] == 0.1
    if isinstance(head, DensityHead):
        assert by_name["head_covariance"]["lr"] == pytest.approx(1e-4)
        assert by_name["head_covariance"]["params"] == [head.log_variance]
    else:
        assert set(by_name) == {"head"}


def test_sgd_step_on_the_log_variance_uses_the_divided_rate():
    torch.manual_seed(0)
    head = create_head("slac", 4, 3)
    optimizer = torch.optim.SGD(head_param_groups(head, base_lr=0.5, covariance_lr_factor=1e2))
    features, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    before = head.log_variance.detach().clone()
    _, loss = logits_and_loss(head, features, targets)
    loss.total.backward()
    expected = before - 0.5 / 1e2 * head.log_variance.grad
    optimizer.step()
    torch.testing.assert_close(head.log_variance.detach(), expected)


@pytest.mark.parametrize("argument", [0.0, -1.0, math.inf], ids=["zero", "negative", "inf"])
def test_bad_covariance_lr_factor_is_rejected(argument):
    with pytest.raises(ValueError, match="covariance_lr_factor"):
        head_param_groups(create_head("sl", 4, 3), 0.1, argument)


def test_initialization_follows_algorithm_1():
    head = create_head("slac", 64, 10)
    bound = math.sqrt(6.0 / (10 + 64))  # Xavier-uniform
    assert head.loc.abs().max() <= bound and head.loc.std() > bound / 4
    assert torch.count_nonzero(head.log_variance) == 0  # Sigma = 1
    assert torch.count_nonzero(head.skewness) == 0  # gamma = 0
    head = create_head("slac", 64, 10, init_covariance=0.5)
    torch.testing.assert_close(head.log_variance.exp(), torch.full((10, 64), 0.5))


@pytest.mark.parametrize(
    "frozen",
    ["learn_location", "learn_covariance", "learn_skewness"],
    ids=["freeze-location", "freeze-covariance", "freeze-skewness"],
)
def test_freezing_a_parameter_keeps_it_at_its_initial_value(frozen):
    torch.manual_seed(0)
    head = create_head("slac", 4, 3, **{frozen: False})
    parameter_of = {"learn_location": "loc", "learn_covariance": "log_variance", "learn_skewness": "skewness"}
    initial = {name: p.detach().clone() for name, p in head.named_parameters()}
    optimizer = torch.optim.SGD(head_param_groups(head, base_lr=0.5, covariance_lr_factor=1.0))
    features, targets = torch.randn(12, 4), torch.arange(12) % 3
    for _ in range(3):
        _, loss = logits_and_loss(head, features, targets)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    for name, parameter in head.named_parameters():
        changed = not torch.equal(parameter.detach(), initial[name])
        assert changed == (name != parameter_of[frozen]), name


@pytest.mark.parametrize("name", ["lgm", "lsoftmax", "mom", "sl", "slac"])
def test_heads_compute_in_full_precision_under_autocast(name):
    torch.manual_seed(0)
    head = create_head(name, 16, 5).train()
    if isinstance(head, SkewLaplaceHead):
        with torch.no_grad():
            head.skewness.normal_()
    features = torch.randn(6, 16).to(torch.bfloat16).requires_grad_(True)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    expected_logits, expected_loss = logits_and_loss(head, features.detach().float(), targets)
    if name == "lsoftmax":
        head.iteration.zero_()  # the same lambda for both calls
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, loss = logits_and_loss(head, features, targets)
    assert logits.dtype == torch.float32 and loss.total.dtype == torch.float32
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(loss.total, expected_loss.total)
    loss.total.backward()
    assert features.grad.dtype == torch.bfloat16 and torch.isfinite(features.grad.float()).all()

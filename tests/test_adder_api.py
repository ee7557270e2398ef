"""The public adder API: argument checks, dtypes and autocast, modules, registration, backend choice."""

import pytest
import torch
from torch import nn

from conftest import assert_close
from slac import functional
from slac.nn import Adder2d, AdderLinear
from slac.ops import available_backends, resolve_backend


# --- bad input: each error names the argument and what was expected --------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"input": torch.randn(2, 3, 4, 4, 1)}, ValueError, "input must be 3-D or 4-D"),
        ({"weight": torch.randn(4, 3, 3)}, ValueError, "weight must be 4-D"),
        ({"input": torch.ones(1, 3, 5, 5, dtype=torch.int64)}, TypeError, "input must have a floating dtype"),
        ({"input": [[1.0]]}, TypeError, "input must be a torch.Tensor"),
        ({"weight": torch.randn(4, 2, 3, 3)}, ValueError, "expects 2 input channels"),
        ({"groups": 2}, ValueError, "groups=2 must divide"),
        ({"groups": 0}, ValueError, "groups must be a positive int"),
        ({"stride": 0}, ValueError, "stride must be >= 1"),
        ({"padding": -1}, ValueError, "padding must be >= 0"),
        ({"dilation": (1, 2, 3)}, TypeError, "dilation must be an int or a pair"),
        ({"weight": torch.randn(4, 3, 7, 7)}, ValueError, "kernel height with dilation \\(7\\) is larger"),
        ({"dilation": 3}, ValueError, "kernel height with dilation \\(7\\) is larger"),
        ({"weight": torch.randn(4, 3, 3, 3, dtype=torch.float64)}, TypeError, "must have the same dtype"),
        ({"weight": torch.randn(4, 3, 3, 3, device="meta")}, ValueError, "weight is on meta"),
        ({"bias": torch.randn(5)}, ValueError, "bias must have 4 elements"),
        ({"backend": "cuda-fast"}, ValueError, "backend must be 'auto' or one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_adder2d_bad_input(kwargs, error, match):
    args = {"input": torch.randn(2, 3, 5, 5), "weight": torch.randn(4, 3, 3, 3)} | kwargs
    with pytest.raises(error, match=match):
        functional.adder2d(**args)


def test_backend_on_wrong_device_is_an_error():
    with pytest.raises(ValueError, match="runs on \\['cpu'\\] tensors, got meta"):
        resolve_backend("cpu", "meta")


def test_adder_linear_bad_input():
    with pytest.raises(ValueError, match="input has 5 features"):
        functional.adder_linear(torch.randn(3, 5), torch.randn(2, 4))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        functional.adder_linear(torch.randn(3, 5), torch.randn(2, 5, 1))


def test_auto_backend_is_visible():
    assert resolve_backend("auto", "cpu") == "cpu"
    assert set(available_backends("cpu")) >= {"cpu", "reference"}
    assert resolve_backend("reference", torch.device("cpu")) == "reference"


# --- shapes, dtypes, autocast ------------------------------------------------------------------------------
def test_unbatched_input_and_bias():
    x, w, b = torch.randn(3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(4)
    y = functional.adder2d(x, w, b, padding=1)
    assert y.shape == (4, 6, 6)
    assert_close(y, functional.adder2d(x[None], w, padding=1)[0] + b[:, None, None], 27)


def test_linear_accepts_leading_dimensions():
    x, w = torch.randn(2, 3, 7), torch.randn(5, 7)
    y = functional.adder_linear(x, w)
    assert y.shape == (2, 3, 5)
    assert_close(y.reshape(6, 5), -torch.cdist(x.reshape(6, 7), w, p=1), 7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_inputs_are_computed_in_float32(dtype):
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = functional.adder2d(x.to(dtype), w.to(dtype), padding=1)
    assert y.dtype == dtype
    expected = functional.adder2d(x.to(dtype).float(), w.to(dtype).float(), padding=1)
    torch.testing.assert_close(y, expected.to(dtype), rtol=0, atol=0)  # exact: only the final rounding
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad is not None


def test_autocast_runs_the_op_in_float32():
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = functional.adder2d(x.bfloat16(), w, padding=1)  # mixed dtypes are allowed under autocast
        z = nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert z.dtype == torch.bfloat16  # autocast is on...
    assert y.dtype == torch.float32  # ...and the adder op opted out of it
    assert_close(y, functional.adder2d(x.bfloat16().float(), w, padding=1), 27)


# --- modules ----------------------------------------------------------------------------------------------
def test_adder2d_module_is_shaped_like_conv2d():
    m = Adder2d(4, 8, 3, stride=2, padding=1, groups=2, bias=True)
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=True)
    assert m.weight.shape == conv.weight.shape and m.bias.shape == conv.bias.shape
    m.load_state_dict(conv.state_dict())  # same keys and shapes
    assert torch.equal(m.weight, conv.weight)
    x = torch.randn(2, 4, 9, 9)
    assert m(x).shape == conv(x).shape
    assert repr(m) == "Adder2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)"
    assert "backend='reference'" in repr(Adder2d(1, 1, 1, backend="reference"))


def test_adder_weights_are_standard_normal():
    w = Adder2d(64, 64, 3).weight.detach()
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1) < 0.02
    assert Adder2d(2, 2, 1).bias is None


def test_adder_linear_module():
    m = AdderLinear(6, 3, bias=True)
    m.load_state_dict(nn.Linear(6, 3).state_dict())
    x = torch.randn(4, 6)
    assert_close(m(x), -torch.cdist(x, m.weight, p=1) + m.bias, 6)
    assert repr(m) == "AdderLinear(in_features=6, out_features=3, bias=True)"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"groups": 3}, "groups=3 must divide"),
        ({"backend": "x"}, "backend must be"),
        ({"out_channels": 0}, "out_"),
    ],
)
def test_adder2d_module_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adder2d(**({"in_channels": 4, "out_channels": 8, "kernel_size": 3} | kwargs))


# --- registration -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", available_backends("cpu", interpreted=False))
def test_opcheck(backend):
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.slac.adder2d.default, (x, w, [2, 1], [1, 1], [1, 1], 2, backend))
    xl = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    wl = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.slac.adder_linear.default, (xl, wl, backend))


def test_torch_compile_fullgraph_matches_eager():
    model = nn.Sequential(
        Adder2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), AdderLinear(8 * 6 * 6, 5)
    )
    x = torch.randn(4, 3, 6, 6)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)  # inductor: traces the fake kernels, runs the real ones
    out = compiled(x)
    out.square().sum().backward()
    assert_close(out, eager_out, 288)
    for g, e in zip((p.grad for p in model.parameters()), eager_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


@pytest.mark.parametrize("backend", available_backends("cpu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_empty_batch_is_like_conv2d(backend, dtype):
    """N = 0, which nn.Conv2d and nn.Linear accept: an empty output, an empty input gradient and a zero
    weight gradient (a sum over no images), on every backend."""
    x = torch.randn(0, 4, 7, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=dtype, requires_grad=True)
    y = functional.adder2d(x, w, None, 2, 1, groups=2, backend=backend)
    assert y.shape == torch.nn.functional.conv2d(x, w, None, 2, 1, groups=2).shape and y.dtype == dtype
    (y.sum() + 1).backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))

    x = torch.randn(2, 0, 5, dtype=dtype, requires_grad=True)  # leading dimensions with no elements
    w = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    y = functional.adder_linear(x, w, backend=backend)
    assert y.shape == (2, 0, 3) and y.dtype == dtype
    (y.sum() + 1).backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("backend", available_backends("cpu", interpreted=False))
@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (4, 1), ((2, 5), (2, 1)), (1, 1)], ids=str)
def test_padding_same_and_valid_are_those_of_conv2d(backend, kernel, dilation):
    """padding="same" gives conv2d's output size, with conv2d's placement of the zeros (the odd one after,
    for an even dilated extent): the same as padding the input with those zeros and padding=0."""
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    w = torch.randn(6, 4, kh, kw, dtype=torch.float64)
    same = functional.adder2d(x, w, padding="same", dilation=dilation, backend=backend)
    assert same.shape == torch.nn.functional.conv2d(x, w, padding="same", dilation=dilation).shape
    th, tw = dh * (kh - 1), dw * (kw - 1)
    padded = torch.nn.functional.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    assert_close(same, functional.adder2d(padded, w, dilation=dilation, backend="reference"), w[0].numel())
    valid = functional.adder2d(x, w, padding="valid", dilation=dilation, backend=backend)
    assert_close(valid, functional.adder2d(x, w, dilation=dilation, backend="reference"), w[0].numel())
    layer = Adder2d(4, 6, kernel, padding="same", dilation=dilation, backend=backend).double()
    assert layer(x).shape[-2:] == x.shape[-2:] and "padding='same'" in repr(layer)


def test_padding_modes_and_strings_other_than_zeros_same_valid_are_refused():
    with pytest.raises(ValueError, match="pad with zeros only"):
        Adder2d(4, 8, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="needs stride 1"):
        Adder2d(4, 8, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        Adder2d(4, 8, 3, padding="full")
    with pytest.raises(ValueError, match="needs stride 1"):
        functional.adder2d(torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3), stride=2, padding="same")

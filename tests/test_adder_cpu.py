"""The cpu backend's register-blocked kernels (slac.ops.cpu): each tile and form at the edges of its tiles,
the rewritten forms where they cancel, non-finite inputs, the generated source and the machine code."""

import itertools

import pytest
import torch

from conftest import assert_close
from slac import functional
from slac.ops import _cpu_kernels as kernels
from slac.ops import cpu, cpu_codegen
from tools import asm

# the tiles the backend uses on this process's target: CI's two passes (native, emulated AVX2) cover the
# AVX-512 and the AVX2 tiles
USED_TILES = sorted(set(cpu.TILES[cpu._target_vector_registers()].values()))


def _reference(x, w, conv, gy):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = functional.adder2d(x, w, None, *conv, backend="reference")
    y.backward(gy)
    return y.detach(), x.grad


def _pair(v):
    return (v, v)


def _check(x, w, conv, forward_form, grad_form, what=""):
    stride, padding, dilation, groups = conv
    geometry = (_pair(stride), _pair(padding), _pair(dilation), groups)
    y_ref = functional.adder2d(x, w, None, *conv, backend="reference")
    gy = torch.randn_like(y_ref)
    _, dx_ref = _reference(x, w, conv, gy)
    y = cpu.adder2d_forward(x, w, *geometry, form=forward_form)
    dx = cpu.adder2d_grad_input(gy, x, w, *geometry, form=grad_form)
    kh, kw = w.shape[-2:]
    assert_close(y, y_ref, w[0].numel(), f"{what} forward {forward_form}")
    assert_close(dx, dx_ref, w.shape[0] * kh * kw, f"{what} grad input {grad_form}")


@pytest.fixture
def use_tile(monkeypatch):
    def use(p, q, bits):
        monkeypatch.setattr(cpu, "tile", lambda kind: (p, q, bits))

    return use


@pytest.fixture
def use_layout(monkeypatch):
    def use(layout):
        monkeypatch.setenv("SLAC_CPU_LAYOUT", layout)

    return use


@pytest.mark.parametrize("tile", USED_TILES, ids="{0[0]}x{0[1]}x{0[2]}".format)
@pytest.mark.parametrize("forms", [("min", "clamp"), ("abs", "direct")], ids="-".join)
def test_every_tile_and_form_at_the_edges_of_its_tiles(tile, forms, use_tile, use_layout):
    """Channel counts below, at and past a tile's Q, pixel counts below and past its P and a block,
    strides 1-2: the rows and columns a tile pads must never be written or read as data."""
    use_tile(*tile)
    use_layout("lanes")
    for out_channels, channels, size, kernel, stride in itertools.product(
        (1, 5, 9), (1, 3, 6), (1, 5, 13), (1, 3), (1, 2)
    ):
        if kernel > size + 2:
            continue
        x = torch.randn(2, channels, size, size + 1) * 1.5
        w = torch.randn(out_channels, channels, kernel, kernel)
        _check(
            x,
            w,
            (stride, kernel // 2, 1, 1),
            *forms,
            f"O{out_channels} C{channels} {size}px k{kernel} s{stride}",
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_broadcast_kernels_at_the_edges_of_their_tiles(dtype, use_layout):
    """The broadcast kernels (channels across the lanes): channel counts below, at and past one and two
    vectors (V = 1 and 2, and two channel blocks), pixel counts below and past P and a block, strides 1-2
    (the stride-1 input gradient and the one per residue class), 1x1 and 3x3 kernels."""
    use_layout("broadcast")
    lanes = cpu.broadcast_tile("forward", 1, dtype)[3]
    for out_channels, channels, size, kernel, stride in itertools.product(
        (1, lanes + 1, 2 * lanes + 1), (3, lanes + 1), (1, 5, 13), (1, 3), (1, 2)
    ):
        x = (torch.randn(2, channels, size, size + 1) * 1.5).to(dtype)
        w = torch.randn(out_channels, channels, kernel, kernel, dtype=dtype)
        _check(
            x,
            w,
            (stride, kernel // 2, 1, 1),
            "min",
            "clamp",
            f"O{out_channels} C{channels} {size}px k{kernel} s{stride}",
        )


def test_the_layout_rule(monkeypatch):
    """slac.ops.cpu.layout: broadcast where the channels written fit in BROADCAST_VECTORS vectors; the
    stride-1 input gradient as a forward over the padded gradient, the kernel per residue class where the
    padding is past the kernel's reach; the override checked."""
    monkeypatch.delenv("SLAC_CPU_LAYOUT", raising=False)
    f32 = torch.float32
    lanes = cpu.broadcast_tile("forward", 1, f32)[3]  # 16 with AVX-512, 8 with AVX2
    vectors = cpu.BROADCAST_VECTORS[cpu._target_vector_registers()]
    most = {kind: vectors[kind] * lanes for kind in ("forward", "grad_input")}
    assert cpu.layout("forward", (most["forward"], 128, 5, 5), f32) == "broadcast"
    assert cpu.layout("forward", (most["forward"] + 1, 1, 1, 1), f32) == "lanes"
    assert cpu.layout("grad_input", (128, most["grad_input"], 3, 3), f32) == "broadcast"
    assert cpu.layout("grad_input", (1, most["grad_input"] + 1, 3, 3), f32) == "lanes"
    x, w = torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3)
    conv = ((1, 1), (1, 1), (1, 1), 1)
    assert "broadcast" in cpu.forward_calls(x, w, *conv)[1][0].name
    assert "stride1" in cpu.grad_input_calls(torch.randn(2, 16, 8, 8), x, w, *conv)[1][0].name
    padded = ((1, 1), (3, 3), (1, 1), 1)  # padding past the kernel's reach: the kernel per residue class
    assert "clamp_broadcast" in cpu.grad_input_calls(torch.randn(2, 16, 12, 12), x, w, *padded)[1][0].name
    monkeypatch.setenv("SLAC_CPU_LAYOUT", "columns")
    with pytest.raises(ValueError, match="SLAC_CPU_LAYOUT='columns'"):
        cpu.layout("forward", (16, 16, 3, 3), f32)


@pytest.mark.parametrize("layout", cpu.LAYOUTS)
@pytest.mark.parametrize("tile", USED_TILES, ids="{0[0]}x{0[1]}x{0[2]}".format)
def test_float64_dilation_and_groups(tile, layout, use_tile, use_layout):
    use_tile(*tile)
    use_layout(layout)
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    wide = torch.randn(1, 4, 3, 41, dtype=torch.float64)  # rows of several gradient blocks (8 P pixels each)
    for form in (("min", "clamp"), ("abs", "direct")):
        _check(x, w, (2, 2, 2, 2), *form)
        _check(wide, w[:, :4], (1, 1, 1, 1), *form, "wide row")


# the rewritten forms' error against float64 may be at most this multiple of the direct forms': above the
# worst ratio over the cases below with the shift and below the ratios without it, natively and emulating
# AVX2 (the ratios measured: BENCHMARKS.md, "Figures behind design choices in the CPU kernels")
REWRITTEN_ERROR_FACTOR = 6


def _errors(x, w, stride, forms):
    """Largest error against float64 of the cpu forward and input gradient in the given forms (float32)."""
    geometry = (_pair(stride), (1, 1), (1, 1), 1)
    y64 = functional.adder2d(x.double(), w.double(), None, stride, 1, backend="reference")
    gy = torch.randn_like(y64)
    _, dx64 = _reference(x.double(), w.double(), (stride, 1, 1, 1), gy)
    y = cpu.adder2d_forward(x, w, *geometry, form=forms[0])
    dx = cpu.adder2d_grad_input(gy.float(), x, w, *geometry, form=forms[1])
    return (y.double() - y64).abs().max().item(), (dx.double() - dx64).abs().max().item()


def _shared_offset_cases(offset):
    for channels, size, stride in ((16, 12, 1), (64, 6, 1), (32, 8, 2)):
        x = offset + torch.randn(2, channels, size, size)
        yield x, offset + torch.randn(channels, channels, 3, 3), stride


@pytest.mark.parametrize("offset", [10.0, 20.0])
def test_rewritten_forms_hold_when_inputs_and_weights_share_an_offset(offset):
    """min(x, w) summed and x sum(G) subtracted cancel when x and w both sit near the offset. With the
    shift by the weights' mean the rewritten forms stay within the reference's tolerances and within
    REWRITTEN_ERROR_FACTOR of the direct forms' own error (ResNet-20 stage shapes: the longest reductions)."""
    for x, w, stride in _shared_offset_cases(offset):
        _check(x, w, (stride, 1, 1, 1), "min", "clamp", f"offset {offset} C{x.shape[1]}")
        direct = _errors(x, w, stride, ("abs", "direct"))
        rewritten = _errors(x, w, stride, ("min", "clamp"))
        for kind, r, d in zip(("forward", "grad input"), rewritten, direct, strict=True):
            assert r <= REWRITTEN_ERROR_FACTOR * d + 1e-6, (kind, offset, x.shape, r, d)


@pytest.mark.parametrize("layout", cpu.LAYOUTS)
def test_both_layouts_hold_the_bound(layout, use_layout):
    """The shared-offset cases in each layout: the broadcast kernels sum each lane's whole reduction, in
    chunks (cpu_codegen.CHUNK), within the same bound."""
    use_layout(layout)
    test_rewritten_forms_hold_when_inputs_and_weights_share_an_offset(20.0)


@pytest.mark.parametrize("layout", cpu.LAYOUTS)
def test_long_channel_reductions_hold_the_bound(layout, use_layout):
    """A 1x1 layer of many input channels and few outputs (one kernel tap: the broadcast kernels' chunks
    are then the only thing between the sum and a K eps error) and the linear form, with inputs and weights
    sharing an offset of 20: the rewritten forms within REWRITTEN_ERROR_FACTOR of the direct forms."""
    use_layout(layout)
    torch.manual_seed(0)
    x = 20 + 0.5 * torch.randn(2, 512, 4, 4)
    w = 20 + 0.5 * torch.randn(32, 512, 1, 1)
    geometry = ((1, 1), (0, 0), (1, 1), 1)
    y64 = functional.adder2d(x.double(), w.double(), None, backend="reference")
    gy = torch.randn_like(y64)
    _, dx64 = _reference(x.double(), w.double(), (1, 0, 1, 1), gy)
    errors = {}
    for forms in (("min", "clamp"), ("abs", "direct")):
        y = cpu.adder2d_forward(x, w, *geometry, form=forms[0])
        dx = cpu.adder2d_grad_input(gy.float(), x, w, *geometry, form=forms[1])
        errors[forms] = ((y.double() - y64).abs().max().item(), (dx.double() - dx64).abs().max().item())
    for kind, r, d in zip(
        ("forward", "grad input"), errors["min", "clamp"], errors["abs", "direct"], strict=True
    ):
        assert r <= REWRITTEN_ERROR_FACTOR * d + 1e-6, (kind, r, d)
    rows, weights = 20 + 0.5 * torch.randn(64, 4096), 20 + 0.5 * torch.randn(10, 4096)
    exact = -(rows.double()[:, None] - weights.double()[None]).abs().sum(-1)
    rewritten = (cpu.linear_forward(rows, weights).double() - exact).abs().max().item()
    direct = (functional.adder_linear(rows, weights, backend="reference").double() - exact).abs().max().item()
    assert rewritten <= REWRITTEN_ERROR_FACTOR * direct, (rewritten, direct)


def test_channels_last_packing():
    """slac.ops._cpu_pack.channels_last: x - shift channels last, the border -shift, the channels past C
    zero, the per-pixel sums over the channels; the sum of x - shift and the count of magnitudes past the
    limit; inf and NaN in the sum."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    shift = torch.randn(3, dtype=torch.float64)
    out, sums, total, over = cpu._channels_last(x, shift, (1, 2), 4)
    expected = torch.zeros(2, 6, 9, 4, dtype=torch.float64)
    expected[..., :3] = -shift
    expected[:, 1:5, 2:7, :3] = (x - shift[:, None, None]).permute(0, 2, 3, 1)
    assert torch.equal(out, expected)
    torch.testing.assert_close(sums, expected.sum(-1))
    shifted = x - shift[:, None, None]
    assert total == pytest.approx(float(shifted.sum()))
    assert over == int((shifted.abs() > cpu._CLAMP_LIMIT).sum()) == 0
    x[0, 1, 2, 3] = 100.0
    assert cpu._channels_last(x, shift, (0, 0), 3)[3] == 1
    for bad in (float("inf"), float("nan")):
        x[1, 2, 3, 4] = bad
        assert not cpu._finite(cpu._channels_last(x, shift, (1, 1), 3)[2])


def test_without_the_shift_the_rewritten_forms_would_fail(monkeypatch):
    """The test above can fail: with the shift taken out, the same inputs miss its bound."""
    monkeypatch.setattr(cpu, "_shift", lambda weight, form: weight.new_zeros(weight.shape[1]))
    with pytest.raises(AssertionError):
        test_rewritten_forms_hold_when_inputs_and_weights_share_an_offset(20.0)


def test_non_finite_inputs_take_the_direct_forms():
    """min(x, w) with x = -inf would give -inf - (-inf) = NaN where |x - w| = inf: the backend detects a
    non-finite input and computes that call in the direct forms, which agree with the reference."""
    x = torch.randn(1, 3, 6, 6)
    x[0, 1, 2, 2] = -float("inf")
    x[0, 2, 4, 4] = float("inf")
    w = torch.randn(4, 3, 3, 3)
    y = functional.adder2d(x, w, padding=1, backend="cpu")
    expected = functional.adder2d(x, w, padding=1, backend="reference")
    torch.testing.assert_close(y, expected, equal_nan=True)
    assert y.isinf().any() and not y.isnan().any()
    forced = cpu.adder2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1, form="min")
    assert forced.isnan().any()  # what the min form would have given


def test_non_finite_values_in_the_backward_take_the_direct_form():
    """inf in the input or the upstream gradient: the clamp form would subtract inf from inf."""
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    with torch.no_grad():
        x[0, 1, 2, 2] = float("inf")
    gy = torch.randn(1, 4, 6, 6)
    gy[0, 2, 4, 4] = -float("inf")
    grads = []
    for backend in ("cpu", "reference"):
        x.grad = None
        functional.adder2d(x, w, padding=1, backend=backend).backward(gy)
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], equal_nan=True)
    assert grads[1].isinf().any()


def test_inputs_far_from_the_weights_take_the_direct_input_gradient():
    """Inputs of 100 against weights near 0 (no shared offset the shift could remove): the clamp form's
    terms are 100x the direct form's. The backend takes the direct form and matches the reference; the
    clamp form, forced, would not."""
    x = 100 * torch.randn(2, 64, 6, 6)
    w = torch.randn(64, 64, 3, 3)
    _check(x, w, (1, 1, 1, 1), "min", None, "automatic")
    with pytest.raises(AssertionError):
        _check(x, w, (1, 1, 1, 1), "min", "clamp", "clamp forced")


def test_generated_kernels_are_the_generators_output():
    assert cpu_codegen.TARGET.read_text() == cpu_codegen.source(), "run: python -m slac.ops.cpu_codegen"


@pytest.mark.parametrize("kind", ["forward", "grad_input"])
def test_single_thread_arguments_run_the_kernel_over_the_whole_range(kind):
    """``python -m tools.asm`` runs a kernel by itself on ``single_thread_arguments``: the kernel's own
    arguments, by name, for the whole range with scratch. Its result is the threaded call's, bit for bit
    (the threads' ranges start on whole blocks)."""
    x, w = torch.randn(2, 5, 7, 6), torch.randn(6, 5, 3, 3)
    geometry = ((2, 1), (1, 1), (1, 1), 1)
    if kind == "forward":
        result, (call,) = cpu.forward_calls(x, w, *geometry)
    else:
        result, (call,) = cpu.grad_input_calls(torch.randn(2, 6, 4, 6), x, w, *geometry)
    call.run()
    threaded = result.clone()
    result.fill_(float("nan"))  # the arguments hold views of it: the kernel writes every element
    getattr(kernels, call.name)(*cpu.single_thread_arguments(call.arguments))
    assert torch.equal(result, threaded)


def test_forms_are_checked():
    x, w = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="forward form 'clamp'"):
        cpu.adder2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1, form="clamp")
    with pytest.raises(ValueError, match="grad_input form 'min'"):
        cpu.adder2d_grad_input(torch.randn(1, 3, 4, 4), x, w, (1, 1), (1, 1), (1, 1), 1, form="min")


def test_tile_override_is_checked(monkeypatch):
    cpu.tile.cache_clear()
    try:
        monkeypatch.setenv("SLAC_CPU_FORWARD", "5x5x256")
        with pytest.raises(ValueError, match="SLAC_CPU_FORWARD='5x5x256'"):
            cpu.tile("forward")
        monkeypatch.setenv("SLAC_CPU_FORWARD", "4x4")
        with pytest.raises(ValueError, match="PxQxBITS"):
            cpu.tile("forward")
        monkeypatch.setenv("SLAC_CPU_FORWARD", "2x4x512")
        assert cpu.tile("forward") == (2, 4, 512)
    finally:
        cpu.tile.cache_clear()


@pytest.mark.parametrize("layout", cpu.LAYOUTS)
@pytest.mark.parametrize(("kind", "form", "per_pair"), [("forward", "min", 2), ("grad_input", "clamp", 3)])
def test_hot_loops_keep_their_accumulators_in_registers(kind, form, per_pair, layout):
    """The machine code of the kernels the backend picks on this target (run natively and under the
    emulated AVX2 target in CI), in both layouts: the hot loop has a tile's worth of accumulators, no stack
    access (no spill), and the instructions per pair-vector of its form (min, add; max, min, FMA)."""
    name, code = asm.compile_kernel(kind, form, layout=layout)
    report = asm.analyse(name, "float32", code)
    if layout == "lanes":
        p, q, bits = cpu.tile(kind)
    else:
        p, q, bits, _ = cpu.broadcast_tile(kind, asm.LAYER["broadcast"][0], torch.float32)
    assert report.accumulators == p * q, report
    assert report.spills == 0, report
    assert report.instructions_per_pair_vector == per_pair, report
    assert report.vector_bits == (bits if cpu._target_vector_registers() == 32 else 256), report

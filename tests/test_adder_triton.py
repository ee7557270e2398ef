"""The Triton backend against the reference. Without a GPU the kernels run under TRITON_INTERPRET=1 on
small shapes (the interpreter is slow); the tests marked ``cuda`` run large shapes and half types on a GPU.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_close
from slac import functional
from slac.errors import DeviceError
from slac.ops import available_backends

pytestmark = pytest.mark.skipif("triton" not in available_backends(), reason="triton is not installed")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# (kernel, stride, padding, dilation, groups, batch): every value of the CPU grid appears, scaled down
CASES = [
    (3, 1, 1, 1, 1, 2),
    (3, 2, 1, 1, 1, 1),
    (3, 1, 0, 2, 2, 2),
    (3, 2, 2, 2, 4, 1),
    (1, 1, 0, 1, 1, 2),
    (1, 2, 0, 1, 2, 1),
    (1, 2, 1, 1, 4, 2),
    (5, 1, 2, 1, 1, 1),
    (5, 2, 2, 2, 2, 2),
    (5, 1, 0, 1, 4, 1),
    # the input gradient's residue classes: stride 3, unequal strides, dilation sharing a factor with the
    # stride (the odd classes are reached by no tap), padding larger than the dilated kernel's half
    (3, 3, 1, 1, 1, 2),
    (3, (2, 3), (1, 0), (1, 2), 1, 1),
    (3, 2, 1, 2, 1, 1),
    (2, (3, 1), (2, 3), 1, 2, 1),
]


def _case_id(case):
    k, s, p, d, g, b = (v if isinstance(v, int) else "x".join(map(str, v)) for v in case)
    return f"k{k}-s{s}-p{p}-d{d}-g{g}-b{b}"


def _grads(backend, x, w, conv, gy):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = functional.adder2d(x, w, None, *conv, backend=backend)
    y.backward(gy)
    return y.detach(), x.grad, w.grad


def _compare(x, w, conv, what=""):
    y_ref = functional.adder2d(x.double(), w.double(), None, *conv, backend="reference")
    gy = torch.randn_like(y_ref)
    y, dx, dw = _grads("triton", x, w, conv, gy.to(x.dtype))
    _, dx_ref, dw_ref = _grads("reference", x.double(), w.double(), conv, gy)
    k = w[0].numel()
    if x.dtype in (torch.float64, torch.float32):
        assert_close(y, y_ref.to(x.dtype), k, f"{what} forward")
        assert_close(dx, dx_ref.to(x.dtype), w.shape[0] * w.shape[-1] ** 2, f"{what} grad input")
        assert_close(dw, dw_ref.to(x.dtype), y_ref[:, 0].numel(), f"{what} grad weight")
    else:  # half inputs, float32 accumulation: only the final rounding (and the inputs') differ
        for a, b, name in ((y, y_ref, "forward"), (dx, dx_ref, "grad input"), (dw, dw_ref, "grad weight")):
            torch.testing.assert_close(a.double(), b, rtol=1e-2, atol=1e-2 * b.abs().max().item(),
                                       msg=lambda m, n=name: f"{what} {n}: {m}")  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_triton_adder2d_matches_reference(case, dtype):
    kernel, stride, padding, dilation, groups, batch = case
    x = torch.randn(batch, 4, 9, 8, dtype=dtype, device=DEVICE) * 1.5
    w = torch.randn(8, 4 // groups, kernel, kernel, dtype=dtype, device=DEVICE)
    _compare(x, w, (stride, padding, dilation, groups))


@pytest.mark.parametrize("groups", [1, 2])
def test_triton_tiles_many_channels(groups):
    # more channels than one tile holds (16 under the interpreter): several channel tiles per group, the
    # last one partly masked, so the register tiles' offsets within a group and across groups are exercised
    x = torch.randn(2, 20, 5, 6, device=DEVICE)
    w = torch.randn(40, 20 // groups, 3, 3, device=DEVICE)
    _compare(x, w, (1, 1, 1, groups), f"40 channels, groups {groups}")
    _compare(x, w, (2, 0, 1, groups), f"40 channels, groups {groups}, stride 2")


def test_triton_reads_channels_last_and_strided_inputs():
    x = torch.randn(2, 6, 7, 9, device=DEVICE).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 6, 3, 3, device=DEVICE)
    _compare(x, w, (1, 1, 1, 1), "channels_last")
    _compare(torch.randn(2, 6, 9, 7, device=DEVICE).transpose(2, 3), w, (2, 1, 1, 1), "transposed")


def test_triton_float16_accumulates_in_float32():
    x = torch.randn(2, 4, 6, 6, device=DEVICE).half()
    w = torch.randn(6, 4, 3, 3, device=DEVICE).half()
    y = functional.adder2d(x, w, padding=1, backend="triton")
    assert y.dtype == torch.float16
    _compare(x, w, (1, 1, 1, 1), "float16")


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (9, 40, 17)], ids=str)
def test_triton_adder_linear(shape):
    n, k, o = shape
    x = torch.randn(n, k, device=DEVICE, requires_grad=True)
    w = torch.randn(o, k, device=DEVICE, requires_grad=True)
    gy = torch.randn(n, o, device=DEVICE)
    functional.adder_linear(x, w, backend="triton").backward(gy)
    dx, dw = x.grad, w.grad
    x.grad = w.grad = None
    y_ref = functional.adder_linear(x, w, backend="reference")
    y_ref.backward(gy)
    assert_close(functional.adder_linear(x, w, backend="triton"), y_ref.detach(), k)
    assert_close(dx, x.grad, o)
    assert_close(dw, w.grad, n)


def test_triton_grad_input_clamp_form_does_not_cancel():
    """The input gradient's clamp form sum G clamp(w, x - 1, x + 1) - x sum G cancels when inputs and
    weights share an offset (both terms near 20 sum G); the shift of both by the channel's mean weight keeps
    it at the reference's tolerance. One-signed gradients make the sums grow with the terms: unshifted, the
    error is several times the tolerance (5 times here), shifted a twentieth of it."""
    from slac.ops import reference
    from slac.ops import triton_kernels as t

    conv = ([1, 1], [1, 1], [1, 1], 1)
    x = 20 + torch.randn(2, 4, 4, 4, device=DEVICE)
    w = 20 + torch.randn(16, 4, 3, 3, device=DEVICE)
    g = torch.randn(2, 16, 4, 4, device=DEVICE).abs()
    exact = reference.adder2d_grad_input(g.double(), x.double(), w.double(), *conv)
    assert_close(t.adder2d_grad_input(g, x, w, *conv), exact.float(), w.shape[0] * 9, "offset 20")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy
def test_triton_grad_input_inf_as_reference():
    """Entries whose clamp form is not finite (inf - inf) are formed in the direct form, which gives what
    the reference gives for inf: an inf input HT = -1 or 1, an inf weight HT = 1 (its channel's shift is
    then inf too), an inf or NaN gradient inf or NaN."""
    from slac.ops import reference
    from slac.ops import triton_kernels as t

    conv = ([1, 1], [1, 1], [1, 1], 1)
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    w = torch.randn(3, 4, 3, 3, device=DEVICE)
    g = torch.randn(2, 3, 5, 5, device=DEVICE)
    x[0, 0, 2, 2], x[0, 1, 0, 4] = float("inf"), -float("inf")
    w[2, 3, 1, 1] = float("inf")
    g[0, 2, 4, 0], g[1, 0, 3, 3] = float("nan"), float("inf")
    got = t.adder2d_grad_input(g, x, w, *conv)
    exact = reference.adder2d_grad_input(g.double(), x.double(), w.double(), *conv).float()
    finite = exact.isfinite()
    assert 0 < finite.sum() < finite.numel() and exact.isinf().any() and exact.isnan().any()
    assert torch.equal(got.isnan(), exact.isnan()) and torch.equal(got.isinf(), exact.isinf())
    assert torch.equal(got[exact.isinf()], exact[exact.isinf()])
    assert_close(got[finite], exact[finite], w.shape[0] * 9, "finite entries")


def _offset_operands(dtype, *shapes):
    """Inputs and weights that share an offset of 20 (spread 0.2) and a gradient, rounded to ``dtype``: the
    weight gradient's two terms G.X and W.sum(G) are about 100 times their difference."""
    x, w = (20 + 0.2 * torch.randn(shape, device=DEVICE, dtype=torch.float64) for shape in shapes[:2])
    g = torch.randn(shapes[2], device=DEVICE, dtype=torch.float64)
    return x.to(dtype), w.to(dtype), g.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_half_weight_gradient_does_not_cancel(dtype):
    """The half-precision weight gradient is formed in float32 and rounded once: within 2 ulps of the
    largest entry of the exact gradient of the rounded operands. Formed in the half type, its error is the
    cancellation's: tens of ulps."""
    from slac.ops import reference
    from slac.ops import triton_kernels as t

    eps = torch.finfo(dtype).eps
    conv = ([1, 1], [1, 1], [1, 1], 1)
    x, w, g = _offset_operands(dtype, (4, 8, 6, 6), (5, 8, 3, 3), (4, 5, 6, 6))
    exact = reference.adder2d_grad_weight(g.double(), x.double(), w.double(), *conv)
    got = t.adder2d_grad_weight(g, x, w, *conv)
    assert got.dtype == dtype
    error, scale = (got.double() - exact).abs().max().item(), exact.abs().max().item()
    assert error <= 2 * eps * scale, f"error {error / (eps * scale):.1f} ulps of the largest entry"

    x, w, g = _offset_operands(dtype, (96, 40), (7, 40), (96, 7))
    exact = reference.linear_grad_weight(g.double(), x.double(), w.double())
    got = t.linear_grad_weight(g, x, w)
    assert got.dtype == dtype
    error, scale = (got.double() - exact).abs().max().item(), exact.abs().max().item()
    assert error <= 2 * eps * scale, f"error {error / (eps * scale):.1f} ulps of the largest entry"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1), (33, 70, 5), (100, 17, 40)], ids=str)
def test_triton_linear_grad_weight_kernel(shape, dtype, monkeypatch):
    """The fused kernel (G^T X - W sum G) against the reference on tile edges, and without writing torch's
    process-wide matmul flags (another thread's GEMMs would see them)."""
    from slac.ops import reference
    from slac.ops import triton_kernels as t

    class Flags:  # stands in for torch.backends.cuda.matmul and records every write
        def __init__(self, inner):
            object.__setattr__(self, "inner", inner)
            object.__setattr__(self, "written", [])

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __setattr__(self, name, value):
            self.written.append(name)

    flags = Flags(torch.backends.cuda.matmul)
    monkeypatch.setattr(torch.backends.cuda, "matmul", flags)
    n, k, o = shape
    x, w, g = (torch.randn(size, device=DEVICE, dtype=dtype) for size in ((n, k), (o, k), (n, o)))
    got = t.linear_grad_weight(g, x.t().contiguous().t(), w)  # a column-major input: strides are arguments
    assert flags.written == []
    assert_close(got, reference.linear_grad_weight(g, x, w), n)


def test_triton_autotunes_once_for_nearby_batch_sizes():
    """The autotuning key holds the pixel count rounded up to a power of two, so an epoch's last, smaller
    batch (here 100 after batches of 128) reuses the full batch's config in both kernels."""
    from slac.ops import triton_kernels as t

    assert "n_pixels" not in t.AUTOTUNE_KEY and "pixel_bucket" in t.AUTOTUNE_KEY

    def keys(batch):
        x = torch.empty(batch, 16, 8, 8, device="meta")
        w = torch.empty(32, 16, 3, 3, device="meta")
        y = torch.empty(batch, 32, 8, 8, device="meta")
        conv = ([1, 1], [1, 1], [1, 1], 1)
        calls = (t.forward_call(x, w, y, *conv), t.grad_input_call(y, x, w, torch.empty_like(x), *conv))
        values = [
            {**dict(zip(call.kernel.arg_names, call.args, strict=False)), **call.constexprs} for call in calls
        ]
        return [tuple(v[name] for name in t.AUTOTUNE_KEY) for v in values]

    assert keys(100) == keys(128) and keys(65) == keys(128)
    assert keys(129) != keys(128) and keys(64) != keys(128)


def test_triton_opcheck():
    x = torch.randn(2, 4, 5, 6, device=DEVICE, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.slac.adder2d.default, (x, w, [2, 1], [1, 1], [1, 1], 2, "triton"))


# --- GPU only ----------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.cuda
def test_auto_picks_triton_on_cuda():
    from slac.ops import resolve_backend

    assert resolve_backend("auto", "cuda") == "triton"


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize(
    "shape",
    [(32, 16, 16, 32, 3, 1), (32, 16, 32, 32, 3, 2), (16, 64, 64, 8, 3, 1), (4, 64, 128, 56, 3, 2),
     (4, 256, 256, 14, 3, 1), (8, 64, 128, 56, 1, 2)],
    ids=str,
)  # fmt: skip
def test_triton_large_shapes(shape):
    b, c, o, size, k, s = shape
    x = torch.randn(b, c, size, size, device="cuda")
    w = torch.randn(o, c, k, k, device="cuda")
    _compare(x, w, (s, k // 2, 1, 1), "large")


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_triton_half_types_large(dtype):
    x = torch.randn(16, 32, 16, 16, device="cuda", dtype=dtype)
    w = torch.randn(64, 32, 3, 3, device="cuda", dtype=dtype)
    _compare(x, w, (1, 1, 1, 1), str(dtype))


# --- the machine code for an H100, compiled here without one -------------------------------------------
def _sass_reports(*args):
    # the interpreter accepts programs that the GPU compiler rejects. Compiling needs a process without
    # TRITON_INTERPRET (which this one has set for the tests above)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "tools.sass", "--json", *args]
    root = Path(__file__).resolve().parents[1]  # tools/ lives beside the library
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_triton_kernels_compile_for_sm90_without_spilling_in_the_hot_loop(dtype):
    # the config each kernel uses without autotuning (the first that fits), compiled for sm_90 as it would
    # be launched for a ResNet-20 layer (stage 2, 32 channels, batch 256)
    reports = _sass_reports("--shapes", "resnet20", "--layers", "2", "--first", "--dtype", dtype)
    assert [(r["kernel"], r["layer"], r["batch"]) for r in reports] == [
        ("forward", "stage2 3x3 32-32 16px", 256), ("grad_input", "stage2 3x3 32-32 16px", 256)
    ]  # fmt: skip
    for r in reports:
        assert 0 < r["registers"] <= 255 and r["loop_spills"] == 0, r
        # the |x - w| (forward) or max-min-multiply-add (grad input) arithmetic is most of the hot loop:
        # 0.80-0.88 with each thread's register tile; the one-channel-per-thread layout that Triton picks
        # when a load imposes its own reached 0.74, the earlier broadcast-reduce kernels 0.36
        assert r["arithmetic_fraction"] > 0.78, r
        # one barrier per channel (output channel for the input gradient) of the tile, for the operand
        # column passed through shared memory
        per_pair = 2 if r["kernel"] == "forward" else 3
        arithmetic_per_channel = per_pair * r["BLOCK_M"] * r["BLOCK_N"] / (32 * r["num_warps"])
        assert r["barriers_per_1k"] * arithmetic_per_channel / 1000 <= 1, r


def test_sass_tool_refuses_interpreted_kernels_and_bad_arguments():
    from slac.ops import triton_kernels
    from tools import sass

    layer = sass.RESNET20_CIFAR_SHAPES[0]
    with pytest.raises(ValueError, match="unknown kernel"):
        sass.kernel_call("backward", layer, 8)
    with pytest.raises(ValueError, match="dtype is one of"):
        sass.kernel_call("forward", layer, 8, "int8")
    with pytest.raises(SystemExit, match="layers 0-6, not 9"):
        sass.cli(["--shapes", "resnet20", "--layers", "9"])
    if not triton_kernels.INTERPRET:
        pytest.skip("the kernels were loaded for a GPU here")
    with pytest.raises(DeviceError, match="without TRITON_INTERPRET"):
        sass.compile_kernel(sass.kernel_call("forward", layer, 8), triton_kernels.INTERPRETER_BLOCK)


def test_triton_refuses_tensors_beyond_32_bit_offsets():
    from slac.ops import triton_kernels

    big = torch.empty(2**16, 2**15 + 1, device="meta")  # its last element lies past 2**31
    with pytest.raises(ValueError, match=r"32-bit offsets.*split the batch"):
        triton_kernels._check_index_range(big)
    triton_kernels._check_index_range(big[: 2**15])  # a view that stays below: accepted
    with pytest.raises(ValueError, match="32-bit offsets"):
        triton_kernels._check_index_range(big.t())


def test_triton_configs_fit_the_layer_and_the_dtype():
    import triton.language as tl

    from slac.ops import triton_kernels as t

    configs = [block.config() for block in [*t.FORWARD_SPACE, t.FLOAT64_BLOCK]]

    def fitting(n, acc=tl.float32):
        return [t.Block.of(cfg) for cfg in t._fitting(configs, n, acc)]

    sixteen = [block for block in t.FORWARD_SPACE if block.n == 16]
    assert len(sixteen) >= 1 and fitting(12) == fitting(16) == sixteen  # no 32- or 64-wide tiles
    assert fitting(32)[0].n == 32 and all(block.n <= 32 for block in fitting(32))
    assert fitting(512) == t.FORWARD_SPACE  # every config of the space, the first used without tuning
    assert fitting(512, tl.float64) == fitting(3, tl.float64) == [t.FLOAT64_BLOCK]


def test_triton_blocks_are_checked():
    from slac.ops.triton_kernels import FLOAT64_BLOCK, FORWARD_SPACE, GRAD_INPUT_SPACE, Block
    from tools import sass

    for block in [*FORWARD_SPACE, *GRAD_INPUT_SPACE, FLOAT64_BLOCK]:
        assert block.check() is block
        lanes_m, lanes_n = block.lanes()
        assert lanes_m * lanes_n == 32 * block.warps  # one register tile per thread, no replication
    for bad in [(128, 64, 2, 2, 8, 8), (128, 64, 4, 2, 8, 6), (64, 256, 4, 1, 1, 2), (128, 64, 4, 0, 8, 8)]:
        with pytest.raises(ValueError, match="power of two"):
            Block(*bad).check()
    with pytest.raises(SystemExit, match="--config"):
        sass.cli(["--kernel", "forward", "--config", "128", "64", "4", "2", "8", "4"])


def test_triton_refuses_grids_beyond_cuda_limits():
    from slac.ops import triton_kernels as t

    groups = 70000  # depthwise: groups x channel tiles over grid axis 1 exceeds 65535
    x = torch.empty(1, groups, 4, 4, device="meta")
    w = torch.empty(groups, 1, 1, 1, device="meta")
    y = torch.empty(1, groups, 4, 4, device="meta")
    conv = ([1, 1], [0, 0], [1, 1], groups)
    with pytest.raises(ValueError, match="65535 programs; this layer needs 70000"):
        t.forward_call(x, w, y, *conv)
    with pytest.raises(ValueError, match="65535 programs"):
        t.grad_input_call(y, x, w, torch.empty_like(x), *conv)
    call = t.forward_call(x[:, :64], w[:64], y[:, :64], [1, 1], [0, 0], [1, 1], 64)  # 64 groups: fine
    assert call.n == 1 and call.grid({"BLOCK_M": 32, "BLOCK_N": 16}) == (1, 64)

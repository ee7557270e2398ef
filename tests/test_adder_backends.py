"""Every fast backend against the reference: outputs, input and weight gradients, random upstream gradient."""

import itertools
import os

import pytest
import torch

from conftest import assert_close
from slac import functional
from slac.ops import available_backends

# Triton under its CPU interpreter has its own scaled-down grid in test_adder_triton.py
FAST_CPU_BACKENDS = [b for b in available_backends("cpu", interpreted=False) if b != "reference"]
DTYPES = [torch.float64, torch.float32]


def _grid():
    cases = []
    for kernel, stride, padding, dilation, groups in itertools.product(
        (1, 3, 5), (1, 2), (0, 1, 2), (1, 2), (1, 2, 4)
    ):
        if kernel == 1 and dilation == 2:
            continue  # dilation does nothing to a 1x1 kernel
        cases.append((kernel, stride, padding, dilation, groups))
    return cases


def _case_id(case):
    k, s, p, d, g = case
    return f"k{k}-s{s}-p{p}-d{d}-g{g}"


def _run(backend, x, w, conv, gy):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = functional.adder2d(x, w, None, *conv, backend=backend)
    y.backward(gy)
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", _grid(), ids=_case_id)
def test_adder2d_matches_reference(backend, dtype, case):
    kernel, stride, padding, dilation, groups = case
    batch = 1 if (kernel + stride + padding) % 2 else 3  # both batch 1 and larger batches are covered
    x = torch.randn(batch, 8, 11, 10, dtype=dtype) * 1.5  # odd sizes; |w - x| > 1 often
    w = torch.randn(12, 8 // groups, kernel, kernel, dtype=dtype)
    conv = (stride, padding, dilation, groups)
    y_ref = functional.adder2d(x, w, None, *conv, backend="reference")
    gy = torch.randn_like(y_ref)
    y, dx, dw = _run(backend, x, w, conv, gy)
    _, dx_ref, dw_ref = _run("reference", x, w, conv, gy)
    assert_close(y, y_ref, w[0].numel(), "forward")
    assert_close(dx, dx_ref, w.shape[0] * kernel * kernel, "grad input")
    assert_close(dw, dw_ref, y_ref[:, 0].numel(), "grad weight")


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (33, 130, 17), (4, 1023, 9)], ids=str)
def test_adder_linear_matches_reference(backend, dtype, shape):
    n, k, o = shape
    x = torch.randn(n, k, dtype=dtype, requires_grad=True)
    w = torch.randn(o, k, dtype=dtype, requires_grad=True)
    gy = torch.randn(n, o, dtype=dtype)
    results = {}
    for name in (backend, "reference"):
        x.grad = w.grad = None
        y = functional.adder_linear(x, w, backend=name)
        y.backward(gy)
        results[name] = (y.detach(), x.grad.clone(), w.grad.clone())
    (y, dx, dw), (y_ref, dx_ref, dw_ref) = results[backend], results["reference"]
    assert_close(y, y_ref, k, "forward")
    assert_close(dx, dx_ref, o, "grad input")
    assert_close(dw, dw_ref, n, "grad weight")


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_realistic_layer_matches_reference(backend):
    # a ResNet-20 stage-2 layer at a small batch, channels >= 16 (the kernels' vectorized paths)
    x = torch.randn(2, 32, 16, 16)
    w = torch.randn(64, 32, 3, 3)
    y_ref = functional.adder2d(x, w, None, 2, 1, backend="reference")
    gy = torch.randn_like(y_ref)
    y, dx, dw = _run(backend, x, w, (2, 1, 1, 1), gy)
    _, dx_ref, dw_ref = _run("reference", x, w, (2, 1, 1, 1), gy)
    assert_close(y, y_ref, 288, "forward")
    assert_close(dx, dx_ref, 64 * 9, "grad input")
    assert_close(dw, dw_ref, 64, "grad weight")


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    x = torch.randn(3, 10, 9, 6).permute(0, 1, 3, 2)[:, ::2]  # strided and transposed
    w = torch.randn(4, 5, 3, 3).transpose(2, 3)
    expected = functional.adder2d(x.contiguous(), w.contiguous(), backend="reference")
    assert_close(functional.adder2d(x, w, backend=backend), expected, 45)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert_close(functional.adder2d(channels_last, w, backend=backend), expected, 45)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_nan_propagates(backend):
    x = torch.randn(1, 2, 6, 6)
    x[0, 1, 2, 2] = float("nan")
    y = functional.adder2d(x, torch.randn(3, 2, 3, 3), backend=backend)  # (1, 3, 4, 4)
    assert y[0, :, :3, :3].isnan().all()  # every window that sees the NaN
    assert not y[0, :, 3, :].isnan().any() and not y[0, :, :, 3].isnan().any()


def test_cpu_kernels_are_compiled_for_the_target_instruction_set():
    """CI runs the adder tests twice: for the host CPU, and with SLAC_CPU_TARGET=avx2 for an AVX2-only CPU
    (AMD EPYC Zen 1) emulated on whatever host CI has (NUMBA_CPU_NAME/NUMBA_CPU_FEATURES for the numba
    kernels, ATEN_CPU_CAPABILITY for PyTorch's kernels, ONEDNN_MAX_CPU_ISA for oneDNN's convolutions, see
    .ci/run). This checks that the emulation is real: under it the forward kernel, compiled afresh as the
    cpu backend compiles it, uses 256-bit registers and no AVX-512 register or mask anywhere, and PyTorch
    and oneDNN report AVX2. Natively it checks that the kernel is vectorized (the tile, and with it the
    width, follows the target: tests/test_adder_cpu.py checks the hot loops themselves)."""
    import subprocess
    import sys

    from tools import asm

    name, code = asm.compile_kernel("forward", "min")
    report = asm.analyse(name, "float32", code)
    if os.environ.get("SLAC_CPU_TARGET") == "avx2":
        assert report.vector_bits == 256, report
        assert report.zmm_anywhere == report.mask_registers_anywhere == 0, report
        assert torch.backends.cpu.get_cpu_capability() == "AVX2"
        probe = (
            "import torch; torch.nn.functional.conv2d(torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3))"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, ONEDNN_VERBOSE="1"),
        )
        assert "isa:Intel AVX2" in result.stdout + result.stderr, result.stdout[-2000:]
    else:
        assert report.vector_bits >= 256, report

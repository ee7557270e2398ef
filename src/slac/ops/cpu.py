"""Fast adder operator for x86-64 CPUs: numba-compiled, register-blocked micro-kernels.

No unfolded (im2col) input is ever built. The forward reads a zero-padded channels-last copy of the
input and packs one block of output pixels at a time (each pixel's receptive field one contiguous row;
8 tiles' worth of pixels, at most 74 KiB on ResNet-20, in cache); the input gradient packs, per block of
input pixels of one row, the upstream gradients that reach each pixel. A tile of P packed rows times Q
weight rows then runs over the whole reduction with its P * Q accumulators in vector registers
(``slac.ops.cpu_codegen`` writes these kernels out; it says how LLVM is made to keep them in registers):

    forward      Y[b, o, p]    = -sum_k |X[p, k] - W[o, k]|
                               = 2 sum_k min(X[p, k], W[o, k]) - sum_k X[p, k] - sum_k W[o, k]
    grad input   dX[b, c, q]   = sum_{o, taps reaching q} G[b, o, p] * HT(W[o, c, i, j] - X[b, c, q])
                               = sum G * clamp(W, X - 1, X + 1) - X * sum G
    grad weight  dW[o, c, i, j] = (G . Xcols)[o, c, i, j] - W[o, c, i, j] * sum_{b,p} G[b, o, p]

with k = (i, j, c) and HT(z) = clamp(z, -1, 1). The rewritten forms take 2 and 3 vector instructions
per pair (min, add; max, min, FMA) instead of 3 and 4 (``python -m tools.asm`` shows the hot loops). Both
cancel when inputs and weights share a large offset (min(x, w), x and w all near 20 while the result is
near 1), so every channel c is shifted first: x - s_c and w - s_c with s_c the mean of that channel's
weights, which leaves |x - w| and HT(w - x) unchanged and makes the summed terms about as small as the
differences (the comment at ``FORMS`` gives the error bound and how it is tested).
Inputs or weights that are not finite take the direct forms, which propagate inf and NaN the way the
reference does in the forward (min(x, w) with x = -inf would give -inf - -inf = NaN).

The weight gradient's first term is the convolution weight gradient, a GEMM that torch hands to oneDNN
(or to its BLAS in float64); only the correction is added here. Work is split over
``torch.get_num_threads()`` threads, each a contiguous range of pixels or rows with its own scratch, by
numba's OpenMP layer, which runs on the OpenMP runtime torch loaded (``cpu_codegen._threads`` says
why). The linear form (``adder_linear``) runs the same kernels on an image whose pixels are its rows.
Only float32 and float64 are computed here; the functional layer casts half types to float32.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slac.ops import _cpu_kernels as kernels
from slac.ops.cpu_codegen import (
    GENERATED_TILES,
    KINDS,
    VECTOR_BITS,
    ForwardArguments,
    GradInputArguments,
    forward_name,
    grad_input_name,
)
from slac.ops.geometry import output_size

__all__ = [
    "FORMS",
    "TILES",
    "KernelCall",
    "adder2d_forward",
    "adder2d_grad_input",
    "adder2d_grad_weight",
    "forward_calls",
    "grad_input_calls",
    "single_thread_arguments",
    "tile",
]

# The forms (the first of each is used for finite inputs) and their error bounds, eps the unit roundoff and
# K the reduction length (the sums are reassociated into vector lanes, which only helps): the direct forms
# |fl(sum) - sum| <= K eps sum_k |x_k - w_k| (1 + O(eps)); the rewritten forms sum min(x', w'), x' and w'
# (x' = x - s, w' = w - s), so theirs is about K eps sum_k (|x'_k| + |w'_k|) plus eps (|x| + |s|) per term
# from the shift, of the size of the direct form's when |x'| and |w'| are of the size of |x - w|: what the
# shift by the weights' mean makes so when inputs and weights share an offset. tests/test_adder_cpu.py holds
# the rewritten forms within the reference's tolerances and within a small multiple of the direct forms'
# error against float64 on shared offsets of 10 and 20 (ResNet-20 shapes), and shows that without the shift
# they miss that bound (the ratios measured: BENCHMARKS.md, "Figures behind design choices in the CPU
# kernels").
# The clamp form has one more cancellation: its terms are of the size of |x'| where the direct form's are at
# most 1 (HT clips), so its error grows like eps |x'| sum |g| when inputs sit far from the weights (inputs
# of 100, weights near 0), shared offset or not. A group whose max |x'| exceeds _CLAMP_LIMIT takes the
# direct form (one pass over the input to decide). In the direct form a tap that reaches no output pixel
# still multiplies a zero gradient by HT(w - x), so a NaN input or weight there gives NaN where the
# reference gives 0; finite values are exact.
FORMS = {"forward": ("min", "abs"), "grad_input": ("clamp", "direct")}
_CLAMP_LIMIT = 16.0
# (P, Q, vector bits) per kernel by vector registers of the target. AVX-512 (32 registers): the forward's
# 4 x 4 accumulators plus 8 operands; the clamp gradient's 2 x 4 accumulators plus 16 clamp bounds and 6
# operands; both with 512-bit vectors (numba_extras). AVX2 (16 registers): 3 x 3 and 2 x 2, the largest
# without spills (4 x 4, 2 x 4 and 3 x 4 spill; 3 x 4 is no longer generated). Chosen from `slac bench
# adder` (timing) and `python -m tools.asm`.
TILES = {
    32: {"forward": (4, 4, 512), "grad_input": (2, 4, 512)},
    16: {"forward": (3, 3, 256), "grad_input": (2, 2, 256)},
}
_BLOCK_TILES = 8  # tiles of P pixels packed per block
_LINEAR_WIDTH = 32  # adder_linear's rows as an image of this width
_KALIGN = 16  # packed reduction rows padded with zeros to a multiple of this (whole vectors, no remainder)

assert all(t[:2] in GENERATED_TILES and t[2] in VECTOR_BITS for d in TILES.values() for t in d.values())


def _target_vector_registers() -> int:
    """32 when the features numba compiles with include AVX-512, else 16. They are NUMBA_CPU_FEATURES when
    set, else the host's (numba's own rule, which also applies NUMBA_ENABLE_AVX; NUMBA_CPU_NAME alone does
    not change them). With NUMBA_CPU_FEATURES="" the CPU name's defaults apply, which this reads as 16."""
    from numba.core.codegen import get_host_cpu_features

    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return 32 if "+avx512f" in features.split(",") else 16


@functools.cache
def tile(kind: str) -> tuple[int, int, int]:
    """The (P, Q, vector bits) the ``kind`` ("forward" or "grad_input") kernel runs with on this process's
    numba target. ``SLAC_CPU_FORWARD`` / ``SLAC_CPU_GRAD_INPUT`` = ``PxQxBITS`` (a generated tile, 256 or 512)
    override it, for benchmarks."""
    variable = f"SLAC_CPU_{kind.upper()}"
    override = os.environ.get(variable)
    if override:
        try:
            p, q, bits = (int(v) for v in override.lower().split("x"))
        except ValueError:
            raise ValueError(f"{variable}={override!r}: expected PxQxBITS, e.g. 4x4x256") from None
        if (p, q) not in GENERATED_TILES or bits not in VECTOR_BITS:
            tiles = [f"{p}x{q}" for p, q in GENERATED_TILES]
            raise ValueError(f"{variable}={override!r}: tiles {tiles}, bits {list(VECTOR_BITS)}")
        return p, q, bits
    return TILES[_target_vector_registers()][kind]


def _chunk(total: int, align: int) -> int:
    """Sets numba's thread count to torch's and returns the work per thread, a multiple of align."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return max(align, _round_up(-(-total // threads), align))


def _np(t: Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the cpu adder backend computes float32 and float64, got {t.dtype}")
    return t.detach().numpy()


def _scalars(t: Tensor):
    kind = np.float32 if t.dtype == torch.float32 else np.float64
    return kind(0), kind(1), kind(2)


def _finite(*tensors: Tensor) -> bool:
    """False when any element is inf or NaN (then the sum is), and also when a sum overflows (rare; the
    direct forms are exact there too). A sum is one pass over the tensor, where isfinite() is several
    (abs, two comparisons and their product, each into a temporary) before all() (BENCHMARKS.md, "Figures
    behind design choices in the CPU kernels")."""
    return all(bool(torch.isfinite(t.sum())) for t in tensors)


def _check_form(kind: str, form: str) -> None:
    if form not in FORMS[kind]:
        raise ValueError(f"{kind} form {form!r}: choose one of {FORMS[kind]} (or None: chosen per call)")


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _shift(weight: Tensor, form: str) -> Tensor:
    """Per input channel offset taken off inputs and weights: the mean of that channel's weights."""
    if form in ("min", "clamp"):
        return weight.mean((0, 2, 3))
    return weight.new_zeros(weight.shape[1])


def _padded_channels_last(input: Tensor, padding, shift: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H + 2ph, W + 2pw, C) holding x - shift, the padding holding -shift."""
    b, c, h, w = input.shape
    ph, pw = padding
    out = input.new_empty(b, h + 2 * ph, w + 2 * pw, c)
    border = -shift
    out[:, :ph] = border
    out[:, ph + h :] = border
    out[:, ph : ph + h, :pw] = border
    out[:, ph : ph + h, pw + w :] = border
    torch.sub(input.permute(0, 2, 3, 1), shift, out=out[:, ph : ph + h, pw : pw + w])  # one pass over x
    return out


def adder2d_forward(
    input: Tensor, weight: Tensor, stride, padding, dilation, groups: int, form: str | None = None
) -> Tensor:
    return _run(*forward_calls(input, weight, stride, padding, dilation, groups, form))


class KernelCall(NamedTuple):
    """One call of a generated kernel (``slac.ops.cpu_codegen``): its name and its ``_threads`` arguments."""

    name: str
    arguments: ForwardArguments | GradInputArguments

    def run(self) -> None:
        getattr(kernels, self.name + "_threads")(*self.arguments)  # numba sees the values, positional


def _run(result: Tensor, calls: list[KernelCall]) -> Tensor:
    for call in calls:
        call.run()
    return result


def forward_calls(
    input: Tensor, weight: Tensor, stride, padding, dilation, groups: int, form: str | None = None
) -> tuple[Tensor, list[KernelCall]]:
    """The output (not yet computed) and, per group, the call of the kernel that computes it."""
    input, weight = input.detach(), weight.detach()
    if form is None:
        form = "min" if _finite(input, weight) else "abs"
    _check_form("forward", form)
    p, q, bits = tile("forward")
    name = forward_name(form, p, q, bits)
    calls = []
    block = _BLOCK_TILES * p
    b, o = input.shape[0], weight.shape[0]
    ho, wo = output_size(input, weight, stride, padding, dilation)
    cg, og = input.shape[1] // groups, o // groups
    kh, kw = weight.shape[-2:]
    zero, _, two = _scalars(input)
    out = input.new_empty(b, o, ho, wo)
    reduction = cg * kh * kw
    kpad, opad = _round_up(reduction, _KALIGN), _round_up(og, q)
    for g in range(groups):
        wg = weight[g * og : (g + 1) * og]
        shift = _shift(wg, form)
        xpad = _padded_channels_last(input[:, g * cg : (g + 1) * cg], padding, shift)
        xrow = _np(xpad.view(b, xpad.shape[1], -1))
        packed = weight.new_zeros(opad, kpad)
        packed[:og, :reduction] = (wg - shift[:, None, None]).permute(0, 2, 3, 1).reshape(og, reduction)
        wp = _np(packed)
        wsum = _np(packed.sum(1))
        out_g = _np(out[:, g * og : (g + 1) * og].view(b, og, ho * wo))
        total = b * ho * wo
        arguments = ForwardArguments(
            xpad=xrow, wp=wp, wsum=wsum, out=out_g, total=total, chunk=_chunk(total, block),
            wpix=xpad.shape[2], ho=ho, wo=wo, sh=stride[0], sw=stride[1], dh=dilation[0], dw=dilation[1],
            kh=kh, kw=kw, zero=zero, two=two, block=block,
        )  # fmt: skip
        calls.append(KernelCall(name, arguments))
    return out, calls


def _weights_by_residue(weight: Tensor, shift: Tensor, stride, dilation, q: int):
    """(C, R_total) weights (shifted), for each residue class (a, b) of the input pixel modulo the stride
    the taps (i, j) that reach it, then o; column offsets per class; R of the largest class."""
    c_dim, kh, kw = weight.shape[1:]
    w = (weight - shift[:, None, None]).permute(1, 2, 3, 0)  # (C, kh, kw, O)
    blocks, offsets, offset, largest = [], [], 0, 0
    for a in range(stride[0]):
        rows = [i for i in range(kh) if (a - i * dilation[0]) % stride[0] == 0]
        for b in range(stride[1]):
            cols = [j for j in range(kw) if (b - j * dilation[1]) % stride[1] == 0]
            block = w[:, rows][:, :, cols].reshape(c_dim, -1)
            blocks.append(block)
            offsets.append(offset)
            offset += block.shape[1]
            largest = max(largest, block.shape[1])
    packed = weight.new_zeros(_round_up(c_dim, q), max(offset, 1))
    packed[:c_dim, :offset] = torch.cat(blocks, 1)
    return packed, np.asarray(offsets, dtype=np.int64), largest


def adder2d_grad_input(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    stride,
    padding,
    dilation,
    groups: int,
    form: str | None = None,
) -> Tensor:
    return _run(*grad_input_calls(grad, input, weight, stride, padding, dilation, groups, form))


def grad_input_calls(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    stride,
    padding,
    dilation,
    groups: int,
    form: str | None = None,
) -> tuple[Tensor, list[KernelCall]]:
    """The input gradient (not yet computed) and, per group, the call of the kernel that computes it."""
    grad, input, weight = grad.detach(), input.detach(), weight.detach()
    automatic = form is None
    if automatic:
        form = "clamp" if _finite(grad, input, weight) else "direct"
    _check_form("grad_input", form)
    p, q, bits = tile("grad_input")
    calls = []
    block = _BLOCK_TILES * p
    b, c, height, width = input.shape
    o = weight.shape[0]
    cg, og = c // groups, o // groups
    kh, kw = weight.shape[-2:]
    zero, one, _ = _scalars(input)
    dx = torch.empty_like(input, memory_format=torch.contiguous_format)
    for g in range(groups):
        wg = weight[g * og : (g + 1) * og]
        shift = _shift(wg, form)
        wall, woff, largest = _weights_by_residue(wg, shift, stride, dilation, q)
        gcl = _np(grad[:, g * og : (g + 1) * og].permute(0, 2, 3, 1).contiguous())
        xcl = input.new_zeros(b, height, width, wall.shape[0])  # channels past C stay 0, as in wall
        torch.sub(input[:, g * cg : (g + 1) * cg].permute(0, 2, 3, 1), shift, out=xcl[..., :cg])
        group_form = form
        if automatic and form == "clamp" and bool(xcl.abs().amax() > _CLAMP_LIMIT):
            group_form = "direct"  # inputs far from the weights: the clamp form would cancel (FORMS);
            # HT(w' - x') = HT(w - x), so the shifted operands serve the direct form as they are
        name = grad_input_name(group_form, p, q, bits)
        xcl_np, dxg, wall_np = _np(xcl), _np(dx[:, g * cg : (g + 1) * cg]), _np(wall)
        arguments = GradInputArguments(
            gcl=gcl, xcl=xcl_np, wall=wall_np, woff=woff, total=b * height, chunk=_chunk(b * height, 1),
            sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1], dh=dilation[0], dw=dilation[1],
            kh=kh, kw=kw, zero=zero, one=one, dx=dxg, block=block, rmax=max(largest, 1),
        )  # fmt: skip
        calls.append(KernelCall(name, arguments))
    return dx, calls


def single_thread_arguments(arguments: ForwardArguments | GradInputArguments) -> tuple:
    """A ``_threads`` call's arguments turned into the kernel's own for the whole range, with scratch (what
    each thread allocates), so that the kernel can be compiled and run by itself (``python -m tools.asm``)."""
    kind = KINDS[type(arguments)]
    values = {**arguments._asdict(), "start": 0, "stop": arguments.total}
    values |= {scratch.name: scratch.allocate(values) for scratch in kind.scratch}
    return tuple(values[name] for name in kind.kernel_parameters)


def adder2d_grad_weight(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    # sum_n G[n, o] * (X[n, k] - W[o, k]) = (G . X)[o, k] - W[o, k] * sum_n G[n, o]
    gemm = torch.ops.aten.convolution_backward(
        grad, input, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
    )[1]
    return gemm.sub_(weight * grad.sum((0, 2, 3))[:, None, None, None])


def _as_image(t: Tensor) -> Tensor:
    """(N, K) -> (1, K, Npad / 32, 32): the rows as the pixels of one image, zero rows padding N to a
    multiple of 32, so that the kernels' tiles (along a pixel row) and the threads (over rows) are full."""
    n = t.shape[0]
    rows = _round_up(max(n, 1), _LINEAR_WIDTH)
    return F.pad(t, (0, 0, 0, rows - n)).t().reshape(1, t.shape[1], rows // _LINEAR_WIDTH, _LINEAR_WIDTH)


def _from_image(t: Tensor, n: int) -> Tensor:
    return t.reshape(t.shape[1], -1)[:, :n].t().contiguous()


def linear_forward(x: Tensor, weight: Tensor) -> Tensor:
    """(N, K), (O, K) -> (N, O)."""
    return _from_image(adder2d_forward(_as_image(x), weight[:, :, None, None], *_LINEAR), x.shape[0])


def linear_grad_input(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (N, K)."""
    image = adder2d_grad_input(_as_image(grad), _as_image(x), weight[:, :, None, None], *_LINEAR)
    return _from_image(image, x.shape[0])


_LINEAR = ((1, 1), (0, 0), (1, 1), 1)  # stride, padding, dilation, groups of the 1x1 convolution


def linear_grad_weight(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (O, K): the GEMM G^T X minus W times the column sums of G."""
    return torch.addcmul(grad.t() @ x, weight, grad.sum(0)[:, None], value=-1)

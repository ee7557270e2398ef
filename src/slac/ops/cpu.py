"""Fast adder operator for x86-64 CPUs: numba-compiled, register-blocked micro-kernels.

No unfolded (im2col) input is ever built. The kernels read a zero-padded channels-last copy of the input
(and of the upstream gradient), and a tile runs over the whole reduction with its accumulators in vector
registers, in one of two layouts (``layout`` chooses; ``slac.ops.cpu_codegen`` writes both;
docs/DESIGN.md, "Two layouts of the micro-kernel"). "lanes": P packed rows times Q weight rows with the
reduction across the lanes; the forward packs a block of output pixels at a time (each pixel's receptive
field one contiguous row; 8 tiles' worth, at most 74 KiB on ResNet-20, in cache), the input gradient per
block of input pixels the upstream gradients that reach each pixel. "broadcast", for layers whose
channels fit in a few vectors: P pixels times V vectors of channels; the forward reads its inputs in
place, and so does the stride-1 input gradient, run as a forward over the padded gradient with the kernel
flipped (where the padding is within the kernel's reach; otherwise it packs per residue class like the
lanes kernels):

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
reference does in the forward (min(x, w) with x = -inf would give -inf - -inf = NaN). The passes that
pack the operands (``slac.ops._cpu_pack``, numba) return what these choices need, so the torch operators
left around a kernel allocate (and, for a strided 1 x 1 input gradient, zero and scatter) its result.

The weight gradient's first term is the convolution weight gradient, a GEMM that torch hands to oneDNN
(or to its BLAS in float64); only the correction is added here. Work is split over
``torch.get_num_threads()`` threads, each a contiguous range of pixels or rows with its own scratch, by
numba's OpenMP layer, which runs on the OpenMP runtime torch loaded (``cpu_codegen._threads`` says
why). The linear form (``adder_linear``) runs the same kernels on an image whose pixels are its rows.
Only float32 and float64 are computed here; the functional layer casts half types to float32.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slac.ops import _cpu_kernels as kernels
from slac.ops import _cpu_pack as pack
from slac.ops.cpu_codegen import (
    BROADCAST_FORWARD_TILES,
    BROADCAST_GRAD_INPUT_TILES,
    GENERATED_TILES,
    KINDS,
    VECTOR_BITS,
    Arguments,
    ForwardArguments,
    ForwardBroadcastArguments,
    GradInputArguments,
    GradInputBroadcastArguments,
    GradInputStride1Arguments,
    broadcast_forward_name,
    broadcast_grad_input_name,
    forward_name,
    grad_input_name,
    stride1_grad_input_name,
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
# of 100, weights near 0), shared offset or not. A group with an |x'| above _CLAMP_LIMIT takes the
# direct form (counted in the pass that packs the shifted input). In the direct form a tap that reaches no
# output pixel still multiplies a zero gradient by HT(w - x), so a NaN input or weight there gives NaN
# where the reference gives 0; finite values are exact.
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
# The broadcast kernels' P per V (vectors of channels across the lanes) by vector registers: the forward's
# P * V accumulators and as many chunk sums (cpu_codegen.CHUNK), V weights and a broadcast input; the
# gradient's P * V accumulators, chunk sums and pairs of clamp bounds, V weights and a broadcast gradient.
# V is 1 where the layer's channels fit one vector, else 2.
BROADCAST_TILES = {
    32: {"forward": {1: 8, 2: 6}, "grad_input": {1: 6, 2: 3}},
    16: {"forward": {1: 6, 2: 3}, "grad_input": {1: 3, 2: 1}},
}
# by vector registers and kind: the most vectors of channels layout() sends to the broadcast kernels
BROADCAST_VECTORS = {32: {"forward": 4, "grad_input": 8}, 16: {"forward": 8, "grad_input": 4}}
_BLOCK_TILES = 8  # tiles of P pixels packed per block
_LINEAR_WIDTH = 32  # adder_linear's rows as an image of this width
_KALIGN = 16  # packed reduction rows padded with zeros to a multiple of this (whole vectors, no remainder)

assert all(t[:2] in GENERATED_TILES and t[2] in VECTOR_BITS for d in TILES.values() for t in d.values())
for _kind, _generated in (("forward", BROADCAST_FORWARD_TILES), ("grad_input", BROADCAST_GRAD_INPUT_TILES)):
    assert all((p, v) in _generated for d in BROADCAST_TILES.values() for v, p in d[_kind].items())


@functools.cache
def _target_vector_registers() -> int:
    """32 when the features numba compiles with include AVX-512, else 16. They are NUMBA_CPU_FEATURES when
    set, else the host's (numba's own rule, which also applies NUMBA_ENABLE_AVX; NUMBA_CPU_NAME alone does
    not change them). With NUMBA_CPU_FEATURES="" the CPU name's defaults apply, which this reads as 16.
    Read once per process: asking LLVM for the host's features takes 0.2 ms, and every call asks."""
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


LAYOUTS = ("lanes", "broadcast")


def layout(kind: str, weight_shape, dtype: torch.dtype) -> str:
    """Which micro-kernel runs a call of ``kind`` in its rewritten form (min, clamp) for a weight of
    ``weight_shape`` (O, C, kh, kw) in ``dtype``: "lanes" (the reduction across the vector lanes, a
    horizontal sum and a store per accumulator at its end) or "broadcast" (the channels the call writes
    across the lanes: the forward's O, the input gradient's C; no horizontal sum, and no packing in the
    forward and, where the padding is within the kernel's reach, the stride-1 input gradient). The rule,
    from the timings in BENCHMARKS.md ("Which micro-kernel: lanes or broadcast"): broadcast when those
    channels fit in ``BROADCAST_VECTORS[registers][kind]`` vectors. Past that the broadcast kernels read
    each input once per V vectors of channels and lose: with AVX-512 the forward at 128 channels (by 10%
    on a LeNet layer), with AVX2 the forward at 128 and the input gradient at 64 and more (by 4-46%);
    below it they win by up to 45%.

    ``SLAC_CPU_LAYOUT`` = ``lanes`` or ``broadcast`` overrides it, for benchmarks."""
    override = os.environ.get("SLAC_CPU_LAYOUT")
    if override:
        if override not in LAYOUTS:
            raise ValueError(f"SLAC_CPU_LAYOUT={override!r}: choose one of {LAYOUTS}")
        return override
    o, c, _, _ = weight_shape
    channels = o if kind == "forward" else c
    vectors = BROADCAST_VECTORS[_target_vector_registers()][kind]
    broadcast = channels <= vectors * broadcast_tile(kind, channels, dtype)[3]
    return "broadcast" if broadcast else "lanes"


def broadcast_tile(kind: str, channels: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(P, V, vector bits, lanes) of the broadcast ``kind`` kernel for ``channels`` channels across the
    lanes (the forward's output channels, the gradient's input channels) in ``dtype``."""
    registers = _target_vector_registers()
    bits = 512 if registers == 32 else 256
    lanes = bits // (torch.finfo(dtype).bits)
    v = 1 if channels <= lanes else 2
    return BROADCAST_TILES[registers][kind][v], v, bits, lanes


def _chunk(total: int, align: int) -> int:
    """The work per thread, a multiple of align."""
    threads = _threads()
    return max(align, _round_up(-(-total // threads), align))


def _np(t: Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the cpu adder backend computes float32 and float64, got {t.dtype}")
    return t.detach().numpy()


def _scalars(t: Tensor):
    kind = np.float32 if t.dtype == torch.float32 else np.float64
    return kind(0), kind(1), kind(2)


def _finite(*sums: float) -> bool:
    """False when a sum of a tensor's elements is inf or NaN: when any element is (or, rarely, when the sum
    overflows; the direct forms are exact there too). The sums come from the passes that pack the
    operands (``slac.ops._cpu_pack``), so the test costs no pass of its own."""
    return all(math.isfinite(s) for s in sums)


def _check_form(kind: str, form: str) -> None:
    if form not in FORMS[kind]:
        raise ValueError(f"{kind} form {form!r}: choose one of {FORMS[kind]} (or None: chosen per call)")


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _shift(weight: Tensor, form: str) -> Tensor:
    """Per input channel offset taken off inputs and weights: the mean of that channel's weights for the
    rewritten forms, zero for the direct ones."""
    shift = weight.new_zeros(weight.shape[1])
    if form in ("min", "clamp"):
        pack.shift_of(_np(weight), _np(shift))
    return shift


def _threads() -> int:
    """Sets numba's thread count to torch's and returns it."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    return threads


def _channels_last(x: Tensor, shift: Tensor, padding, channels: int) -> tuple[Tensor, Tensor, float, int]:
    """(B, C, H, W) -> (B, H + 2ph, W + 2pw, channels) holding x - shift, the border -shift, channels past
    C zero; with its per-pixel sums over the channels (B, H + 2ph, W + 2pw), the sum of x - shift (finite
    where x is) and how many of its magnitudes exceed _CLAMP_LIMIT (``slac.ops._cpu_pack.channels_last``)."""
    b, _, h, w = x.shape
    ph, pw = padding
    out = x.new_empty(b, h + 2 * ph, w + 2 * pw, channels)
    sums = x.new_empty(b, h + 2 * ph, w + 2 * pw)
    limit = np.float32(_CLAMP_LIMIT) if x.dtype == torch.float32 else np.float64(_CLAMP_LIMIT)
    chunk = _chunk(b * (h + 2 * ph), 1)
    total, over = pack.channels_last(_np(x), _np(shift), ph, pw, limit, _np(out), _np(sums), chunk)
    return out, sums, total, over


def adder2d_forward(
    input: Tensor, weight: Tensor, stride, padding, dilation, groups: int, form: str | None = None
) -> Tensor:
    if _subsampled(weight, stride, padding):  # a strided 1 x 1 kernel reads every stride-th pixel only
        input, (stride, padding, dilation) = _subsample(input, stride), _UNIT
    return _run(*forward_calls(input, weight, stride, padding, dilation, groups, form))


_UNIT = ((1, 1), (0, 0), (1, 1))  # stride, padding and dilation of a 1 x 1 kernel on every pixel


def _subsampled(weight: Tensor, stride, padding) -> bool:
    """A strided 1 x 1 kernel without padding: a 1 x 1 kernel at stride 1 on every stride-th pixel. Run so,
    its operands are packed for the pixels it reads only (a quarter at stride 2: the ResNet shortcuts), and
    its input gradient is that of the smaller problem, zero elsewhere."""
    return tuple(weight.shape[-2:]) == (1, 1) and tuple(padding) == (0, 0) and tuple(stride) != (1, 1)


def _subsample(input: Tensor, stride) -> Tensor:
    return input[:, :, :: stride[0], :: stride[1]]


class KernelCall(NamedTuple):
    """One call of a generated kernel (``slac.ops.cpu_codegen``): its name and its ``_threads`` arguments."""

    name: str
    arguments: Arguments

    def run(self) -> None:
        getattr(kernels, self.name + "_threads")(*self.arguments)  # numba sees the values, positional


def _rows(t: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, H, W * C): a channels-last copy, each image row flattened (a batch of 0 too)."""
    return t.view(t.shape[0], t.shape[1], t.shape[2] * t.shape[3])


def _run(result: Tensor, calls: list[KernelCall]) -> Tensor:
    for call in calls:
        call.run()
    return result


def forward_calls(
    input: Tensor, weight: Tensor, stride, padding, dilation, groups: int, form: str | None = None
) -> tuple[Tensor, list[KernelCall]]:
    """The output (not yet computed) and, per group, the call of the kernel that computes it. With ``form``
    None each group takes the min form where its input and weights are finite, else the abs form."""
    input, weight = input.detach(), weight.detach()
    if form is not None:
        _check_form("forward", form)
    _np(input), _np(weight)  # the dtype check, before any work
    b, o = input.shape[0], weight.shape[0]
    ho, wo = output_size(input, weight, stride, padding, dilation)
    cg, og = input.shape[1] // groups, o // groups
    kh, kw = weight.shape[-2:]
    zero, _, two = _scalars(input)
    out = input.new_empty(b, o, ho, wo)
    total = b * ho * wo
    calls = []
    for g in range(groups):
        wg, xg = weight[g * og : (g + 1) * og], input[:, g * cg : (g + 1) * cg]
        group_form = form or "min"
        operands = _ForwardOperands.pack(xg, wg, padding, group_form)
        if form is None and not _finite(operands.xsum, operands.wsum_total):
            group_form = "abs"  # min(x, w) with x = -inf would give -inf - -inf = NaN (module docstring)
            operands = _ForwardOperands.pack(xg, wg, padding, group_form)
        xpad = operands.xpad
        common = dict(
            xpad=_np(_rows(xpad)), wp=_np(operands.weights), wsum=_np(operands.wsum),
            out=_np(out[:, g * og : (g + 1) * og].view(b, og, ho * wo)), wpix=xpad.shape[2], ho=ho, wo=wo,
            sh=stride[0], sw=stride[1], dh=dilation[0], dw=dilation[1], kh=kh, kw=kw, zero=zero, two=two,
        )  # fmt: skip
        if operands.broadcast:  # a tile of P pixels at a time, no packing
            arguments = ForwardBroadcastArguments(
                **common, xsum=_np(operands.xsums), total=total, chunk=_chunk(total, operands.tile[0]),
                block=operands.tile[0],
            )  # fmt: skip
            calls.append(KernelCall(broadcast_forward_name(*operands.tile), arguments))
        else:
            block = _BLOCK_TILES * operands.tile[0]
            arguments = ForwardArguments(**common, total=total, chunk=_chunk(total, block), block=block)
            calls.append(KernelCall(forward_name(group_form, *operands.tile), arguments))
    return out, calls


class _ForwardOperands(NamedTuple):
    """One group's operands in the layout of the kernel that takes them."""

    xpad: Tensor  # (B, Hp, Wp, C): padded channels-last input less the shift
    xsums: Tensor  # (B, Hp, Wp): its sums over the channels
    weights: Tensor  # packed weights less the shift: (Opad, Kpad) lanes, (K, Opad) broadcast
    wsum: Tensor  # (Opad,): their sums over the reduction
    broadcast: bool
    tile: tuple[int, int, int]  # (P, Q, bits) lanes, (P, V, bits) broadcast
    xsum: float  # the sums of the input and of the weights, for the finiteness test
    wsum_total: float

    @classmethod
    def pack(cls, x: Tensor, w: Tensor, padding, form: str) -> _ForwardOperands:
        og, cg, kh, kw = w.shape
        reduction = cg * kh * kw
        shift = _shift(w, form)
        xpad, xsums, xsum, _ = _channels_last(x, shift, padding, cg)
        broadcast = form == "min" and layout("forward", w.shape, x.dtype) == "broadcast"
        if broadcast:
            p, v, bits, lanes = broadcast_tile("forward", og, x.dtype)
            weights, tile_ = w.new_empty(reduction, _round_up(og, v * lanes)), (p, v, bits)
            wsum = w.new_empty(weights.shape[1])
        else:
            tile_ = tile("forward")
            weights = w.new_empty(_round_up(og, tile_[1]), _round_up(reduction, _KALIGN))
            wsum = w.new_empty(weights.shape[0])
        wsum_total = pack.forward_weights(_np(w), _np(shift), broadcast, _np(weights), _np(wsum))
        return cls(xpad, xsums, weights, wsum, broadcast, tile_, xsum, wsum_total)


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
    if _subsampled(weight, stride, padding):
        dx = torch.zeros_like(input, memory_format=torch.contiguous_format)
        dx[:, :, :: stride[0], :: stride[1]] = _run(
            *grad_input_calls(grad, _subsample(input, stride), weight, *_UNIT, groups, form)
        )
        return dx
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
    """The input gradient (not yet computed) and, per group, the call of the kernel that computes it. With
    ``form`` None each group takes the clamp form where its operands are finite and its inputs within
    _CLAMP_LIMIT of the weights' mean, else the direct form."""
    grad, input, weight = grad.detach(), input.detach(), weight.detach()
    if form is not None:
        _check_form("grad_input", form)
    _np(grad), _np(input), _np(weight)
    b, c, height, _ = input.shape
    o = weight.shape[0]
    cg, og = c // groups, o // groups
    kh, kw = weight.shape[-2:]
    zero, one, _ = _scalars(input)
    dx = torch.empty_like(input, memory_format=torch.contiguous_format)
    columns = pack.residue_columns(og, kh, kw, stride, dilation)
    reach = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    calls = []
    for g in range(groups):
        wg, xg, gg = (
            weight[g * og : (g + 1) * og],
            input[:, g * cg : (g + 1) * cg],
            grad[:, g * og : (g + 1) * og],
        )
        dxg = dx[:, g * cg : (g + 1) * cg]
        group_form = form or "clamp"
        broadcast = group_form == "clamp" and layout("grad_input", wg.shape, input.dtype) == "broadcast"
        flipped = broadcast and tuple(stride) == (1, 1) and min(reach) >= 0  # the stride-1 kernel
        gcl, gsums, gsum, _ = _channels_last(gg, gg.new_zeros(og), reach if flipped else (0, 0), og)
        shift = _shift(wg, group_form)
        channels = _grad_input_channels(wg, input.dtype)
        xcl, _, xsum, far = _channels_last(xg, shift, (0, 0), channels)
        wsum_total = float(shift.sum())  # finite where the weights are (the clamp form's shift: their means)
        if form is None and not _finite(gsum, xsum, wsum_total):
            group_form = "direct"  # the clamp form would subtract inf from inf
            shift = _shift(wg, group_form)
            xcl = _channels_last(xg, shift, (0, 0), channels)[0]
        elif form is None and far:
            group_form = "direct"  # inputs far from the weights: the clamp form would cancel (FORMS);
            # HT(w' - x') = HT(w - x), so the shifted operands serve the direct form as they are
        if group_form != "clamp":
            broadcast = False
            if flipped:  # the direct form's kernels read the gradient unpadded
                flipped = False
                gcl = _channels_last(gg, gg.new_zeros(og), (0, 0), og)[0]
        if flipped:
            calls.append(_stride1_grad_input_call(gcl, gsums, xcl, wg, shift, dxg, dilation))
            continue
        if broadcast:
            p, v, bits, _ = broadcast_tile("grad_input", cg, input.dtype)
            packed = wg.new_empty(columns, channels)
            name, make = broadcast_grad_input_name(p, v, bits), GradInputBroadcastArguments
        else:  # xcl may have more channels than these weights: the kernel reads the first _round_up(cg, q)
            p, q, bits = tile("grad_input")
            packed = wg.new_empty(_round_up(cg, q), columns)
            name, make = grad_input_name(group_form, p, q, bits), GradInputArguments
        woff = np.empty(stride[0] * stride[1], np.int64)
        rmax = pack.grad_input_weights(
            _np(wg), _np(shift), stride[0], stride[1], dilation[0], dilation[1], broadcast, _np(packed), woff
        )
        arguments = make(
            gcl=_np(gcl), xcl=_np(xcl), wall=_np(packed), woff=woff, total=b * height,
            chunk=_chunk(b * height, 1), sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1],
            dh=dilation[0], dw=dilation[1], kh=kh, kw=kw, zero=zero, one=one,
            dx=_np(dxg), block=_BLOCK_TILES * p, rmax=max(rmax, 1),
        )  # fmt: skip
        calls.append(KernelCall(name, arguments))
    return dx, calls


def _stride1_grad_input_call(
    gpad: Tensor, gsums: Tensor, xcl: Tensor, weight: Tensor, shift: Tensor, dx: Tensor, dilation
) -> KernelCall:
    """The broadcast clamp-form call of a stride-1 input gradient as a forward over ``gpad``, the gradient
    channels last padded by the kernel's reach less the padding, with ``gsums`` its per-pixel sums
    (``cpu_codegen.GradInputStride1Arguments``)."""
    o, cg, kh, kw = weight.shape
    b, _, height, width = dx.shape
    packed = weight.new_empty(kh * kw * o, xcl.shape[3])
    pack.flipped_weights(_np(weight), _np(shift), _np(packed))
    p, v, bits, _ = broadcast_tile("grad_input", cg, xcl.dtype)
    zero, one, _ = _scalars(xcl)
    total = b * height * width
    arguments = GradInputStride1Arguments(
        xpad=_np(_rows(gpad)), xsum=_np(gsums), xcl=_np(xcl), wp=_np(packed),
        out=_np(dx.view(b, cg, height * width)), total=total, chunk=_chunk(total, p), wpix=gpad.shape[2],
        ho=height, wo=width, sh=1, sw=1, dh=dilation[0], dw=dilation[1], kh=kh, kw=kw, zero=zero, one=one,
        block=p,
    )  # fmt: skip
    return KernelCall(stride1_grad_input_name(p, v, bits), arguments)


def _grad_input_channels(weight: Tensor, dtype: torch.dtype) -> int:
    """The channels of the input's channels-last copy: whole blocks of Q for the lanes kernels (which
    read those) and, where the broadcast kernel may take the call, a whole number of its V vectors (which
    it reads all of): either kernel can take the copy once the form is known."""
    cg = weight.shape[1]
    channels = _round_up(cg, tile("grad_input")[1])
    if layout("grad_input", weight.shape, dtype) == "broadcast":
        _, v, _, lanes = broadcast_tile("grad_input", cg, dtype)
        channels = _round_up(channels, v * lanes)
    return channels


def single_thread_arguments(arguments: Arguments) -> tuple:
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

"""Adder operator on GPUs: Triton implicit-GEMM kernels (DESIGN.md §1).

Three layers, as in Liger-Kernel: private ``@triton.jit`` kernels (the derivative written beside the
backward), launchers that own shapes, strides and block sizes, and the six backend functions that
``slac.ops.library`` dispatches to.

    forward      Y[b, o, p]  = -sum_{c,i,j} |X[b, c, p*s - pad + (i,j)*d] - W[o, c, i, j]|
                 an implicit GEMM over output pixels (M) x output channels (N), reducing K = C/G*kh*kw:
                 the input patch is gathered with masked loads (a padded position loads 0, so it
                 contributes |w| as in the official code); nothing is unfolded in memory.
    grad input   dX[b, c, q] = sum_{o,i,j: q = p*s - pad + (i,j)*d} G[b,o,p] * HT(W[o,c,i,j] - X[b,c,q])
                 an implicit GEMM over input pixels (M) x input channels (N), reducing over the (o, i, j)
                 that reach q; HT = clamp(., -1, 1).
    grad weight  dW = (G . Xcols) - W * sum G: the convolution weight gradient (cuDNN through torch, with
                 TF32 off so that it is exact float32) and the correction term.

Inputs may be float32, float16 or bfloat16 (accumulated in float32) or float64 (accumulated in float64),
in any memory layout (strides are kernel arguments, so channels_last inputs are read in place). The inner
step is |x - w| (no tensor cores can help: it is not a dot product), so the ceiling is the FP32 rate of
the CUDA cores: two instructions per pair (a subtraction, and an addition of its absolute value).

Both kernels are loops of rank-1 updates: for each tap (i, j) and channel, a column of BLOCK_M pixels and a
row of BLOCK_N channels are loaded and every pair of them is accumulated, so each thread reuses each loaded
value across its block of accumulators. The input gradient tiles input pixels by their residue modulo the
stride, which makes the taps that reach a pixel (and their output pixels) uniform over a program.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors through Triton's interpreter (slowly), which
is how the tests check them on machines without a GPU; autotuning is then limited to one small config.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from slac.ops.geometry import linear_as_conv, output_size

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# SLAC_TRITON_AUTOTUNE=0: the first fitting config only, launched without the autotuner (each config of
# the space is a separate compile, and the autotuner benchmarks them for every new layer shape)
AUTOTUNE = os.environ.get("SLAC_TRITON_AUTOTUNE", "1") != "0"
# compile options of every launch (and of `slac bench sass`): the input gradient's multiply-add in one FFMA
LAUNCH_OPTIONS = {"enable_fp_fusion": True}
MIN_BLOCK_N = 16  # the narrowest tile of the spaces: no tile is cut narrower for fewer channels


def _fitting(configs: list[triton.Config], n: int, acc) -> list[triton.Config]:
    """The configs for a launch. With float32 accumulation, those of the space whose BLOCK_N does not exceed
    the channel count n (rounded up to a power of two, at least 16), so that a 16-channel layer is not
    tiled 64 wide. With float64 accumulation (a float64 takes two registers: the space's tiles spill on
    sm_90), FLOAT64_BLOCK alone."""
    if acc == tl.float64:
        fit = [cfg for cfg in configs if _block(cfg) == FLOAT64_BLOCK]
    else:
        space = [cfg for cfg in configs if _block(cfg) != FLOAT64_BLOCK]
        limit = max(MIN_BLOCK_N, triton.next_power_of_2(n))
        fit = [cfg for cfg in space if cfg.kwargs["BLOCK_N"] <= limit] or space[-1:]
    return fit or configs[-1:]


def _block(cfg: triton.Config) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, UNROLL) of a config, as the spaces list them."""
    return cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.num_warps, cfg.kwargs["UNROLL"]


def _autotune(n_arg: str, space: list[tuple[int, int, int, int]]):
    """Autotuning over space, keyed on the layer's shape; n_arg names the kernel's N (channel) argument."""
    if INTERPRET:  # one small config: the interpreter runs every program on the CPU
        configs = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "UNROLL": 1}, num_warps=1)]
        return triton.autotune(configs=configs, key=[])
    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "UNROLL": u}, num_warps=w)
        for m, n, w, u in [*space, FLOAT64_BLOCK]
    ]

    def prune(configs, args, **kwargs):  # ACC is a keyword argument of the launch
        return _fitting(configs, args[n_arg], kwargs.get("ACC", args.get("ACC")))

    return triton.autotune(
        configs=configs,
        key=["n_pixels", "OUT_PER_GROUP", "C_PER_GROUP", "KH", "KW", "stride_h", "stride_w"],
        prune_configs_by={"early_config_prune": prune},
    )


# (BLOCK_M, BLOCK_N, num_warps, loop unroll). The first config that fits a layer's channel count is the
# one used without autotuning. Chosen with `slac bench sass` (sm_90 machine code, specialised as at run
# time, on a ResNet-20 and a ResNet-18 layer): none spills in its hot loop, and 70-88% of the hot loop's
# instructions are the kernel's arithmetic (BENCHMARKS.md). Triton gives each thread one channel and a
# strided set of pixels; 64 x 64 x 4 warps or 128 x 128 x 8 warps it lays out so that every operand is
# loaded per element from global memory (a quarter to a half of the instructions arithmetic), and those
# are left out.
FORWARD_SPACE = [
    (128, 64, 4, 4),  # 79% (a pair costs 2 instructions: x - w, and acc + |.|)
    (256, 64, 8, 4),
    (128, 32, 4, 4),  # 74%
    (64, 32, 2, 4),
    (128, 16, 2, 4),
    (64, 16, 1, 4),
]
GRAD_INPUT_SPACE = [
    (128, 32, 4, 4),  # 74-83% (a pair costs 4 instructions: w - x, two clamps, a fused multiply-add)
    (64, 32, 2, 4),
    (128, 64, 4, 4),  # 88% in the hot loop, but it spills between taps
    (128, 16, 2, 4),
    (64, 16, 1, 4),
]
# float64 inputs (verification, not speed): 16 accumulators per thread, which do not spill
FLOAT64_BLOCK = (32, 16, 1, 1)


@_autotune("OUT_PER_GROUP", FORWARD_SPACE)
@triton.jit
def _adder2d_forward_kernel(
    x_ptr, w_ptr, y_ptr,
    n_pixels, height, width, out_h, out_w,
    sxb, sxc, sxh, sxw,
    swo, swc, swh, sww,
    syb, syo, syh, syw,
    C_PER_GROUP, OUT_PER_GROUP,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UNROLL: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tiles_per_group = tl.cdiv(OUT_PER_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    offs_n = (pid_n % tiles_per_group) * BLOCK_N + tl.arange(0, BLOCK_N)  # output channel in the group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixel: (b, oh, ow)
    mask_m = offs_m < n_pixels
    mask_n = offs_n < OUT_PER_GROUP
    b = offs_m // (out_h * out_w)
    oh = (offs_m // out_w) % out_h
    ow = offs_m % out_w
    o = group * OUT_PER_GROUP + offs_n
    x_group = b * sxb + group * C_PER_GROUP * sxc  # (M,) offsets: int32 keeps registers for accumulators
    w_rows = o * swo  # (N,)

    # one rank-1 update per (tap, channel): acc[m, n] += |x[m] - w[n]|, so each thread's block of
    # accumulators reuses its loaded x and w values across the block (no (M, K, N) temporary)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for i in tl.static_range(KH):
        ih = oh * stride_h - pad_h + i * dil_h
        for j in tl.static_range(KW):
            iw = ow * stride_w - pad_w + j * dil_w
            inside = mask_m & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
            x_tap = x_group + ih * sxh + iw * sxw
            w_tap = w_rows + i * swh + j * sww
            for c in tl.range(0, C_PER_GROUP, loop_unroll_factor=UNROLL):
                x = tl.load(x_ptr + c * sxc + x_tap, mask=inside, other=0.0).to(ACC)  # padding: |0 - w|
                w = tl.load(w_ptr + c * swc + w_tap, mask=mask_n, other=0.0).to(ACC)
                acc += tl.abs(x[:, None] - w[None, :])

    y_offsets = b[:, None] * syb + o[None, :] * syo + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y_ptr + y_offsets, -acc, mask=mask_m[:, None] & mask_n[None, :])


@_autotune("C_PER_GROUP", GRAD_INPUT_SPACE)
@triton.jit
def _adder2d_grad_input_kernel(
    g_ptr, x_ptr, w_ptr, dx_ptr,
    n_pixels, height, width, out_h, out_w, class_h, class_w,
    sgb, sgo, sgh, sgw,
    sxb, sxc, sxh, sxw,
    swo, swc, swh, sww,
    sdb, sdc, sdh, sdw,
    C_PER_GROUP, OUT_PER_GROUP,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UNROLL: tl.constexpr,
):  # fmt: skip
    # d(-|x - w|)/dx = sign(w - x), clipped by AdderNet to HT(w - x) = clamp(w - x, -1, 1). The input pixel
    # q = (h, w) gathers from every output pixel p and tap (i, j) with q = p * s - pad + (i, j) * d. A
    # program takes input pixels of one residue class h = rh + s_h * hq, w = rw + s_w * wq: the taps that
    # reach such a pixel are the same for the whole class (i * d_h = rh + pad_h mod s_h), and each reaches
    # it from the output pixel (hq, wq) + a constant, so no term is masked out for the stride.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_r = tl.program_id(2)
    rh = pid_r // stride_w
    rw = pid_r % stride_w
    tiles_per_group = tl.cdiv(C_PER_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    offs_n = (pid_n % tiles_per_group) * BLOCK_N + tl.arange(0, BLOCK_N)  # input channel in the group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (b, hq, wq) in the class
    b = offs_m // (class_h * class_w)
    hq = (offs_m // class_w) % class_h
    wq = offs_m % class_w
    h = rh + hq * stride_h
    w_ = rw + wq * stride_w
    mask_m = (offs_m < n_pixels) & (h < height) & (w_ < width)
    mask_n = offs_n < C_PER_GROUP
    c = group * C_PER_GROUP + offs_n
    x = tl.load(
        x_ptr + b[:, None] * sxb + c[None, :] * sxc + h[:, None] * sxh + w_[:, None] * sxw,
        mask=mask_m[:, None] & mask_n[None, :],
        other=0.0,
    ).to(ACC)  # (M, N), loaded once
    g_group = b * sgb + group * OUT_PER_GROUP * sgo  # (M,) offsets
    w_cols = group * OUT_PER_GROUP * swo + offs_n * swc  # (N,)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for i in tl.static_range(KH):
        th = rh + pad_h - i * dil_h  # = oh * s_h - hq * s_h for the output row oh that reaches h through i
        if th % stride_h == 0:
            oh = hq + th // stride_h
            for j in tl.static_range(KW):
                tw = rw + pad_w - j * dil_w
                if tw % stride_w == 0:
                    ow = wq + tw // stride_w
                    reach = mask_m & (oh >= 0) & (oh < out_h) & (ow >= 0) & (ow < out_w)
                    g_tap = g_group + oh * sgh + ow * sgw
                    w_tap = w_cols + i * swh + j * sww
                    for o in tl.range(0, OUT_PER_GROUP, loop_unroll_factor=UNROLL):
                        g = tl.load(g_ptr + o * sgo + g_tap, mask=reach, other=0.0).to(ACC)  # (M,)
                        wv = tl.load(w_ptr + o * swo + w_tap, mask=mask_n, other=0.0).to(ACC)  # (N,)
                        ht = tl.minimum(tl.maximum(wv[None, :] - x, -1.0), 1.0)
                        acc += g[:, None] * ht

    dx_offsets = b[:, None] * sdb + c[None, :] * sdc + h[:, None] * sdh + w_[:, None] * sdw
    tl.store(dx_ptr + dx_offsets, acc, mask=mask_m[:, None] & mask_n[None, :])


# --- launchers ---------------------------------------------------------------------------------------


def _acc_dtype(t: Tensor) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, float32 for float32 and the half types."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _acc(t: Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _check_index_range(*tensors: Tensor) -> None:
    for t in tensors:
        last = sum((size - 1) * abs(step) for size, step in zip(t.shape, t.stride(), strict=True))
        if last >= 2**31:
            raise ValueError(
                f"the triton adder kernels use 32-bit offsets; a tensor of shape {tuple(t.shape)} and "
                f"strides {t.stride()} reaches element {last} (split the batch)"
            )


class KernelCall(NamedTuple):
    """One launch of an adder kernel: its positional arguments, constexprs and grid, and its channel
    count N (the launcher and ``slac bench sass`` build it the same way)."""

    kernel: object
    args: tuple
    constexprs: dict
    grid: object
    n: int

    def configs(self) -> list[triton.Config]:
        """The configs of the kernel's space that fit this launch (see _fitting)."""
        return _fitting(self.kernel.configs, self.n, self.constexprs["ACC"])

    def launch(self) -> None:
        if AUTOTUNE or INTERPRET:
            self.kernel[self.grid](*self.args, **self.constexprs, **LAUNCH_OPTIONS)
        else:  # the first fitting config, compiled and run without the autotuner's benchmarking
            cfg = self.configs()[0]
            self.kernel.fn[self.grid](
                *self.args, **self.constexprs, **cfg.kwargs, num_warps=cfg.num_warps, **LAUNCH_OPTIONS
            )


def _check_grid(grid_n: int, what: str) -> None:
    if grid_n > 65535:  # CUDA's limit on grid axes 1 and 2
        raise ValueError(
            f"the triton adder kernels tile {what} over grid axis 1, which allows 65535 programs; this "
            f"layer needs {grid_n} (use fewer groups or channels, or the cpu or reference backend)"
        )


def forward_call(input: Tensor, weight: Tensor, out: Tensor, stride, padding, dilation, groups: int):
    b = input.shape[0]
    o, cg, kh, kw = weight.shape
    ho, wo = out.shape[-2:]
    _check_index_range(input, weight, out)
    n_pixels, og = b * ho * wo, o // groups
    _check_grid(groups * triton.cdiv(og, MIN_BLOCK_N), "groups x output channels")

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_M"]), groups * triton.cdiv(og, meta["BLOCK_N"]))

    args = (
        input, weight, out,
        n_pixels, input.shape[2], input.shape[3], ho, wo,
        *input.stride(), *weight.stride(), *out.stride(),
        cg, og, *stride, *padding, *dilation,
    )  # fmt: skip
    constexprs = {"KH": kh, "KW": kw, "ACC": _acc(input)}
    return KernelCall(_adder2d_forward_kernel, args, constexprs, grid, og)


def grad_input_call(grad: Tensor, input: Tensor, weight: Tensor, dx: Tensor, stride, padding, dilation,
                    groups: int):  # fmt: skip
    b, _, h, w = input.shape
    o, cg, kh, kw = weight.shape
    ho, wo = grad.shape[-2:]
    _check_index_range(grad, input, weight, dx)
    _check_grid(groups * triton.cdiv(cg, MIN_BLOCK_N), "groups x input channels")
    # input pixels in stride_h * stride_w residue classes of class_h x class_w pixels each (the last rows
    # and columns of a class may fall outside the image and are masked)
    class_h, class_w = triton.cdiv(h, stride[0]), triton.cdiv(w, stride[1])
    n_pixels = b * class_h * class_w

    def grid(meta):
        return (
            triton.cdiv(n_pixels, meta["BLOCK_M"]),
            groups * triton.cdiv(cg, meta["BLOCK_N"]),
            stride[0] * stride[1],
        )

    args = (
        grad, input, weight, dx,
        n_pixels, h, w, ho, wo, class_h, class_w,
        *grad.stride(), *input.stride(), *weight.stride(), *dx.stride(),
        cg, o // groups, *stride, *padding, *dilation,
    )  # fmt: skip
    constexprs = {"KH": kh, "KW": kw, "ACC": _acc(input)}
    return KernelCall(_adder2d_grad_input_kernel, args, constexprs, grid, cg)


def _launch_forward(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    size = output_size(input, weight, stride, padding, dilation)
    out = torch.empty(input.shape[0], weight.shape[0], *size, device=input.device, dtype=_acc_dtype(input))
    forward_call(input, weight, out, stride, padding, dilation, groups).launch()
    return out


def _launch_grad_input(grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
    dx = torch.empty(input.shape, device=input.device, dtype=_acc_dtype(input))
    grad_input_call(grad, input, weight, dx, stride, padding, dilation, groups).launch()
    return dx


# --- backend functions (contracts in slac.ops.reference) ---------------------------------------------


def adder2d_forward(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    return _launch_forward(input, weight, stride, padding, dilation, groups).to(input.dtype)


def adder2d_grad_input(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    return _launch_grad_input(grad, input, weight, stride, padding, dilation, groups).to(input.dtype)


def adder2d_grad_weight(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    # sum_n G[n, o] * (X[n, k] - W[o, k]) = (G . X)[o, k] - W[o, k] * sum_n G[n, o]; the GEMM in exact
    # float32 (cuDNN would otherwise use TF32 for float32 convolutions by default)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gemm = torch.ops.aten.convolution_backward(
            grad, input, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
        )[1]
    return gemm - weight * grad.sum((0, 2, 3), dtype=_acc_dtype(grad)).to(grad.dtype)[:, None, None, None]


linear_forward, linear_grad_input = linear_as_conv(adder2d_forward, adder2d_grad_input)


def linear_grad_weight(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return torch.addcmul(grad.t() @ x, weight, grad.sum(0)[:, None], value=-1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev

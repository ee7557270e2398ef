"""Adder operator on GPUs: Triton implicit-GEMM kernels (DESIGN.md §1).

Three layers, as in Liger-Kernel: private ``@triton.jit`` kernels (the derivative written beside the
backward), launchers that own shapes, strides and block sizes, and the six backend functions that
``slac.ops.library`` dispatches to.

    forward      Y[b, o, p]  = -sum_{c,i,j} |X[b, c, p*s - pad + (i,j)*d] - W[o, c, i, j]|
                 an implicit GEMM over output pixels (M) x output channels (N), reducing K = C/G*kh*kw:
                 the input patch is gathered with masked loads (a padded position loads 0, so it
                 contributes |w| as in the official code); nothing is unfolded in memory.
    grad input   dX[b, c, q] = sum_{o,i,j: q = p*s - pad + (i,j)*d} G[b,o,p] * HT(W[o,c,i,j] - X[b,c,q])
                 an implicit GEMM over input pixels (M) x input channels (N), reducing R = O/G*kh*kw,
                 where an (o, i, j) that no output pixel maps through loads G = 0; HT = clamp(., -1, 1).
    grad weight  dW = (G . Xcols) - W * sum G: the convolution weight gradient (cuDNN through torch, with
                 TF32 off so that it is exact float32) and the correction term.

Inputs may be float32, float16 or bfloat16 (accumulated in float32) or float64 (accumulated in float64),
in any memory layout (strides are kernel arguments, so channels_last inputs are read in place). The inner
step is |x - w| (no tensor cores can help: it is not a dot product), so the ceiling is the FP32 rate of
the CUDA cores.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors through Triton's interpreter (slowly), which
is how the tests check them on machines without a GPU; autotuning is then limited to one small config.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from slac.ops.geometry import linear_as_conv, output_size

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# SLAC_TRITON_AUTOTUNE=0: the first config only, no autotuning (each config is a separate compile)
AUTOTUNE = os.environ.get("SLAC_TRITON_AUTOTUNE", "1") != "0"


def _configs(
    space: list[tuple[int, int, int, int]], interpreted: tuple[int, int, int]
) -> list[triton.Config]:
    if INTERPRET:
        m, n, k = interpreted
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=1)]
    if not AUTOTUNE:
        space = space[:1]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w) for m, n, k, w in space]


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps): the (M, K, N) broadcast must fit in registers
_SPACE = [
    (32, 32, 8, 4),
    (64, 32, 8, 4),
    (32, 64, 8, 4),
    (64, 64, 4, 4),
    (64, 64, 8, 8),
    (128, 32, 4, 4),
    (128, 64, 4, 8),
    (16, 16, 16, 1),
]


@triton.autotune(
    configs=_configs(_SPACE, interpreted=(32, 16, 16)),
    key=["n_pixels", "OUT_PER_GROUP", "C_PER_GROUP", "KH", "KW"],
)
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
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
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
    k_total = C_PER_GROUP * KH * KW

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, k_total, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (c, i, j) flattened like weight[o].flatten()
        mask_k = offs_k < k_total
        c = offs_k // (KH * KW)
        i = (offs_k // KW) % KH
        j = offs_k % KW
        ih = oh[:, None] * stride_h - pad_h + i[None, :] * dil_h  # (M, K)
        iw = ow[:, None] * stride_w - pad_w + j[None, :] * dil_w
        inside = (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
        x = tl.load(
            x_ptr + b[:, None] * sxb + (group * C_PER_GROUP + c)[None, :] * sxc + ih * sxh + iw * sxw,
            mask=mask_m[:, None] & mask_k[None, :] & inside,
            other=0.0,
        ).to(ACC)  # padding reads 0
        w = tl.load(
            w_ptr + o[None, :] * swo + c[:, None] * swc + i[:, None] * swh + j[:, None] * sww,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        ).to(ACC)  # (K, N); a k past the end has x = w = 0 and adds nothing
        acc += tl.sum(tl.abs(x[:, :, None] - w[None, :, :]), axis=1)

    y_offsets = b[:, None] * syb + o[None, :] * syo + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y_ptr + y_offsets, -acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.autotune(
    configs=_configs(_SPACE, interpreted=(32, 16, 16)),
    key=["n_pixels", "OUT_PER_GROUP", "C_PER_GROUP", "KH", "KW"],
)
@triton.jit
def _adder2d_grad_input_kernel(
    g_ptr, x_ptr, w_ptr, dx_ptr,
    n_pixels, height, width, out_h, out_w,
    sgb, sgo, sgh, sgw,
    sxb, sxc, sxh, sxw,
    swo, swc, swh, sww,
    sdb, sdc, sdh, sdw,
    C_PER_GROUP, OUT_PER_GROUP,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # d(-|x - w|)/dx = sign(w - x), clipped by AdderNet to HT(w - x) = clamp(w - x, -1, 1); the input pixel
    # q = (h, w) gathers from every output pixel p and offset (i, j) with q = p * s - pad + (i, j) * d.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tiles_per_group = tl.cdiv(C_PER_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    offs_n = (pid_n % tiles_per_group) * BLOCK_N + tl.arange(0, BLOCK_N)  # input channel in the group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixel: (b, h, w)
    mask_m = offs_m < n_pixels
    mask_n = offs_n < C_PER_GROUP
    b = offs_m // (height * width)
    h = (offs_m // width) % height
    w_ = offs_m % width
    c = group * C_PER_GROUP + offs_n
    x = tl.load(
        x_ptr + b[:, None] * sxb + c[None, :] * sxc + h[:, None] * sxh + w_[:, None] * sxw,
        mask=mask_m[:, None] & mask_n[None, :],
        other=0.0,
    ).to(ACC)  # (M, N), loaded once
    r_total = OUT_PER_GROUP * KH * KW

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for r0 in range(0, r_total, BLOCK_K):
        offs_r = r0 + tl.arange(0, BLOCK_K)  # (o, i, j) flattened
        mask_r = offs_r < r_total
        o = group * OUT_PER_GROUP + offs_r // (KH * KW)
        i = (offs_r // KW) % KH
        j = offs_r % KW
        th = h[:, None] + pad_h - i[None, :] * dil_h  # (M, R): = oh * stride_h when (o, i, j) reaches q
        tw = w_[:, None] + pad_w - j[None, :] * dil_w
        oh = th // stride_h
        ow = tw // stride_w
        reach = (
            (th >= 0) & (tw >= 0) & (th % stride_h == 0) & (tw % stride_w == 0) & (oh < out_h) & (ow < out_w)
        )
        g = tl.load(
            g_ptr + b[:, None] * sgb + o[None, :] * sgo + oh * sgh + ow * sgw,
            mask=mask_m[:, None] & mask_r[None, :] & reach,
            other=0.0,
        ).to(ACC)  # (M, R); 0 where (o, i, j) does not reach q
        wv = tl.load(
            w_ptr + o[:, None] * swo + offs_n[None, :] * swc + i[:, None] * swh + j[:, None] * sww,
            mask=mask_r[:, None] & mask_n[None, :],
            other=0.0,
        ).to(ACC)  # (R, N)
        ht = tl.minimum(tl.maximum(wv[None, :, :] - x[:, None, :], -1.0), 1.0)
        acc += tl.sum(g[:, :, None] * ht, axis=1)

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
        if t.numel() >= 2**31:
            raise ValueError(
                f"the triton adder kernels use 32-bit offsets; a tensor of shape {tuple(t.shape)} has "
                f"{t.numel()} elements (split the batch)"
            )


def _launch_forward(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    b = input.shape[0]
    o, cg, kh, kw = weight.shape
    ho, wo = output_size(input, weight, stride, padding, dilation)
    out = torch.empty(b, o, ho, wo, device=input.device, dtype=_acc_dtype(input))
    _check_index_range(input, out)
    n_pixels, og = b * ho * wo, o // groups

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_M"]), groups * triton.cdiv(og, meta["BLOCK_N"]))

    _adder2d_forward_kernel[grid](
        input, weight, out,
        n_pixels, input.shape[2], input.shape[3], ho, wo,
        *input.stride(), *weight.stride(), *out.stride(),
        cg, og, *stride, *padding, *dilation, KH=kh, KW=kw, ACC=_acc(input),
    )  # fmt: skip
    return out


def _launch_grad_input(grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int):
    b, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    ho, wo = grad.shape[-2:]
    dx = torch.empty(b, c, h, w, device=input.device, dtype=_acc_dtype(input))
    _check_index_range(input, grad)
    n_pixels = b * h * w

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_M"]), groups * triton.cdiv(cg, meta["BLOCK_N"]))

    _adder2d_grad_input_kernel[grid](
        grad, input, weight, dx,
        n_pixels, h, w, ho, wo,
        *grad.stride(), *input.stride(), *weight.stride(), *dx.stride(),
        cg, o // groups, *stride, *padding, *dilation, KH=kh, KW=kw, ACC=_acc(input),
    )  # fmt: skip
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

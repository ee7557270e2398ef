"""Fast adder operator for x86-64 CPUs: numba-compiled, register-tiled, parallel direct convolution.

No unfolded (im2col) input is ever built. The kernels read a zero-padded channels-last copy of the
input (one input's worth of memory), so that for every kernel offset (i, j) the C input channels of a
pixel are contiguous, and a padded position reads 0 and contributes -|w| as in the official code:

    forward      Y[b, o, p]    = -sum_{i,j,c} |Xpad[b, p*s + (i,j)*d, c] - W[o, c, i, j]|     _forward
    grad input   dX[b, c, q]   =  sum_{o, i, j: q = p*s - pad + (i,j)*d}
                                      G[b, o, p] * HT(W[o, c, i, j] - X[b, c, q])
                                                                                             _grad_input
    grad weight  dW[o, c, i, j] = (G . Xcols)[o, c, i, j] - W[o, c, i, j] * sum_{b,p} G[b, o, p]

The weight gradient's first term is the convolution weight gradient, a GEMM that torch hands to oneDNN
(or to its BLAS in float64); only the correction is added here. HT(z) = clamp(z, -1, 1).

Both L1 kernels hold a tile of ``_ROWS`` pixels of one image row and sweep a contiguous row of the weight
in the innermost loop (output channels in the forward, input channels in the gradient), which LLVM
vectorizes; the tile's accumulators stay in L1 cache. On AVX2 the forward step is a subtract, an absolute
value (an AND) and an add per 8 floats; the gradient step adds a min, a max and a fused multiply-add. The
input gradient is gathered per input pixel (pixels of a tile share their residue modulo the stride), so
no two threads write the same element. Work is split over image rows with ``prange``; the number of
threads follows ``torch.get_num_threads()``.

The linear form (``adder_linear``) runs the same kernels on an (N, 1, 1, K) view of its input.
Only float32 and float64 are computed here; the functional layer casts half types to float32.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange
from torch import Tensor

from slac.ops.geometry import linear_as_conv, output_size

# reassoc/contract allow vectorized reductions and FMA; no 'nnan'/'ninf', so NaN and inf propagate.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_ROWS = 4  # pixels per tile (measured on AVX2: 2, 4 and 6 within about 10% of each other, 8 slower)


def _threads() -> None:
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _forward(xrow, wt, out, channels, sh, sw, dh, dw):  # pragma: no cover - compiled
    # xrow (B, Hp, Wp * C): padded channels-last input with each image row flattened;
    # wt (kh, kw_loop, c_loop, O); out (B, O, Ho, Wo). Pixel w, offset j, channel c sit at
    # xrow[b, h, (w + j * dw) * C + c]. With dw == 1 the caller merges (j, c) into one contiguous run:
    # kw_loop = 1, c_loop = kw * C, so the loop over it is long enough to vectorize well.
    batch = xrow.shape[0]
    kh, kw_loop, c_loop, o_dim = wt.shape
    ho, wo = out.shape[2], out.shape[3]
    step = sw * channels  # distance between neighbouring output pixels in xrow
    for job in prange(batch * ho):
        b = job // ho
        oh = job - b * ho
        acc = np.empty((_ROWS, o_dim), dtype=xrow.dtype)
        for ow0 in range(0, wo, _ROWS):
            rows = min(_ROWS, wo - ow0)
            acc[:] = 0
            for i in range(kh):
                h = oh * sh + i * dh
                for j in range(kw_loop):
                    p0 = (ow0 * sw + j * dw) * channels
                    if rows == _ROWS:
                        for c in range(c_loop):
                            x0 = xrow[b, h, p0 + c]
                            x1 = xrow[b, h, p0 + step + c]
                            x2 = xrow[b, h, p0 + 2 * step + c]
                            x3 = xrow[b, h, p0 + 3 * step + c]
                            for o in range(o_dim):
                                w = wt[i, j, c, o]
                                acc[0, o] += abs(x0 - w)
                                acc[1, o] += abs(x1 - w)
                                acc[2, o] += abs(x2 - w)
                                acc[3, o] += abs(x3 - w)
                    else:
                        for r in range(rows):
                            for c in range(c_loop):
                                x = xrow[b, h, p0 + r * step + c]
                                for o in range(o_dim):
                                    acc[r, o] += abs(x - wt[i, j, c, o])
            for r in range(rows):
                for o in range(o_dim):
                    out[b, o, oh, ow0 + r] = -acc[r, o]


@njit(inline="always")
def _hardtanh(z, one):  # pragma: no cover - compiled
    # `one` carries the dtype: an integer literal would promote float32 arithmetic to float64
    z = z if z < one else one
    return z if z > -one else -one


@njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _grad_input(grad, xp, wg, dx, sh, sw, ph, pw, dh, dw, one):  # pragma: no cover - compiled
    # grad (B, O, Ho, Wo); xp (B, H + 2ph, W + 2pw, C) padded channels-last input; wg (kh, kw, O, C);
    # dx (B, C, H, W). Input pixel q = (h, w) receives from output pixel p through offset (i, j) when
    # h = p_h * sh - ph + i * dh and w = p_w * sw - pw + j * dw.
    batch, o_dim, ho, wo = grad.shape
    kh, kw, _, channels = wg.shape
    height, width = dx.shape[2], dx.shape[3]
    for job in prange(batch * height):
        b = job // height
        h = job - b * height
        acc = np.empty((_ROWS, channels), dtype=xp.dtype)
        for residue in range(min(sw, width)):
            # pixels w = residue + sw * q, q = 0, 1, ...: one tile shares which offsets j reach it
            n_pix = (width - residue + sw - 1) // sw
            for q0 in range(0, n_pix, _ROWS):
                rows = min(_ROWS, n_pix - q0)
                w_first = residue + sw * q0
                acc[:] = 0
                for i in range(kh):
                    num_h = h + ph - i * dh
                    if num_h % sh != 0:
                        continue
                    oh = num_h // sh
                    if oh < 0 or oh >= ho:
                        continue
                    for j in range(kw):
                        num_w = w_first + pw - j * dw
                        if num_w % sw != 0:
                            continue
                        ow0 = num_w // sw  # output column of the tile's first pixel; then ow0 + r
                        if rows == _ROWS and ow0 >= 0 and ow0 + _ROWS <= wo:
                            for o in range(o_dim):
                                g0 = grad[b, o, oh, ow0]
                                g1 = grad[b, o, oh, ow0 + 1]
                                g2 = grad[b, o, oh, ow0 + 2]
                                g3 = grad[b, o, oh, ow0 + 3]
                                for c in range(channels):
                                    w = wg[i, j, o, c]
                                    acc[0, c] += g0 * _hardtanh(w - xp[b, h + ph, w_first + pw, c], one)
                                    acc[1, c] += g1 * _hardtanh(w - xp[b, h + ph, w_first + pw + sw, c], one)
                                    acc[2, c] += g2 * _hardtanh(
                                        w - xp[b, h + ph, w_first + pw + 2 * sw, c], one
                                    )
                                    acc[3, c] += g3 * _hardtanh(
                                        w - xp[b, h + ph, w_first + pw + 3 * sw, c], one
                                    )
                        else:
                            for r in range(rows):
                                if ow0 + r < 0 or ow0 + r >= wo:
                                    continue
                                ww = w_first + pw + r * sw
                                for o in range(o_dim):
                                    g = grad[b, o, oh, ow0 + r]
                                    for c in range(channels):
                                        acc[r, c] += g * _hardtanh(wg[i, j, o, c] - xp[b, h + ph, ww, c], one)
                for r in range(rows):
                    for c in range(channels):
                        dx[b, c, h, w_first + r * sw] = acc[r, c]


# --- torch-facing functions ---------------------------------------------------------------------------


def _np(t: Tensor) -> np.ndarray:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the cpu adder backend computes float32 and float64, got {t.dtype}")
    return t.detach().numpy()


def _padded_channels_last(input: Tensor, padding) -> Tensor:
    """(B, C, H, W) -> (B, H + 2ph, W + 2pw, C), zero padded."""
    return F.pad(input, (padding[1], padding[1], padding[0], padding[0])).permute(0, 2, 3, 1).contiguous()


def _one(t: Tensor) -> np.floating:
    return np.float32(1) if t.dtype == torch.float32 else np.float64(1)


def adder2d_forward(input: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> Tensor:
    _threads()
    b, o = input.shape[0], weight.shape[0]
    ho, wo = output_size(input, weight, stride, padding, dilation)
    cg, og = input.shape[1] // groups, o // groups
    kh, kw = weight.shape[-2:]
    out = input.new_empty(b, o, ho, wo)
    out_np = _np(out)
    for g in range(groups):
        # one group's channels, padded, channels-last, rows flattened: (B, Hp, Wp * C/G)
        xg = _padded_channels_last(input[:, g * cg : (g + 1) * cg], padding)
        xrow = _np(xg.view(xg.shape[0], xg.shape[1], -1))
        wt = weight[g * og : (g + 1) * og].permute(2, 3, 1, 0).contiguous()  # (kh, kw, C/G, O/G)
        if dilation[1] == 1:  # merge the kernel columns and channels: one contiguous run per row
            wt = wt.view(kh, 1, kw * cg, og)
        _forward(
            xrow,
            _np(wt),
            out_np[:, g * og : (g + 1) * og],
            cg,
            stride[0],
            stride[1],
            dilation[0],
            dilation[1],
        )
    return out


def adder2d_grad_input(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    _threads()
    o = weight.shape[0]
    cg, og = input.shape[1] // groups, o // groups
    xp = _np(_padded_channels_last(input, padding))
    wg = _np(weight.permute(2, 3, 0, 1).contiguous())  # (kh, kw, O, C/G)
    grad_np = _np(grad.contiguous())
    dx = torch.empty_like(input, memory_format=torch.contiguous_format)
    dx_np = _np(dx)
    for g in range(groups):
        _grad_input(
            grad_np[:, g * og : (g + 1) * og],
            xp[..., g * cg : (g + 1) * cg],
            wg[:, :, g * og : (g + 1) * og],
            dx_np[:, g * cg : (g + 1) * cg],
            stride[0],
            stride[1],
            padding[0],
            padding[1],
            dilation[0],
            dilation[1],
            _one(input),
        )
    return dx


def adder2d_grad_weight(
    grad: Tensor, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int
) -> Tensor:
    # sum_n G[n, o] * (X[n, k] - W[o, k]) = (G . X)[o, k] - W[o, k] * sum_n G[n, o]
    gemm = torch.ops.aten.convolution_backward(
        grad, input, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
    )[1]
    return gemm.sub_(weight * grad.sum((0, 2, 3))[:, None, None, None])


linear_forward, linear_grad_input = linear_as_conv(adder2d_forward, adder2d_grad_input)


def linear_grad_weight(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (O, K): the GEMM G^T X minus W times the column sums of G."""
    return torch.addcmul(grad.t() @ x, weight, grad.sum(0)[:, None], value=-1)

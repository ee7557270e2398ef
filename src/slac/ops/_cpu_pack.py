"""The cpu adder backend's per-call work, each in one pass: the layouts the kernels read, made by numba.

Before these, each call ran a dozen torch operators around its kernel (the channel shift, the border
fills, a finiteness sum, the clamp limit's abs and maximum, a channels-last copy, the weight packing),
each a pass over its tensor and a dispatch. Here each layout is written in one pass that also returns
what the call decides on: the sum of what it read (not finite when any element is inf or NaN, or when the
sum overflows, where the exact direct forms are right too) and the largest magnitude written (the clamp
limit). Parallel over rows with numba's threads, which share torch's OpenMP runtime
(``cpu_codegen._threads``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "channels_last",
    "flipped_weights",
    "forward_weights",
    "grad_input_weights",
    "residue_columns",
    "shift_of",
]


# reassoc lets the sums vectorize (they only decide finiteness); no nnan/ninf, so NaN and inf propagate
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(fastmath=_FASTMATH, cache=True, nogil=True, boundscheck=False)
def _channels_last_rows(x, shift, ph, pw, limit, out, sums, start, stop):  # pragma: no cover - compiled
    """Rows [start, stop) of the flattened (B, Hp) of ``channels_last``. Each image row is read channel by
    channel into ``tmp`` (contiguous reads: the sum and the count vectorize), summed over the channels,
    then written channels last from there (in L1)."""
    c_dim, height, width = x.shape[1], x.shape[2], x.shape[3]
    hp, wp, cpad = out.shape[1], out.shape[2], out.shape[3]
    tmp = np.empty((c_dim, width), x.dtype)
    acc = np.empty(width, x.dtype)
    border = shift[0] * 0
    for c in range(c_dim):
        border -= shift[c]
    total = 0.0
    over = 0
    for n in range(start, stop):
        b = n // hp
        row = n - b * hp
        h = row - ph
        if h < 0 or h >= height:  # a padding row
            for col in range(wp):
                for c in range(c_dim):
                    out[b, row, col, c] = -shift[c]
                for c in range(c_dim, cpad):
                    out[b, row, col, c] = 0
                sums[b, row, col] = border
            continue
        s = border * 0
        k = 0
        for c in range(c_dim):
            sc = shift[c]
            for w in range(width):
                d = x[b, c, h, w] - sc
                s += d
                k += abs(d) > limit
                tmp[c, w] = d
        for w in range(width):
            acc[w] = 0
        for c in range(c_dim):
            for w in range(width):
                acc[w] += tmp[c, w]
        for w in range(width):
            for c in range(c_dim):
                out[b, row, w + pw, c] = tmp[c, w]
            for c in range(c_dim, cpad):
                out[b, row, w + pw, c] = 0
            sums[b, row, w + pw] = acc[w]
        for col in range(pw):
            for c in range(c_dim):
                out[b, row, col, c] = -shift[c]
                out[b, row, wp - 1 - col, c] = -shift[c]
            for c in range(c_dim, cpad):
                out[b, row, col, c] = 0
                out[b, row, wp - 1 - col, c] = 0
            sums[b, row, col] = border
            sums[b, row, wp - 1 - col] = border
        total += s
        over += k
    return total, over


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def channels_last(x, shift, ph, pw, limit, out, sums, chunk):  # pragma: no cover - compiled
    """out (B, H + 2 ph, W + 2 pw, Cpad) = x (B, C, H, W) - shift (C,) channels last; the border holds
    -shift (zero padding, shifted) and the channels past C zero; sums (B, H + 2 ph, W + 2 pw) the sums of
    out over its channels; the B * (H + 2 ph) rows in chunks of ``chunk``, one per thread. Returns the sum
    of x - shift (not finite when an element of x is not) and how many of its elements exceed ``limit`` in
    magnitude."""
    rows = x.shape[0] * out.shape[1]
    total = 0.0
    over = 0
    for i in prange((rows + chunk - 1) // chunk):
        s, k = _channels_last_rows(x, shift, ph, pw, limit, out, sums, i * chunk, min(rows, (i + 1) * chunk))
        total += s
        over += k
    return total, over


@njit(cache=True, nogil=True, boundscheck=False)
def shift_of(w, shift):  # pragma: no cover - compiled
    """shift (C,) = the mean of w (O, C, kh, kw) over o, i, j; returns the sum of w."""
    o_dim, c_dim, kh, kw = w.shape
    total = 0.0
    for c in range(c_dim):
        s = 0.0
        for o in range(o_dim):
            for i in range(kh):
                for j in range(kw):
                    s += w[o, c, i, j]
        total += s
        shift[c] = s / (o_dim * kh * kw)
    return total


@njit(cache=True, nogil=True, boundscheck=False)
def forward_weights(w, shift, transposed, out, wsum):  # pragma: no cover - compiled
    """The forward's packed weights, w (O, C, kh, kw) less shift (C,), reduction index k = (i, j, c):
    out (Opad, Kpad) rows per output channel, or (K, Opad) when ``transposed``, zero where no weight is;
    wsum (Opad,) the sums over k. Returns the sum of w."""
    o_dim, c_dim, kh, kw = w.shape
    out[:] = 0
    wsum[:] = 0
    total = 0.0
    for o in range(o_dim):
        s = 0.0
        for i in range(kh):
            for j in range(kw):
                for c in range(c_dim):
                    v = w[o, c, i, j] - shift[c]
                    k = (i * kw + j) * c_dim + c
                    if transposed:
                        out[k, o] = v
                    else:
                        out[o, k] = v
                    s += v
                    total += w[o, c, i, j]
        wsum[o] = s
    return total


@njit(cache=True, nogil=True, boundscheck=False)
def grad_input_weights(w, shift, sh, sw, dh, dw, transposed, out, offsets):  # pragma: no cover - compiled
    """The input gradient's packed weights, w (O, C, kh, kw) less shift (C,): for each residue class
    (a, b) of the input pixel modulo the stride, the taps (i, j) that reach it in order, then o, one column
    r each; out (Cpad, R_total), or (R_total, Cpad) when ``transposed``, zero past C; offsets (sh * sw,)
    each class's first column. Returns the columns of the largest class."""
    o_dim, c_dim, kh, kw = w.shape
    out[:] = 0
    r = 0
    largest = 0
    for a in range(sh):
        for b in range(sw):
            offsets[a * sw + b] = r
            first = r
            for i in range(kh):
                if (a - i * dh) % sh != 0:
                    continue
                for j in range(kw):
                    if (b - j * dw) % sw != 0:
                        continue
                    for o in range(o_dim):
                        for c in range(c_dim):
                            v = w[o, c, i, j] - shift[c]
                            if transposed:
                                out[r + o, c] = v
                            else:
                                out[c, r + o] = v
                    r += o_dim
            largest = max(largest, r - first)
    return largest


@njit(cache=True, nogil=True, boundscheck=False)
def flipped_weights(w, shift, out):  # pragma: no cover - compiled
    """The stride-1 input gradient's packed weights, w (O, C, kh, kw) less shift (C,) with the taps
    flipped: out (K, Cpad), row k = (i * kw + j) * O + o holding w[o, :, kh - 1 - i, kw - 1 - j], zero
    past C."""
    o_dim, c_dim, kh, kw = w.shape
    out[:] = 0
    for i in range(kh):
        for j in range(kw):
            for o in range(o_dim):
                k = (i * kw + j) * o_dim + o
                for c in range(c_dim):
                    out[k, c] = w[o, c, kh - 1 - i, kw - 1 - j] - shift[c]


def residue_columns(o_dim: int, kh: int, kw: int, stride, dilation) -> int:
    """R_total: the columns ``grad_input_weights`` writes."""
    total = 0
    for a in range(stride[0]):
        rows = sum(1 for i in range(kh) if (a - i * dilation[0]) % stride[0] == 0)
        for b in range(stride[1]):
            cols = sum(1 for j in range(kw) if (b - j * dilation[1]) % stride[1] == 0)
            total += rows * cols * o_dim
    return total


_ = np  # numba resolves np inside the kernels' module

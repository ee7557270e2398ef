"""Adder operator on GPUs: Triton implicit-GEMM kernels (docs/DESIGN.md, "The adder operator").

Three layers, as in Liger-Kernel: private ``@triton.jit`` kernels (the derivative written beside the
backward), launchers that own shapes, strides and block sizes, and the six backend functions that
``slac.ops.library`` dispatches to.

    forward      Y[b, o, p]  = -sum_{c,i,j} |X[b, c, p*s - pad + (i,j)*d] - W[o, c, i, j]|
                 an implicit GEMM over output pixels (M) x output channels (N), reducing K = C/G*kh*kw:
                 the input patch is gathered with masked loads (a padded position loads 0, so it
                 contributes |w| as in the official code); nothing is unfolded in memory.
    grad input   dX[b, c, q] = sum_{o,i,j: q = p*s - pad + (i,j)*d} G[b,o,p] * HT(W[o,c,i,j] - X[b,c,q])
                             = sum G * clamp(W', X' - 1, X' + 1) - X' * sum G
                 an implicit GEMM over input pixels (M) x input channels (N), reducing over the (o, i, j)
                 that reach q; HT = clamp(., -1, 1). Formed in the second (clamp) form, with X' = X - s_c
                 and W' = W - s_c shifted by the mean s_c of input channel c's weights (see below).
    grad weight  dW = (G . Xcols) - W * sum G: the convolution weight gradient (cuDNN through torch, with
                 TF32 off so that it is exact float32) and the correction term.

Inputs may be float32, float16 or bfloat16 (accumulated in float32) or float64 (accumulated in float64),
in any memory layout (strides are kernel arguments, so channels_last inputs are read in place). The inner
step is |x - w| (no tensor cores can help: it is not a dot product), so the ceiling is the FP32 rate of
the CUDA cores: two instructions per pair in the forward (a subtraction, and an addition of its absolute
value), three in the input gradient (a max and a min against the bounds x' - 1 and x' + 1, formed once per
tile, and a fused multiply-add; the direct form takes four: w - x, two clamps, the multiply-add). The sum
of G that the clamp form subtracts, times x', is one addition per loaded G (O(M) per step, not O(M N)).

The clamp form's two terms are each about |x'| sum |G| and cancel to the size of the result, so it is
formed from values shifted by a per input channel constant, as the cpu backend does: s_c, the mean of the
weights W[o, c, i, j] of channel c over (o, i, j) (within its group), leaves HT(w - x) unchanged and
makes x' and w' of the size of x - w for inputs and weights that share an offset (tests: offset 20 at the
reference's tolerances). The launcher computes s_c and the shifted weights W' (in the accumulation dtype,
a small tensor); the kernel subtracts s_c from its input tile once, as it loads it. The error still grows
with |x'| (x' +- 1 are rounded), as the cpu backend's FORMS bound says.

Not finite: an inf input makes the clamp form inf - inf = NaN where HT gives -1 or 1, an inf weight makes
its channel's s_c inf. Every tile checks its clamp-form result (x - x is 0 only for finite x) and forms
the entries that are not finite again in the direct form, from the unshifted x and w, which gives what the
kernel gave before the clamp form (the reference's values for inf inputs, weights and gradients; a NaN
difference w - x clamps to -1, where the reference gives NaN). That check is one reduction per program,
and the direct form runs only in tiles that hold a non-finite entry, so there is no host sync: the cpu
backend's choice per call (is the sum of each tensor finite), would cost three reductions and a host
sync per call on a GPU (and is not allowed while a CUDA graph is captured). A step with inf gradients
(a loss-scaler overflow) runs both forms in the tiles that they reach.

Both kernels are loops of rank-1 updates: for each tap (i, j) and channel, a column of BLOCK_M pixels and a
row of BLOCK_N channels are loaded and every pair of them is accumulated. Each thread owns a THREAD_M x
THREAD_N register tile of the accumulators (see Block), so it loads THREAD_M + THREAD_N values per
THREAD_M * THREAD_N pairs; the launchers lay the weights out with the tiled channel axis contiguous, which
makes a thread's weights one vector load. The input gradient tiles input pixels by their residue modulo the
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
# compile options of every launch (and of `python -m tools.sass`): the input gradient's multiply-add in one
# FFMA
LAUNCH_OPTIONS = {"enable_fp_fusion": True}
MIN_BLOCK_N = 16  # the narrowest tile of the spaces: no tile is cut narrower for fewer channels


class Block(NamedTuple):
    """A block config. A program computes a BLOCK_M x BLOCK_N tile of outputs (pixels x channels) with
    num_warps warps; each thread accumulates a THREAD_M x THREAD_N register tile of it (pixels
    lane_m * THREAD_M + r, channels lane_n * THREAD_N + s), so that per channel of the reduction it loads
    THREAD_M + THREAD_N values for THREAD_M * THREAD_N pairs. UNROLL unrolls the reduction loop."""

    m: int
    n: int
    warps: int
    unroll: int
    thread_m: int
    thread_n: int

    def lanes(self) -> tuple[int, int]:
        return self.m // self.thread_m, self.n // self.thread_n

    def check(self) -> Block:
        lanes_m, lanes_n = self.lanes()
        powers = all(v > 0 and v & (v - 1) == 0 for v in (*self, lanes_m, lanes_n))
        if not powers or lanes_m * lanes_n != 32 * self.warps or lanes_n > 32:
            raise ValueError(
                f"block {tuple(self)} (BLOCK_M, BLOCK_N, warps, unroll, THREAD_M, THREAD_N): every value a "
                f"power of two, (BLOCK_M / THREAD_M) x (BLOCK_N / THREAD_N) = 32 x warps threads, at most "
                f"32 of them across BLOCK_N"
            )
        return self

    def config(self) -> triton.Config:
        meta = {"BLOCK_M": self.m, "BLOCK_N": self.n, "UNROLL": self.unroll, "THREAD_M": self.thread_m,
                "THREAD_N": self.thread_n}  # fmt: skip
        return triton.Config(meta, num_warps=self.warps)

    @staticmethod
    def of(cfg: triton.Config) -> Block:
        k = cfg.kwargs
        return Block(k["BLOCK_M"], k["BLOCK_N"], cfg.num_warps, k["UNROLL"], k["THREAD_M"], k["THREAD_N"])


def _fitting(configs: list[triton.Config], n: int, acc) -> list[triton.Config]:
    """The configs for a launch. With float32 accumulation, those of the space whose BLOCK_N does not exceed
    the channel count n (rounded up to a power of two, at least 16), so that a 16-channel layer is not
    tiled 64 wide. With float64 accumulation (a float64 takes two registers: the space's tiles spill on
    sm_90), FLOAT64_BLOCK alone."""
    if acc == tl.float64:
        fit = [cfg for cfg in configs if Block.of(cfg) == FLOAT64_BLOCK]
    else:
        space = [cfg for cfg in configs if Block.of(cfg) != FLOAT64_BLOCK]
        limit = max(MIN_BLOCK_N, triton.next_power_of_2(n))
        fit = [cfg for cfg in space if cfg.kwargs["BLOCK_N"] <= limit] or space[-1:]
    return fit or configs[-1:]


# What a layer's autotuned config depends on. The pixel count enters as pixel_bucket, the next power of two
# of it, so that batch sizes that differ a little (an epoch's last, partial batch) reuse the config of the
# full batch instead of benchmarking the whole space again.
AUTOTUNE_KEY = ["pixel_bucket", "OUT_PER_GROUP", "C_PER_GROUP", "KH", "KW", "stride_h", "stride_w"]


def pixel_bucket(n_pixels: int) -> int:
    """The autotuning key's pixel count: ``n_pixels`` rounded up to a power of two."""
    return triton.next_power_of_2(max(1, n_pixels))


def _autotune(n_arg: str, space: list[Block]):
    """Autotuning over space, keyed on the layer's shape; n_arg names the kernel's N (channel) argument."""
    if INTERPRET:  # one small config: the interpreter runs every program on the CPU
        return triton.autotune(configs=[INTERPRETER_BLOCK.check().config()], key=[])
    configs = [block.check().config() for block in [*space, FLOAT64_BLOCK]]

    def prune(configs, args, **kwargs):  # ACC is a keyword argument of the launch
        return _fitting(configs, args[n_arg], kwargs.get("ACC", args.get("ACC")))

    return triton.autotune(
        configs=configs,
        key=AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": prune},
    )


# Blocks as (BLOCK_M, BLOCK_N, num_warps, loop unroll, THREAD_M, THREAD_N). The first that fits a layer's
# channel count is the one used without autotuning. Chosen with `python -m tools.sass` (sm_90 machine code,
# specialised as at run time, on ResNet-20 and ResNet-18 layers): none spills in its hot loop, and most of
# the hot loop's instructions are the kernel's arithmetic (the fractions: BENCHMARKS.md, "Triton kernels'
# machine code, sm_90" and "Figures behind design choices"; the input gradient's clamp form has fewer
# instructions of arithmetic beside the same loads and barriers). An 8 x 8 register tile per thread is what
# the forward's registers allow; the input gradient also holds two bounds (x' - 1, x' + 1) per entry of its
# THREAD_M x THREAD_N tile, so its tiles are 8 x 4.
FORWARD_SPACE = [
    Block(128, 64, 4, 2, 8, 8),  # a pair costs 2 instructions: x - w, and acc + |.|
    Block(256, 32, 4, 2, 16, 4),
    Block(128, 32, 2, 4, 8, 8),
    Block(128, 16, 1, 4, 8, 8),
    Block(64, 16, 1, 4, 4, 8),
]
GRAD_INPUT_SPACE = [
    Block(128, 32, 4, 2, 8, 4),  # a pair costs 3 instructions: a max, a min, a fused multiply-add
    Block(64, 32, 2, 2, 8, 4),
    Block(256, 32, 8, 2, 8, 4),
    Block(128, 16, 2, 2, 8, 4),
    Block(64, 16, 1, 2, 8, 4),
]
# float64 inputs (verification, not speed): 16 accumulators per thread, which do not spill
FLOAT64_BLOCK = Block(32, 16, 1, 1, 4, 4)
# under TRITON_INTERPRET=1: small, and with a register tile so that the tests cover its index mapping
INTERPRETER_BLOCK = Block(32, 16, 1, 1, 4, 4)


@triton.jit
def _thread_rows(v, THREAD_M: tl.constexpr, LANES_M: tl.constexpr):
    """(BLOCK_M,) -> (THREAD_M, 1, LANES_M, 1): element lane * THREAD_M + r goes to [r, 0, lane, 0]."""
    return tl.trans(tl.reshape(v, (LANES_M, THREAD_M)))[:, None, :, None]


@triton.jit
def _thread_cols(v, THREAD_N: tl.constexpr, LANES_N: tl.constexpr):
    """(BLOCK_N,) -> (1, THREAD_N, 1, LANES_N): element lane * THREAD_N + s goes to [0, s, 0, lane]."""
    return tl.trans(tl.reshape(v, (LANES_N, THREAD_N)))[None, :, None, :]


@triton.jit
def _flat_tile(acc, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(THREAD_M, THREAD_N, LANES_M, LANES_N) -> (BLOCK_M, BLOCK_N), the inverse of the two above."""
    return tl.reshape(tl.permute(acc, (2, 0, 3, 1)), (BLOCK_M, BLOCK_N))


# The accumulator is (THREAD_M, THREAD_N, LANES_M, LANES_N): Triton's default layout of that shape puts
# the lanes (threads and warps) on the last two axes and the first two in each thread's registers, which
# is the register tile. Operands are loaded as flat vectors and reshaped into it, because a load of the
# tile's own shape would impose its (memory-coalesced) layout on the accumulator.


@_autotune("OUT_PER_GROUP", FORWARD_SPACE)
@triton.jit
def _adder2d_forward_kernel(
    x_ptr, w_ptr, y_ptr,
    n_pixels, pixel_bucket, height, width, out_h, out_w,
    sxb, sxc, sxh, sxw,
    swo, swc, swh, sww,
    syb, syo, syh, syw,
    C_PER_GROUP, OUT_PER_GROUP,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UNROLL: tl.constexpr,
    THREAD_M: tl.constexpr, THREAD_N: tl.constexpr,
):  # fmt: skip
    LANES_M: tl.constexpr = BLOCK_M // THREAD_M
    LANES_N: tl.constexpr = BLOCK_N // THREAD_N
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    tiles_per_group = tl.cdiv(OUT_PER_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    n0 = (pid_n % tiles_per_group) * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)  # output channel in the group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixel: (b, oh, ow)
    mask_m = offs_m < n_pixels
    mask_n = offs_n < OUT_PER_GROUP
    b = offs_m // (out_h * out_w)
    oh = (offs_m // out_w) % out_h
    ow = offs_m % out_w
    x_group = b * sxb + group * C_PER_GROUP * sxc  # (M,) offsets: int32 keeps registers for accumulators
    # (N,) offsets in 64 bits from a uniform base, so that the compiler sees a thread's THREAD_N weights
    # at constant distances (one vector load when the launcher lays output channels out contiguously)
    w_rows = ((group * OUT_PER_GROUP + n0).to(tl.int64) + tl.arange(0, BLOCK_N)) * swo

    # one rank-1 update per (tap, channel): acc[m, n] += |x[m] - w[n]|, so each thread's register tile
    # reuses its THREAD_M loaded x and THREAD_N loaded w values (no (M, K, N) temporary)
    acc = tl.zeros((THREAD_M, THREAD_N, LANES_M, LANES_N), dtype=ACC)
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
                acc += tl.abs(_thread_rows(x, THREAD_M, LANES_M) - _thread_cols(w, THREAD_N, LANES_N))

    o = group * OUT_PER_GROUP + offs_n
    y_offsets = b[:, None] * syb + o[None, :] * syo + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y_ptr + y_offsets, -_flat_tile(acc, BLOCK_M, BLOCK_N), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _grad_input_clamp(
    g_ptr, w_ptr, lo, hi, g_group, w_cols, mask_m, mask_n, hq, wq, rh, rw, out_h, out_w,
    sgo, sgh, sgw, swo, swh, sww,
    OUT_PER_GROUP, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr, UNROLL: tl.constexpr,
    THREAD_M: tl.constexpr, THREAD_N: tl.constexpr, LANES_M: tl.constexpr, LANES_N: tl.constexpr,
):  # fmt: skip
    """The input gradient's sum in the clamp form over the output channels o and taps (i, j) that reach the
    tile's pixels: sum G * clamp(w, lo, hi) as a register tile (a max, a min and a multiply-add per pair),
    and sum G over the same terms per pixel, as a flat (BLOCK_M,) vector (an addition per loaded G)."""
    acc = tl.zeros((THREAD_M, THREAD_N, LANES_M, LANES_N), dtype=ACC)
    g_sum = tl.zeros((THREAD_M * LANES_M,), dtype=ACC)
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
                        clamped = tl.minimum(tl.maximum(_thread_cols(wv, THREAD_N, LANES_N), lo), hi)
                        acc += _thread_rows(g, THREAD_M, LANES_M) * clamped
                        g_sum += g
    return acc, g_sum


@triton.jit
def _grad_input_direct(
    g_ptr, w_ptr, x, g_group, w_cols, mask_m, mask_n, hq, wq, rh, rw, out_h, out_w,
    sgo, sgh, sgw, swo, swh, sww,
    OUT_PER_GROUP, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    THREAD_M: tl.constexpr, THREAD_N: tl.constexpr, LANES_M: tl.constexpr, LANES_N: tl.constexpr,
):  # fmt: skip
    """The same sum in the direct form, sum G * HT(w - x) (w - x, two clamps, a multiply-add per pair), for
    the entries whose clamp form is not finite: inf inputs and weights give HT = -1 or 1, as in the
    reference; a NaN difference clamps to -1 (tl.maximum returns the number), where the reference gives
    NaN, as this kernel did before the clamp form. Its taps are a run-time loop and it is not unrolled: a
    static one shared its per-tap offsets with the clamp form's loops, which then held them live throughout,
    in registers the accumulators need (BENCHMARKS.md, "Figures behind design choices"); and a loop nest is
    what `python -m tools.sass` leaves out of the hot loop."""
    acc = tl.zeros((THREAD_M, THREAD_N, LANES_M, LANES_N), dtype=ACC)
    for tap in tl.range(0, KH * KW, loop_unroll_factor=1):
        i = tap // KW
        j = tap % KW
        th = rh + pad_h - i * dil_h
        tw = rw + pad_w - j * dil_w
        if (th % stride_h == 0) & (tw % stride_w == 0):
            oh = hq + th // stride_h
            ow = wq + tw // stride_w
            reach = mask_m & (oh >= 0) & (oh < out_h) & (ow >= 0) & (ow < out_w)
            g_tap = g_group + oh * sgh + ow * sgw
            w_tap = w_cols + i * swh + j * sww
            for o in tl.range(0, OUT_PER_GROUP, loop_unroll_factor=1):
                g = tl.load(g_ptr + o * sgo + g_tap, mask=reach, other=0.0).to(ACC)
                wv = tl.load(w_ptr + o * swo + w_tap, mask=mask_n, other=0.0).to(ACC)
                ht = tl.minimum(tl.maximum(_thread_cols(wv, THREAD_N, LANES_N) - x, -1.0), 1.0)
                acc += _thread_rows(g, THREAD_M, LANES_M) * ht
    return acc


@_autotune("C_PER_GROUP", GRAD_INPUT_SPACE)
@triton.jit
def _adder2d_grad_input_kernel(
    g_ptr, x_ptr, w_ptr, ws_ptr, s_ptr, dx_ptr,
    n_pixels, pixel_bucket, height, width, out_h, out_w, class_h, class_w,
    sgb, sgo, sgh, sgw,
    sxb, sxc, sxh, sxw,
    swo, swc, swh, sww,
    sdb, sdc, sdh, sdw,
    C_PER_GROUP, OUT_PER_GROUP,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UNROLL: tl.constexpr,
    THREAD_M: tl.constexpr, THREAD_N: tl.constexpr,
):  # fmt: skip
    # d(-|x - w|)/dx = sign(w - x), clipped by AdderNet to HT(w - x) = clamp(w - x, -1, 1). The input pixel
    # q = (h, w) gathers from every output pixel p and tap (i, j) with q = p * s - pad + (i, j) * d. A
    # program takes input pixels of one residue class h = rh + s_h * hq, w = rw + s_w * wq: the taps that
    # reach such a pixel are the same for the whole class (i * d_h = rh + pad_h mod s_h), and each reaches
    # it from the output pixel (hq, wq) + a constant, so no term is masked out for the stride.
    # The sum is formed as sum G * clamp(w', x' - 1, x' + 1) - x' * sum G, with x' = x - s_c and w' = w - s_c
    # shifted by the channel's mean weight s_c (ws_ptr holds w', s_ptr s_c; w_ptr the unshifted weights);
    # the entries of a tile that are not finite then are formed again in the direct form from x and w (see
    # the module docstring).
    LANES_M: tl.constexpr = BLOCK_M // THREAD_M
    LANES_N: tl.constexpr = BLOCK_N // THREAD_N
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_r = tl.program_id(2)
    rh = pid_r // stride_w
    rw = pid_r % stride_w
    tiles_per_group = tl.cdiv(C_PER_GROUP, BLOCK_N)
    group = pid_n // tiles_per_group
    n0 = (pid_n % tiles_per_group) * BLOCK_N
    m0 = pid_m * BLOCK_M

    # the input tile, loaded once as a flat vector in the accumulator's element order (r, s, lane_m, lane_n)
    k = tl.arange(0, BLOCK_M * BLOCK_N)
    k_m = m0 + ((k // LANES_N) % LANES_M) * THREAD_M + k // (THREAD_N * LANES_M * LANES_N)
    k_n = n0 + (k % LANES_N) * THREAD_N + (k // (LANES_M * LANES_N)) % THREAD_N
    k_h = rh + ((k_m // class_w) % class_h) * stride_h
    k_w = rw + (k_m % class_w) * stride_w
    k_inside = (k_m < n_pixels) & (k_h < height) & (k_w < width) & (k_n < C_PER_GROUP)
    k_offsets = (k_m // (class_h * class_w)) * sxb + (group * C_PER_GROUP + k_n) * sxc + k_h * sxh + k_w * sxw
    x = tl.reshape(
        tl.load(x_ptr + k_offsets, mask=k_inside, other=0.0).to(ACC), (THREAD_M, THREAD_N, LANES_M, LANES_N)
    )

    offs_m = m0 + tl.arange(0, BLOCK_M)  # (b, hq, wq) in the class
    offs_n = n0 + tl.arange(0, BLOCK_N)  # input channel in the group
    b = offs_m // (class_h * class_w)
    hq = (offs_m // class_w) % class_h
    wq = offs_m % class_w
    h = rh + hq * stride_h
    w_ = rw + wq * stride_w
    mask_m = (offs_m < n_pixels) & (h < height) & (w_ < width)
    mask_n = offs_n < C_PER_GROUP
    g_group = b * sgb + group * OUT_PER_GROUP * sgo  # (M,) offsets
    # (N,) offsets in 64 bits from a uniform base: a thread's THREAD_N weights at constant distances
    w_cols = (group * OUT_PER_GROUP * swo + n0 * swc).to(tl.int64)  # the weight's channel is in the group
    w_cols += tl.arange(0, BLOCK_N) * swc
    shift = tl.load(s_ptr + group * C_PER_GROUP + offs_n, mask=mask_n, other=0.0)  # s_c, in ACC
    x_shifted = x - _thread_cols(shift, THREAD_N, LANES_N)

    # the bounds x' - 1 and x' + 1 once per tile, then a max, a min and a multiply-add per pair
    lo = x_shifted - 1.0
    hi = x_shifted + 1.0
    acc, g_sum = _grad_input_clamp(
        g_ptr, ws_ptr, lo, hi, g_group, w_cols, mask_m, mask_n, hq, wq, rh, rw,
        out_h, out_w, sgo, sgh, sgw, swo, swh, sww,
        OUT_PER_GROUP, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH, KW, ACC, UNROLL, THREAD_M, THREAD_N, LANES_M, LANES_N,
    )  # fmt: skip
    # x' as the bounds' midpoint, within a rounding of x' (x' itself, held through the loop beside the
    # bounds or loaded again here, took more registers: BENCHMARKS.md, "Figures behind design choices")
    dx = acc - _thread_rows(g_sum, THREAD_M, LANES_M) * (0.5 * (lo + hi))

    # inf or NaN (x - x is 0 only for finite x): an input, weight or gradient that is not finite, or an
    # overflow; the clamp form gives NaN for inf - inf. Those entries are formed in the direct form from the
    # unshifted input, loaded again (rare: holding it through the loop would cost registers)
    finite = dx - dx == 0.0
    if tl.sum(tl.where(finite, 0, 1)) > 0:
        x_rows = b * sxb + h * sxh + w_ * sxw
        x_cols = (group * C_PER_GROUP + offs_n) * sxc
        x = tl.load(
            x_ptr + _thread_rows(x_rows, THREAD_M, LANES_M) + _thread_cols(x_cols, THREAD_N, LANES_N),
            mask=_thread_rows(mask_m, THREAD_M, LANES_M) & _thread_cols(mask_n, THREAD_N, LANES_N),
            other=0.0,
        ).to(ACC)
        direct = _grad_input_direct(
            g_ptr, w_ptr, x, g_group, w_cols, mask_m, mask_n, hq, wq, rh, rw,
            out_h, out_w, sgo, sgh, sgw, swo, swh, sww,
            OUT_PER_GROUP, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
            KH, KW, ACC, THREAD_M, THREAD_N, LANES_M, LANES_N,
        )  # fmt: skip
        dx = tl.where(finite, dx, direct)

    c = group * C_PER_GROUP + offs_n
    dx_offsets = b[:, None] * sdb + c[None, :] * sdc + h[:, None] * sdh + w_[:, None] * sdw
    tl.store(dx_ptr + dx_offsets, _flat_tile(dx, BLOCK_M, BLOCK_N), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _linear_grad_weight_kernel(
    g_ptr, x_ptr, w_ptr, dw_ptr,
    n_rows, out_features, in_features,
    sgn, sgo, sxn, sxk, swo, swk, sdo, sdk,
    ACC: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    # dW[o, k] = sum_n G[n, o] (X[n, k] - W[o, k]) = (G^T X)[o, k] - W[o, k] sum_n G[n, o]: the GEMM and the
    # column sums of G in one pass, both accumulated in ACC (float32 for half inputs: the two terms cancel
    # when X and W share an offset), the dot product exact ("ieee": never TF32, whatever torch's flags say)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_o = offs_o < out_features
    mask_k = offs_k < in_features
    acc = tl.zeros((BLOCK_O, BLOCK_K), dtype=ACC)
    g_sum = tl.zeros((BLOCK_O,), dtype=ACC)
    for r0 in range(0, n_rows, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        mask_r = offs_r < n_rows
        g_t = tl.load(
            g_ptr + offs_o[:, None] * sgo + offs_r[None, :] * sgn,
            mask=mask_o[:, None] & mask_r[None, :],
            other=0.0,
        ).to(ACC)  # (BLOCK_O, BLOCK_R): G transposed
        x = tl.load(
            x_ptr + offs_r[:, None] * sxn + offs_k[None, :] * sxk,
            mask=mask_r[:, None] & mask_k[None, :],
            other=0.0,
        ).to(ACC)  # (BLOCK_R, BLOCK_K)
        acc += tl.dot(g_t, x, input_precision="ieee", out_dtype=ACC)
        g_sum += tl.sum(g_t, axis=1)
    mask = mask_o[:, None] & mask_k[None, :]
    w = tl.load(w_ptr + offs_o[:, None] * swo + offs_k[None, :] * swk, mask=mask, other=0.0).to(ACC)
    dw = acc - w * g_sum[:, None]
    tl.store(dw_ptr + offs_o[:, None] * sdo + offs_k[None, :] * sdk, dw, mask=mask)


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
    count N (the launcher and ``python -m tools.sass`` build it the same way)."""

    kernel: object
    args: tuple
    constexprs: dict
    grid: object
    n: int

    def configs(self) -> list[triton.Config]:
        """The configs of the kernel's space that fit this launch (see _fitting)."""
        return _fitting(self.kernel.configs, self.n, self.constexprs["ACC"])

    def blocks(self) -> list[Block]:
        return [Block.of(cfg) for cfg in self.configs()]

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
    # output channels contiguous: a thread's THREAD_N weights of one (channel, tap) are one vector load
    weight = weight.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)
    _check_index_range(input, weight, out)
    n_pixels, og = b * ho * wo, o // groups
    _check_grid(groups * triton.cdiv(og, MIN_BLOCK_N), "groups x output channels")

    def grid(meta):
        return (triton.cdiv(n_pixels, meta["BLOCK_M"]), groups * triton.cdiv(og, meta["BLOCK_N"]))

    args = (
        input, weight, out,
        n_pixels, pixel_bucket(n_pixels), input.shape[2], input.shape[3], ho, wo,
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
    og = o // groups
    # the shift s_c of the clamp form: the mean of input channel c's weights (over the output channels of
    # its group and the taps), in the accumulation dtype (float32 for half weights), as a (C,) vector; and
    # the shifted weights w - s_c
    weight = weight.detach()  # out= below refuses tensors that require grad
    by_group = weight.unflatten(0, (groups, og))  # (G, O/G, C/G, kh, kw)
    shift = by_group.mean((1, 3, 4), keepdim=True, dtype=_acc_dtype(input))  # (G, 1, C/G, 1, 1)
    # input channels contiguous: a thread's THREAD_N weights of one (output channel, tap) are one vector
    # load. The shifted weights (in the accumulation dtype) and a copy of the weights, for the direct form,
    # are laid out alike, so that they share their strides
    shifted = torch.empty((o, kh, kw, cg), device=weight.device, dtype=shift.dtype).permute(0, 3, 1, 2)
    torch.sub(by_group, shift, out=shifted.unflatten(0, (groups, og)))
    weight = torch.empty_like(shifted, dtype=weight.dtype).copy_(weight)
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
        grad, input, weight, shifted, shift.reshape(-1), dx,
        n_pixels, pixel_bucket(n_pixels), h, w, ho, wo, class_h, class_w,
        *grad.stride(), *input.stride(), *weight.stride(), *dx.stride(),
        cg, og, *stride, *padding, *dilation,
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
    # sum_n G[n, o] * (X[n, k] - W[o, k]) = (G . X)[o, k] - W[o, k] * sum_n G[n, o]. The two terms cancel
    # when X and W share an offset, so both are formed in the accumulation dtype (float32 for half inputs,
    # at the cost of a float32 copy of the input and the gradient) and only the difference is rounded to the
    # weight's dtype. The GEMM is exact float32: cuDNN would use TF32 for float32 convolutions by default;
    # cudnn.flags sets that for this call and restores it (torch offers no per-call setting).
    acc = _acc_dtype(input)
    grad_acc, input_acc, weight_acc = grad.to(acc), input.to(acc), weight.to(acc)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gemm = torch.ops.aten.convolution_backward(
            grad_acc, input_acc, weight_acc, None, stride, padding, dilation, False, [0, 0], groups,
            [False, True, False],
        )[1]  # fmt: skip
    correction = weight_acc * grad_acc.sum((0, 2, 3))[:, None, None, None]
    return gemm.sub_(correction).to(weight.dtype)


linear_forward, linear_grad_input = linear_as_conv(adder2d_forward, adder2d_grad_input)

LINEAR_GRAD_WEIGHT_BLOCK = (32, 32, 32, 4)  # BLOCK_O, BLOCK_K, BLOCK_R (rows reduced per step), warps


def linear_grad_weight(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """(N, O), (N, K), (O, K) -> (O, K) in one kernel (``_linear_grad_weight_kernel``): accumulated in
    float32 (float64 for float64 inputs), never in TF32, and without touching torch's global matmul flags."""
    n, k = x.shape
    o = weight.shape[0]
    dw = torch.empty((o, k), device=x.device, dtype=_acc_dtype(x))
    block_o, block_k, block_r, warps = LINEAR_GRAD_WEIGHT_BLOCK
    _check_index_range(grad, x, weight, dw)
    grid = (triton.cdiv(o, block_o), triton.cdiv(k, block_k))
    _check_grid(grid[1], "input features")
    _linear_grad_weight_kernel[grid](
        grad, x, weight, dw,
        n, o, k,
        *grad.stride(), *x.stride(), *weight.stride(), *dw.stride(),
        ACC=_acc(x), BLOCK_O=block_o, BLOCK_K=block_k, BLOCK_R=block_r, num_warps=warps,
    )  # fmt: skip
    return dw.to(weight.dtype)

"""Measured CPU ceilings for the adder kernels: probe kernels with their hot loops and nothing else.

The cpu backend's kernels (``slac.ops.cpu``) run a tile of P packed rows times Q weight rows over the
whole reduction with the P * Q accumulators in vector registers. A probe runs that same hot loop, with
the same tile, vector width and compiler flags, on operands that sit in L1, repeated over the same rows
so that the loop is all there is: its rate is what the real kernel's inner loop can reach on this
machine, the ceiling the adder benchmark reports against (BENCHMARKS.md, "Adder layer, CPU:
register-blocked kernels"). Three probes:

    forward     a_pq += min(X[p, k], W[q, k])                        the forward's min form (min, add)
    grad_input  a_pq += G[p, k] * min(max(W[q, k], lo_pq), hi_pq)    the input gradient's clamp form
    fma         a_pq += X[p, k] * W[q, k]                             the multiply-add rate of that loop

Rates are |x - w| pairs (multiply-adds for ``fma``) per second: P * Q * K per repetition of the tile.
An instruction count gives no ceiling that holds across CPUs: min + add is not at half the FMA rate on
every CPU (on the Sapphire Rapids machine of BENCHMARKS.md it is at about 0.75), so each probe is
measured. The probes are written out as scalar numba code
with named accumulators, the way ``slac.ops.cpu_codegen`` writes the kernels, and compiled once per
process (exec'd source cannot use numba's cache).
"""

from __future__ import annotations

import functools
import time

import numba
import numpy as np
import torch
from numba import njit, prange

from slac.ops.numba_extras import prefer_512_bit_vectors

__all__ = ["PROBES", "measure_ceilings", "probe_kernels", "probe_source", "run_probe"]

# the kernels' flags: reassoc/contract let LLVM vectorize the reductions and fuse multiply-adds
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# per probe: the term one accumulator adds per k (x{p} the p-th row's element, w{q} the q-th weight row's)
PROBES = {
    "forward": "min(x{p}, w{q})",
    "grad_input": "x{p} * min(max(w{q}, lo{p}{q}), hi{p}{q})",
    "fma": "x{p} * w{q}",
}
# the real kernel whose tile each probe takes (slac.ops.cpu.tile)
_KERNEL_OF = {"forward": "forward", "grad_input": "grad_input", "fma": "forward"}

REDUCTION = 576  # K of ResNet-20's 64-channel 3x3 layers: at most 8 rows of float32, 18 KiB, in L1
_CALL_SECONDS = 0.005  # each timed call runs about this long
_TIMED_CALLS = 15  # the best of these is the rate (a ceiling: any disturbance only slows a call)


def probe_source(kind: str, p: int, q: int, bits: int) -> str:
    """Python source of the ``kind`` probe on a P x Q tile: ``_probe(x, w, lo, hi, zero, reps, out)``,
    one thread, and ``_probe_threads`` with the same arguments, each with a leading thread axis."""
    pairs = [(i, j) for i in range(p) for j in range(q)]
    term = PROBES[kind]
    body = [
        "@njit(fastmath=_FASTMATH, nogil=True, boundscheck=False)",
        "def _probe(x, w, lo, hi, zero, reps, out):",
        f"    # x ({p}, K), w ({q}, K), lo and hi ({p}, {q}): clamp bounds (grad_input only); out ({p}, {q})",
        "    # += the tile's sums, reps times (stored, so no repetition is dead code)",
    ]
    if bits == 512:
        body.append("    prefer_512_bit_vectors()")
    body.append("    for rep in range(reps):")
    if kind == "grad_input":  # read per tile, as the kernel does (read once before all tiles, one spilled)
        body += [f"        lo{i}{j} = lo[{i}, {j}]; hi{i}{j} = hi[{i}, {j}]" for i, j in pairs]
    body += [f"        a{i}{j} = zero" for i, j in pairs]
    body.append("        for k in range(x.shape[1]):")
    body += [f"            x{i} = x[{i}, k]" for i in range(p)]
    body += [f"            w{j} = w[{j}, k]" for j in range(q)]
    body += [f"            a{i}{j} += {term.format(p=i, q=j)}" for i, j in pairs]
    body += [f"        out[{i}, {j}] += a{i}{j}" for i, j in pairs]
    body += [
        "",
        "",
        "@njit(parallel=True, nogil=True, boundscheck=False)",
        "def _probe_threads(x, w, lo, hi, zero, reps, out):",
        "    for t in prange(x.shape[0]):  # one tile per thread, on its own copy of the operands",
        "        _probe(x[t], w[t], lo[t], hi[t], zero, reps, out[t])",
    ]
    return "\n".join(body) + "\n"


@functools.cache
def probe_kernels(kind: str, p: int, q: int, bits: int):
    """The compiled (one-thread, all-threads) probe functions of ``probe_source``."""
    if kind not in PROBES:
        raise ValueError(f"unknown probe {kind!r}; choose from {list(PROBES)}")
    namespace = {"njit": njit, "prange": prange, "prefer_512_bit_vectors": prefer_512_bit_vectors,
                 "_FASTMATH": _FASTMATH}  # fmt: skip
    exec(compile(probe_source(kind, p, q, bits), f"<slac probe {kind} {p}x{q} {bits}>", "exec"), namespace)
    return namespace["_probe"], namespace["_probe_threads"]


def _operands(threads: int, p: int, q: int, k: int, seed: int = 0):
    """(threads, P, K) and (threads, Q, K) values in [-1, 1), clamp bounds lo in [-1, 0) and hi = lo + 1
    (some weights inside, some outside), and a zeroed (threads, P, Q) output."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (threads, p, k)).astype(np.float32)
    w = rng.uniform(-1, 1, (threads, q, k)).astype(np.float32)
    lo = rng.uniform(-1, 0, (threads, p, q)).astype(np.float32)
    return x, w, lo, lo + np.float32(1), np.zeros((threads, p, q), np.float32)


def run_probe(kind: str, tile: tuple[int, int, int], threads: int = 1, k: int = REDUCTION) -> float:
    """Best rate of the ``kind`` probe on ``tile`` = (P, Q, bits): pairs (multiply-adds for ``fma``) per
    second over ``threads`` threads (1: the one-thread function, no thread team)."""
    p, q, bits = tile
    one, team = probe_kernels(kind, p, q, bits)
    x, w, lo, hi, out = _operands(threads, p, q, k)
    zero = np.float32(0)

    def seconds(fn, reps: int, *operands) -> float:
        start = time.perf_counter()
        fn(*operands, zero, reps, out if fn is team else out[0])
        return time.perf_counter() - start

    # the repetitions that make a call last _CALL_SECONDS, counted on one thread: a thread team's start-up
    # (milliseconds when the other cores are busy) would make any count look long enough
    first = (x[0], w[0], lo[0], hi[0])
    seconds(one, 1, *first)  # compiles on first use
    reps = 16
    while (elapsed := seconds(one, reps, *first)) < _CALL_SECONDS / 4:
        reps *= 2
    reps = max(1, round(reps * _CALL_SECONDS / elapsed))
    if threads == 1:
        best = min(seconds(one, reps, *first) for _ in range(_TIMED_CALLS))
    else:
        seconds(team, 1, x, w, lo, hi)
        best = min(seconds(team, reps, x, w, lo, hi) for _ in range(_TIMED_CALLS))
    return threads * p * q * k * reps / best


def measure_ceilings(threads: int | None = None) -> dict:
    """The three probes on this machine, each with the tile its kernel uses (``slac.ops.cpu.tile``),
    on ``threads`` threads (default torch's thread count, as the kernels run) and on one.

    Returns {"forward": pairs/s, "grad_input": pairs/s, "fma": multiply-adds/s (all on ``threads``),
    "one_thread": the same three on one thread, "threads": n, "tiles": {probe: (P, Q, bits)}}.
    """
    from slac.ops import cpu

    limit = numba.config.NUMBA_NUM_THREADS
    threads = max(1, min(torch.get_num_threads() if threads is None else threads, limit))
    tiles = {kind: cpu.tile(kernel) for kind, kernel in _KERNEL_OF.items()}
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        result: dict = {"one_thread": {kind: run_probe(kind, tiles[kind], 1) for kind in PROBES}}
        result.update({kind: run_probe(kind, tiles[kind], threads) for kind in PROBES})
    finally:
        numba.set_num_threads(previous)
    result.update(threads=threads, tiles=tiles)
    return result

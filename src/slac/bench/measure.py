"""Timing and peak-memory measurement that works the same way on the CPU and on CUDA devices."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch

__all__ = ["peak_memory_bytes", "quiet_stderr", "time_call", "time_once", "time_phases"]


@contextlib.contextmanager
def quiet_stderr():
    """Silence the profiler library's start/stop lines, which it writes to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(
    fn: Callable[..., object], device: torch.device, setup: Callable[[], object] | None = None
) -> float:
    """Seconds one ``fn()`` takes (``fn(setup())`` when ``setup`` is given; setup itself is not timed)."""
    args = () if setup is None else (setup(),)
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start_s


def time_phases(phases: list[Callable[[object], object]], device: torch.device) -> list[float]:
    """Seconds each of ``phases`` takes when they run back to back, each given the previous one's result
    (the first gets None): the phases of one training step timed as they run in it, not apart. Timed
    apart, a phase repeated on its own finds its data in the caches the other phase would have flushed,
    so the parts of a step did not add up to the step (BENCHMARKS.md, "A benchmark whose parts add up")."""
    _sync(device)
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(len(phases) + 1)]
        events[0].record()
        value: object = None
        for phase, event in zip(phases, events[1:], strict=True):
            value = phase(value)
            event.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(events)]
    stamps = [time.perf_counter()]
    value = None
    for phase in phases:
        value = phase(value)
        stamps.append(time.perf_counter())
    return [end - start for start, end in itertools.pairwise(stamps)]


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_once(fn, device) for _ in range(repeats))


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated when it started.

    CUDA: the caching allocator's peak statistic. CPU: the PyTorch profiler's memory events (every
    allocation through PyTorch's CPU allocator; memory that numba or NumPy allocate themselves, such as a
    kernel's few-KiB accumulator tiles, is not seen).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    memory = [e["args"] for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    if not memory:
        return 0
    # "Total Allocated" counts from the process's first profiled allocation, not from this window:
    # the baseline is the total just before the window's first event.
    baseline = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(0, max(m["Total Allocated"] for m in memory) - baseline)

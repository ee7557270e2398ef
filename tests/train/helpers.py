"""Running ``slac train`` in a subprocess, as a user would, and comparing the weights of runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from slac.train import load_checkpoint

# A run small enough for CI: LeNet ANN + SLAC on 256 digits, 8 steps per epoch.
SMALL_RUN = ["--train_subset", "256", "--batch_size", "32", "--progress", "false", "--tensorboard", "off"]


def slac_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "slac.cli", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_slac(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        slac_command(*args), capture_output=True, text=True, timeout=timeout, env=environment()
    )


def start_slac(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        slac_command(*args), stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment()
    )


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before the condition held")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def checkpoint_epoch(path: Path) -> int:
    try:
        return load_checkpoint(path)["epoch"] if path.is_file() else -1
    except Exception:  # being replaced this instant
        return -1


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a["epoch"] == b["epoch"] and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} differs"
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        for key in ("train_loss", "train_top1", "test_top1", "lr"):
            assert row_a.get(key) == row_b.get(key), (key, row_a, row_b)

"""What a run writes besides checkpoints: per-epoch metrics as CSV and TensorBoard scalars, a summary.

Run directory layout (``TrainConfig.run_dir``):

    config.yaml            the resolved recipe
    metrics.csv            one row per completed epoch (rewritten from the checkpoint's history, so a
                           resumed run never holds rows of epochs it computed again)
    tensorboard/           the same scalars for TensorBoard (events after a resume point are purged)
    checkpoints/last.pt    after every epoch, and when the run is interrupted (SIGTERM/SIGINT)
    checkpoints/best.pt    the epoch with the best test top-1 so far
    summary.json           written when the run ends: final and best test accuracy, time, throughput
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from slac.errors import MissingDependencyError

__all__ = ["MetricsWriter", "accuracy_counts", "metrics_table", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def accuracy_counts(logits: Any, targets: Any, ks: tuple[int, ...] = (1, 5)) -> list[Any]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at the classes)."""
    import torch

    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, kmax)
    hits = top == targets[:, None]  # (N, kmax)
    return [hits[:, : min(k, logits.shape[1])].any(dim=1).sum().to(torch.float64) for k in ks]


class MetricsWriter:
    """metrics.csv (all epochs so far, from the run's history) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: str, start_epoch: int) -> None:
        self.run_dir = run_dir
        self.writer: Any = None
        self._tensorboard = tensorboard != "off" and self.check_available(tensorboard == "on")
        self._purge_step = start_epoch + 1  # drops events a killed run wrote after the epoch it resumes from

    @staticmethod
    def check_available(required: bool = True) -> bool:
        """Whether TensorBoard can be written; ``required``: an error saying how to get it, else a note."""
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            if required:
                raise MissingDependencyError(
                    "tensorboard: on needs the tensorboard package: pip install slac[tensorboard]"
                ) from None
            print(
                "note: tensorboard is not installed; metrics go to metrics.csv only "
                "(pip install slac[tensorboard], or --tensorboard off to silence this)"
            )
            return False
        return True

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from ``history`` and add its last row to TensorBoard."""
        if not history:
            return
        write_text_atomic(self.run_dir / "metrics.csv", metrics_table(history))
        if self._tensorboard and self.writer is None:  # with the first epoch written, not before
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self._purge_step)
        if self.writer is not None:
            last = history[-1]
            for key, value in last.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, last["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def metrics_table(history: list[dict[str, Any]]) -> str:
    """The text of metrics.csv for ``history`` (one row per epoch; columns in order of appearance)."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    table = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    table.writeheader()
    for row in history:
        table.writerow({key: _format(value) for key, value in row.items()})
    return buffer.getvalue()


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.csv of a run directory as a list of rows with numbers parsed."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a slac run directory?")
    rows = []
    with path.open() as stream:
        for row in csv.DictReader(stream):
            rows.append({key: _parse(value) for key, value in row.items()})
    return rows


def _parse(value: str) -> Any:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number

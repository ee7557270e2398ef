"""Reading run directories written by ``slac train``: their recipe, metrics, summary and trained model."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slac.errors import RunError
from slac.train.checkpoint import load_checkpoint
from slac.train.config import CUSTOM, TrainConfig, other_bn, saved_config
from slac.train.records import read_metrics

__all__ = ["Run", "collect_features", "load_model", "load_run"]

# Recipe keys that do not change what a run computes: runs differing only in these (and the seed)
# are repetitions of one experiment.
EXECUTION_KEYS = frozenset(
    {
        "seed",
        "name",
        "out_dir",
        "device",
        "progress",
        "tensorboard",
        "workers",
        "eval_batch_size",
        "data_root",
        "compile",
        "eval_every",
    }
)


@dataclass
class Run:
    path: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None = field(default=None)

    @property
    def final_test_top1(self) -> float | None:
        finished = self.summary is not None and self.summary.get("epochs") in (None, self.config.epochs)
        if finished and self.summary.get("final_test_top1") is not None:
            value = self.summary["final_test_top1"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RunError(f"{self.path / 'summary.json'}: final_test_top1 is {value!r}, not a number")
            return float(value)
        return None

    @property
    def epoch_minutes(self) -> list[float]:
        """Wall-clock minutes of each logged epoch: training plus evaluation (recalibration, both tests);
        raises for an evaluated epoch whose evaluation time was not logged (runs of older versions)."""
        minutes = []
        for row in self.metrics:
            # read_metrics gives None for an empty cell
            if row.get("test_top1") is not None and row.get("eval_seconds") is None:
                raise RunError(
                    f"{self.path / 'metrics.csv'}: epoch {row.get('epoch')} was evaluated but its evaluation "
                    "time (eval_seconds) was not logged, so its cost is unknown; leave the run out of cost "
                    "figures, or train it again with this version"
                )
            minutes.append((float(row["epoch_seconds"]) + float(row.get("eval_seconds") or 0.0)) / 60)
        return minutes

    @property
    def final_test_top1_beside(self) -> float | None:
        """The final test top-1 on the BatchNorm statistics logged beside the headline (running ones when
        the headline is recalibrated, and the reverse); None when the run did not log them."""
        return self.final_test_top1_on(other_bn(self.config.eval_bn))

    def final_test_top1_on(self, bn: str) -> float | None:
        """The final test top-1 on the given BatchNorm statistics ("running" or "recalibrated"): the
        headline or the figure beside it; None when the run did not finish or did not log them."""
        if self.final_test_top1 is None:
            return None
        if bn == self.config.eval_bn:
            return self.final_test_top1
        value = self.summary.get(f"final_test_top1_{bn}")  # type: ignore[union-attr]
        return None if value is None else float(value)

    @property
    def experiment(self) -> tuple:
        """What the run computes, without its seed: runs with equal keys are repetitions."""
        items = self.config.to_dict()
        return tuple(sorted((k, repr(v)) for k, v in items.items() if k not in EXECUTION_KEYS))


def load_run(path: str | Path) -> Run:
    """A run directory: config.yaml, metrics.csv and (when the run finished) summary.json."""
    import yaml

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (give a run directory written by slac train)")
    if not path.is_dir():
        raise RunError(f"{path} is a file; give a run directory written by slac train")
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a slac run directory (no config.yaml); `slac train` writes one"
        )
    try:
        config = saved_config(yaml.safe_load(config_file.read_text()), str(config_file))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RunError(f"{config_file} is not valid YAML ({' '.join(str(error).split())})") from None
    summary_file = path / "summary.json"
    summary = None
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RunError(
                f"{summary_file} is not valid JSON ({error}); restore it, or delete it (the run then counts "
                "as unfinished)"
            ) from None
        if not isinstance(summary, dict):
            raise RunError(f"{summary_file} is not a run summary (a JSON object)")
    try:
        metrics = read_metrics(path) if (path / "metrics.csv").is_file() else []
    except (ValueError, csv.Error) as error:
        raise RunError(f"{path / 'metrics.csv'} cannot be read ({error})") from None
    return Run(path, config, metrics, summary)


def load_model(
    path: str | Path, checkpoint: str = "last", device: str = "cpu"
) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run (``checkpoints/{checkpoint}.pt``) in eval mode, with its recipe."""
    from slac.data import dataset_spec
    from slac.train.model import build_model

    state = load_checkpoint(Path(path) / "checkpoints" / f"{checkpoint}.pt")
    config = saved_config(state["config"], "checkpoint config")
    if CUSTOM in (config.model, config.dataset):
        raise RunError(
            f"{path}: its model or data was passed from Python, which slac cannot rebuild from the run; "
            "load the weights into the model (slac.train.UserModel(module, head).load_state_dict("
            f"load_checkpoint(path)['model'])) and analyse it from Python"
        )
    image_shape, num_classes = dataset_spec(config.dataset)
    model = build_model(config, image_shape, num_classes)
    model.load_state_dict(state["model"])
    return model.to(device, getattr(torch, config.dtype)).eval(), config


@torch.no_grad()
def collect_features(
    model: nn.Module, config: TrainConfig, split: str = "test", limit: int | None = None, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, d) of ``model`` on a split of the run's dataset, and the labels (N,)."""
    from slac.train.data import evaluation_loader, load_split

    loader = evaluation_loader(config, load_split(config, split), torch.device(device), limit)
    features, labels = [], []
    for images, targets in loader:
        features.append(model.forward_features(images).float().cpu())
        labels.append(targets.cpu())
    return torch.cat(features), torch.cat(labels)

"""Running sums of a training epoch (images, loss and its parts, top-1/top-5 hits), kept on the device so
that a step does not wait for the host, summed over processes at the end, saved in checkpoints so that
an epoch resumed in the middle reports what an uninterrupted one would."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slac.train.distributed import Distributed
from slac.train.records import accuracy_counts

__all__ = ["EpochMeters"]


class EpochMeters:
    """Running sums of an epoch on the device (no synchronisation per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.seconds = 0.0

    def add(self, name: str, value: Tensor) -> None:
        value = value.detach().to(torch.float64)
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value.clone()

    def record_step(self, logits: Tensor, total: Tensor, parts: dict[str, Tensor], labels: Tensor) -> None:
        """Add one step's image count, loss (and its parts) and top-1/top-5 hits."""
        count = torch.tensor(labels.numel(), dtype=torch.float64, device=labels.device)
        top1, top5 = accuracy_counts(logits.detach().double(), labels)
        self.add("count", count)
        self.add("loss", total * count)
        for name, value in parts.items():
            self.add(f"loss_{name}", value * count)
        self.add("top1", top1)
        self.add("top5", top5)

    @staticmethod
    def means(sums: dict[str, Tensor]) -> dict[str, float]:
        """Mean loss and its parts ("loss", "loss_<part>"), top-1/top-5 in %, and the image count."""
        values = {name: float(value) for name, value in sums.items()}
        count = values.pop("count")
        result = {name: value / count for name, value in values.items() if name.startswith("loss")}
        return result | {
            "top1": 100 * values["top1"] / count,
            "top5": 100 * values["top5"] / count,
            "count": count,
        }

    def summed(self, distributed: Distributed) -> dict[str, Tensor]:
        """The sums over every process (a collective: every process must call it)."""
        if not (distributed.enabled and self.sums):
            return dict(self.sums)
        names = sorted(self.sums)
        totals = distributed.all_reduce_sum(torch.stack([self.sums[name] for name in names]))
        return dict(zip(names, totals, strict=True))

    def state_dict(self, distributed: Distributed | None = None) -> dict[str, Any]:
        """Sums (over every process when ``distributed`` is given) and seconds, on the CPU."""
        sums = self.summed(distributed) if distributed is not None else self.sums
        return {"sums": {k: v.cpu() for k, v in sums.items()}, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.seconds = state["seconds"]

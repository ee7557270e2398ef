"""Numbers behind Figure 1 and the skewness claim, from a trained run (no plotting; ``slac.analysis.plots``
draws them).

- ``distribution_fits(values)``: mean log-likelihood per value of the maximum-likelihood Gaussian and
  Laplace fits (higher fits better).
- ``figure1_fits(run)``: those fits for the weights of one adder layer (default: the last; a CNN's last
  convolution for comparison) and for the pooled last-layer features of the first ``limit`` test images.
- ``skewness_angles(run)``: the mean pairwise cosine of the classes' skewness vectors gamma_k (1: all
  tails point one way; -1/(K-1): the most spread-out K directions) and the angle-constraint loss L_ac
  (Eq. 8) of an SL/SLAC head; None for heads without skewness.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slac.errors import ConfigError, RunError

__all__ = ["distribution_fits", "figure1_fits", "skewness_angles"]


def distribution_fits(values: np.ndarray) -> dict[str, float]:
    """{"gaussian", "laplace"}: mean log-likelihood of each maximum-likelihood fit to ``values`` (None for
    a constant), and the fitted parameters (mean/std; median/mean absolute deviation)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2 or not np.isfinite(values).all():
        raise RunError(f"distribution fits need at least 2 finite values, got {values.size} (or non-finite)")
    mean, std = stats.norm.fit(values)
    location, scale = stats.laplace.fit(values)
    if std == 0 or scale == 0:  # a constant (e.g. every feature 0 after a dead ReLU): no density fits
        return {"gaussian": None, "laplace": None, "mean": float(mean), "std": float(std),
                "median": float(location), "mad": float(scale), "count": int(values.size)}  # fmt: skip
    return {
        "gaussian": float(stats.norm.logpdf(values, mean, std).mean()),
        "laplace": float(stats.laplace.logpdf(values, location, scale).mean()),
        "mean": float(mean), "std": float(std), "median": float(location), "mad": float(scale),
        "count": int(values.size),
    }  # fmt: skip


def check_limit(limit: int | None) -> None:
    """``limit`` (images to score) is None (all) or a count >= 1; 0 or a negative count is a mistake that
    the data loader would not report (a negative one drops images from the end of the split)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be None or an integer >= 1, got {limit!r}")


def weight_layer(model: torch.nn.Module, layer: str | None = None) -> tuple[str, torch.nn.Module, str]:
    """(name, module, kind) of the layer whose weights Figure 1 shows: an adder layer of an ANN (default:
    the last one), or for a model without adder layers (CNN, BNN) a convolution (default: the last one)."""
    from slac.nn import AdderLayer

    named = dict(model.named_modules())
    layers = [name for name, module in named.items() if isinstance(module, AdderLayer)]
    kind = "adder"
    if not layers:
        layers = [name for name, module in named.items() if isinstance(module, torch.nn.Conv2d)]
        kind = "convolution"
    if not layers:
        raise RunError("the model has neither adder layers nor convolutions")
    chosen = layers[-1] if layer is None else layer
    if chosen not in layers:
        raise ConfigError(f"layer {chosen!r} is not an {kind} layer of the model: {', '.join(layers)}")
    return chosen, named[chosen], kind


def figure1_fits(
    run: str | Path, layer: str | None = None, split: str = "test", limit: int | None = 2000,
    checkpoint: str = "last",
) -> dict[str, Any]:  # fmt: skip
    """{"layer", "weights": fits, "features": fits, "images", ...} of a trained run."""
    from slac.analysis.runs import collect_features, load_model

    check_limit(limit)
    model, config = load_model(run, checkpoint)
    chosen, module, kind = weight_layer(model, layer)
    features, _ = collect_features(model, config, split, limit)
    return {
        "layer": chosen,
        "kind": kind,
        "bn": "running",  # the checkpoint's BatchNorm statistics, as deployed
        "weights": distribution_fits(module.weight.detach().double().cpu().numpy()),
        "features": distribution_fits(features.double().numpy()),
        "split": split,
        "images": int(features.shape[0]),
        "feature_dim": int(features.shape[1]),
    }


def skewness_angles(run: str | Path | Mapping[str, Any]) -> dict[str, float] | None:
    """{"mean_cosine", "angle_loss", "classes"} of a run's trained SL/SLAC head (a run directory, a
    checkpoint file or a checkpoint already loaded); None when the head has no skewness vectors."""
    from slac.heads.losses import angle_constraint, skewness_cosine
    from slac.train import load_checkpoint

    weights = (run if isinstance(run, Mapping) else load_checkpoint(run))["model"]
    if "head.skewness" not in weights:
        return None
    gamma = weights["head.skewness"].double()
    cosines = skewness_cosine(gamma)
    k = cosines.shape[0]
    off_diagonal = cosines[~torch.eye(k, dtype=torch.bool)]
    loss = angle_constraint(weights["head.loc"].double(), weights["head.log_variance"].double(), gamma)
    return {"mean_cosine": float(off_diagonal.mean()), "angle_loss": float(loss), "classes": k}

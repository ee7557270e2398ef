"""Scoring: a model on a split (``evaluate``), a run's checkpoint (``evaluate_checkpoint``, behind
``slac eval``), and an official AdderNet checkpoint on the dataset it was released for
(``evaluate_official``).

    result = evaluate(model, loader, torch.device("cpu"))     # any module images -> logits
    result = evaluate_checkpoint("runs/lenet_ann_slac_digits_seed0", bn="running")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slac.errors import ConfigError
from slac.nn import recalibrated_batchnorm
from slac.train.checkpoint import load_checkpoint
from slac.train.config import CUSTOM, TrainConfig, config_from_dict, saved_config
from slac.train.distributed import Distributed
from slac.train.model import build_model
from slac.train.records import accuracy_counts
from slac.train.step import amp_forward, autocast

__all__ = ["evaluate", "evaluate_checkpoint", "evaluate_official"]


@torch.no_grad()
def evaluate(
    module: nn.Module,
    loader: Any,
    device: torch.device,
    amp: str = "off",
    distributed: Distributed | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean classification loss of ``module`` (images -> logits) over
    ``loader``, summed over processes."""
    distributed = distributed or Distributed()
    was_training = module.training
    module.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for images, labels in loader:
        with autocast(device, amp):
            logits = module(images).double()
        top1, top5 = accuracy_counts(logits, labels)
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum").to(torch.float64)
        sums += torch.stack(
            [loss, top1, top5, torch.tensor(labels.numel(), dtype=torch.float64, device=device)]
        )
    module.train(was_training)
    loss, top1, top5, count = distributed.all_reduce_sum(sums).tolist()
    if count == 0:
        raise RuntimeError("evaluate: the loader yielded no images")
    return {"top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "loss": loss / count, "count": count}


def evaluate_checkpoint(
    path: str | Path, split: str = "test", overrides: dict[str, Any] | None = None, bn: str | None = None
) -> dict[str, Any]:
    """Accuracy of the weights in checkpoint ``path`` (file or run directory) on ``split``.

    ``bn``: the BatchNorm statistics to score with, ``"running"`` (the checkpoint's) or ``"recalibrated"``
    (recomputed from the run's recalibration batches, as in training); default: the run's ``eval_bn``, so
    that the result is the run's headline figure. ``overrides`` may set device, data_root,
    eval_batch_size, workers, bn_recalibration. Returns top1, top5, loss, count, bn, the checkpoint's
    epoch and, where the run logged one for that epoch and these statistics, ``logged_test_top1``.
    """
    from slac.data import STREAMING
    from slac.train.config import EVAL_BN
    from slac.train.data import evaluation_loader, load_split, recalibration_loader, recalibration_split
    from slac.train.distributed import resolve_device

    state = load_checkpoint(path)
    overrides = dict(overrides or {})
    unknown = sorted(
        set(overrides) - {"device", "data_root", "eval_batch_size", "workers", "bn_recalibration"}
    )
    if unknown:
        raise ConfigError(f"slac eval: cannot override {', '.join(unknown)}")
    batches = overrides.get("bn_recalibration")
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ConfigError(f"--bn_recalibration must be >= 1 training batches, got {batches!r}")
    trained = saved_config(state["config"], "checkpoint config")  # the run as it was trained
    if CUSTOM in (trained.model, trained.dataset):
        raise ConfigError(
            f"checkpoint {path}: its model or data was passed from Python, which slac eval cannot rebuild; "
            "load the weights into the model (slac.train.UserModel(module, head).load_state_dict("
            "load_checkpoint(path)['model'])) and score it with slac.train.evaluate"
        )
    config = config_from_dict({**trained.to_dict(), **overrides}, "slac eval")
    bn = config.eval_bn if bn is None else bn
    if bn not in EVAL_BN:
        raise ConfigError(f"bn must be one of {', '.join(EVAL_BN)}, got {bn!r}")
    if batches is not None and bn == "running":
        raise ConfigError(
            "--bn_recalibration sets the batches of --bn recalibrated; it means nothing for running"
        )
    if bn == "recalibrated" and config.bn_recalibration == 0:
        raise ConfigError(
            f"checkpoint {path}: its run did not recalibrate BatchNorm statistics; choose how many training "
            "batches to recompute them from (slac eval --bn_recalibration N), or score the running ones"
        )
    device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype)
    dataset = load_split(config, split)
    subset = config.test_subset if split == "test" else config.train_subset  # the images the run scored
    loader = evaluation_loader(config, dataset, device, subset)
    if config.dataset in STREAMING:
        image_shape, num_classes = tuple(dataset[0][0].shape), len(dataset.classes)
    else:
        image_shape, num_classes = dataset.image_shape, dataset.num_classes
    model = build_model(config, image_shape, num_classes).to(device, dtype)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ConfigError(
            f"checkpoint {path}: its weights do not fit the model of its recipe: {error}"
        ) from None
    if bn == "recalibrated":
        batches = recalibration_loader(config, recalibration_split(config), device)
        with recalibrated_batchnorm(model, batches, config.bn_recalibration, amp_forward(device, config.amp)):
            result: dict[str, Any] = evaluate(model, loader, device, config.amp)
    else:
        result = evaluate(model, loader, device, config.amp)
    result["epoch"] = state["epoch"]
    result["split"] = split
    result["bn"] = bn
    key = "test_top1" if bn == trained.eval_bn else f"test_top1_{bn}"
    # recalibrated in one process on whole batches: the training-time figure of a run over several
    # processes without synchronised BatchNorm averaged per-process statistics instead
    sharded = state.get("world_size", 1) > 1 and not config.sync_batchnorm
    same_batches = bn == "running" or (config.bn_recalibration == trained.bn_recalibration and not sharded)
    logged = [row[key] for row in state["history"] if row["epoch"] == state["epoch"] and key in row]
    if split == "test" and logged and same_batches:
        result["logged_test_top1"] = logged[0]
    return result


def evaluate_official(
    path: str | Path,
    model: str = "resnet20",
    data_root: str | None = None,
    device: str = "auto",
    batch_size: int = 1000,
    workers: int = 8,
) -> dict[str, Any]:
    """Test accuracy of an official AdderNet checkpoint (``slac.models.load_official_addernet``) on the
    dataset it was released for (ResNet-20: CIFAR-10's 10,000 test images; ResNet-50: ImageNet's 50,000
    validation images), normalized as the official test.py does, on its running BatchNorm statistics.
    Returns top1, top5, loss, count, model, dataset and the published top-1 (``published_top1``)."""
    import dataclasses

    from slac.data import STREAMING
    from slac.models.official import OFFICIAL_MODELS, OFFICIAL_NORMALIZATION, load_official_addernet
    from slac.train.data import evaluation_loader, load_split
    from slac.train.distributed import resolve_device

    net = load_official_addernet(path, model, map_location="cpu")  # checks the model name first
    dataset = OFFICIAL_MODELS[model]["dataset"]
    config = TrainConfig(
        model=model, dataset=dataset, data_root=data_root, device=device, eval_batch_size=batch_size,
        workers=workers, head="linear", bn_recalibration=0, eval_bn="running",
    )  # fmt: skip
    target = resolve_device(config.device)
    net = net.to(target)
    test = load_split(config, "test")
    if dataset not in STREAMING:  # ImageFolder's transform already normalizes as torchvision does
        mean, std = OFFICIAL_NORMALIZATION[dataset]
        test = dataclasses.replace(test, mean=mean, std=std)
    result: dict[str, Any] = evaluate(net, evaluation_loader(config, test, target), target)
    return result | {
        "model": model,
        "dataset": dataset,
        "published_top1": OFFICIAL_MODELS[model]["published_top1"],
    }

"""The training loop of the paper's recipes: SGD with head parameter groups, cosine schedule, adder
gradient scaling, mixed precision, checkpoints that resume exactly, DistributedDataParallel.

    slac train                                         # LeNet ANN + SLAC on the embedded digits
    slac train --config configs/table1/resnet20_cifar10_slac_ann.yaml --data_root ~/data/cifar
    slac train --resume runs/lenet_ann_slac_digits_seed0
    torchrun --nproc_per_node=4 -m slac.cli train --config ...

One step (``Trainer._train_step``): forward through the backbone and the head (margin heads see the
targets), the head's loss (Eq. 9: classification + lambda likelihood + beta angle), backward (DDP
all-reduces the gradients), ``scale_adder_grads`` on the synchronised gradient (AdderNet's adaptive
learning-rate scaling, eta), the SGD step, the scheduler step. The learning rate follows the schedule
per step (cosine from ``lr`` to 0 over all steps, after an optional linear warm-up).

Parameter groups: the backbone (and the ANN's logit BatchNorm) at ``lr``; the head at ``lr``; the head's
covariance parameters at ``lr / covariance_lr_factor`` (``slac.heads.head_param_groups``). Weight decay
applies to every group, as in the official AdderNet recipe.

Reported accuracies: ``test_top1``/``test_top5`` on the whole test split after the epoch (the metric of
the paper's tables; ``best`` is the highest of them, an optimistic figure since there is no separate
validation split, so reports use the final epoch). Training accuracy is measured on the logits the
loss saw: for margin heads (L-Softmax, LGM, MoM) those include the margin, a lower bound.

Resuming: a checkpoint holds everything the next step depends on (weights, optimizer momentum,
schedule position, loader position and generator, global RNG states, the running sums of the epoch in
progress), so ``--resume`` ends with the same weights as an uninterrupted run on the CPU (tested with a
real SIGKILL). On CUDA, bit-identity needs ``deterministic: true``. Streaming datasets (ImageNet)
resume at the right batch, but with ``workers > 0`` the random augmentations after the resume point
differ (each DataLoader iteration seeds its workers afresh).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slac.errors import DivergenceError
from slac.heads import head_param_groups
from slac.models import create_model, model_cfg
from slac.nn import recalibrated_batchnorm, scale_adder_grads
from slac.train.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from slac.train.config import (
    RESUME_OVERRIDABLE,
    ConfigError,
    TrainConfig,
    config_from_dict,
    other_bn,
    save_config,
    saved_config,
)
from slac.train.data import DataBundle, build_data
from slac.train.distributed import Distributed, convert_sync_batchnorm, init_distributed
from slac.train.records import MetricsWriter, accuracy_counts, write_json_atomic
from slac.train.user import CUSTOM, UserModel, as_dataset

__all__ = [
    "StopFlag",
    "TrainModule",
    "Trainer",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_official",
    "fit",
    "install_stop_handlers",
    "lr_factor",
    "train_one_epoch",
    "train_step",
]


def install_stop_handlers(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Install ``handler`` for SIGTERM and SIGINT; returns the previous handlers (to put back with
    ``signal.signal``). Outside the main thread signals are left alone and nothing is returned."""
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave signals alone
            break
    return previous


class StopFlag:
    """The handler of SIGTERM/SIGINT: the first signal is noted in ``signum`` (training stops at the next
    step with a checkpoint; a study at the end of what it is doing), a second raises ``KeyboardInterrupt``
    at once, or at the end of a ``deferred()`` block (a git commit, a copy of records) so that it leaves
    no lock or half-written file behind. One flag can be handed from a caller to a ``Trainer``
    (``trainer.stop = flag``) so that a signal caught before ``fit`` is not lost."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self.log = log
        self._deferring = 0
        self._pending = False

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if self._deferring:
                self._pending = True
                self._say(f"\n{name} again: stopping once the records being written are complete")
                return
            raise KeyboardInterrupt
        self.signum = signum
        self._say(f"\n{name}: stopping at the next safe point (a checkpoint is written if training); "
                  "a second signal stops at once")  # fmt: skip

    def _say(self, message: str) -> None:
        if self.log is not None:
            # RuntimeError: the signal came inside a print to the same stream ("reentrant call").
            with suppress(RuntimeError):
                self.log(message)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block a second signal does not cut short: it stops at the block's end."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._pending:
                self._pending = False
                raise KeyboardInterrupt


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint of the exact position was written first."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; checkpoint: {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


def _with_user_parts(
    config: TrainConfig, model: Any, head: Any, train_data: Any, test_data: Any
) -> TrainConfig:
    """``config`` marked for a model and data passed from Python, and checked against what was passed."""
    import dataclasses

    if (train_data is None) != (test_data is None):
        raise ConfigError("give both train_data and test_data (the test split is scored after each epoch)")
    if head is not None and model is None:
        raise ConfigError("head: a head of one's own goes with a model of one's own (model=...)")
    changes = {}
    if model is not None:
        changes["model"] = CUSTOM
    elif config.model == CUSTOM:
        raise ConfigError(
            "model: custom: this run trains a model passed from Python; pass it again (Trainer(model=...))"
        )
    if train_data is not None:
        changes["dataset"] = CUSTOM
    elif config.dataset == CUSTOM:
        raise ConfigError(
            "dataset: custom: this run trains on data passed from Python; pass it again "
            "(Trainer(train_data=..., test_data=...))"
        )
    return dataclasses.replace(config, **changes) if changes else config


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    raise ConfigError(f"schedule: unknown schedule {schedule!r}")


def build_model(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The recipe's model for images of ``image_shape`` (C, H, W) and ``num_classes`` classes."""
    cfg = model_cfg(config.model)
    options = dict(config.model_options)
    options.setdefault("in_chans", image_shape[0])
    options.setdefault("adder_backend", config.adder_backend)
    if cfg.fixed_input_size:
        options.setdefault("img_size", image_shape[1])
        if options["img_size"] != image_shape[1] or image_shape[1] != image_shape[2]:
            raise ConfigError(
                f"model_options.img_size: {config.model} flattens its last feature map, so it needs "
                f"img_size {image_shape[1]} for {config.dataset}'s {image_shape[1]}x{image_shape[2]} "
                f"images, got {options['img_size']}"
            )
    if options["in_chans"] != image_shape[0]:
        raise ConfigError(
            f"model_options.in_chans: {config.dataset} has {image_shape[0]} channels, "
            f"got {options['in_chans']}"
        )
    try:
        return create_model(
            config.model,
            form=config.form,
            num_classes=num_classes,
            head=config.head,
            head_options=config.head_options,
            **options,
        )
    except (TypeError, ValueError) as error:  # an unknown keyword or an invalid value in the options
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"model_options/head_options: {error}") from None


def _run_dir_of(resume: str | Path) -> Path:
    """The run directory a resumed run continues: the one given, or the one holding the checkpoint."""
    path = Path(resume).expanduser()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


class TrainModule(nn.Module):
    """One forward of the training step as a module, so that DDP sees the whole computation:
    ``(images, targets) -> (logits, loss total, loss parts)``; ``images -> logits`` for evaluation."""

    def __init__(self, model: nn.Module, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.features: Callable[[Tensor], Tensor] = (
            torch.compile(model.forward_features) if compile else model.forward_features
        )

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Any:
        features = self.features(images)  # (B, d)
        logits = self.model.forward_head(features, targets)  # (B, K)
        if targets is None:
            return logits
        loss = self.model.loss(features, logits, targets)
        return logits, loss.total, loss.parts


def _autocast(device: torch.device, amp: str) -> Any:
    if amp == "off":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class _Meters:
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


def _amp_forward(device: torch.device, amp: str) -> Callable[[nn.Module, Tensor], Any]:
    """``forward(model, images)`` under the recipe's autocast: how BatchNorm recalibration runs a model."""

    def forward(model: nn.Module, images: Tensor) -> Any:
        with _autocast(device, amp):
            return model(images)

    return forward


def train_step(
    module: nn.Module,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    eta: float | None = 0.2,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One training step of the paper's recipe: forward through ``module`` (a ``TrainModule``, or DDP
    around one: (images, labels) -> logits, loss, loss parts), backward, AdderNet's adaptive gradient scaling
    of ``model``'s adder layers (``eta``; None: off) on the synchronised gradient, the optimizer step (through
    ``scaler`` under fp16). Returns the logits, the total loss and its parts."""
    with _autocast(images.device, amp):
        logits, total, parts = module(images, labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    if eta is not None:
        scale_adder_grads(model, eta=eta)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return logits, total, parts


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    *,
    eta: float | None = 0.2,
    scheduler: Any = None,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` ((images, labels) batches on the model's device) with ``train_step``, for a
    training loop of one's own (timm-style); ``model`` follows slac's contract (``slac.models`` or
    ``slac.train.UserModel``). ``scheduler.step()`` runs after every step when given. Returns the mean loss
    and its parts, top-1/top-5 (%) on the logits the loss saw, and the image count."""
    module = TrainModule(model)
    model.train()
    meters = _Meters(next(model.parameters()).device)
    for images, labels in loader:
        logits, total, parts = train_step(module, model, images, labels, optimizer, eta, amp, scaler)
        if scheduler is not None:
            scheduler.step()
        meters.record_step(logits, total, parts, labels)
    if not meters.sums:
        raise ValueError("train_one_epoch: the loader yielded no batches")
    return _Meters.means(meters.sums)


def fit(
    model: nn.Module,
    train: Any,
    test: Any,
    *,
    head: Any = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    **recipe: Any,
) -> dict[str, Any]:
    """Train a model of one's own on data of one's own with the paper's recipe (``TrainConfig``'s keys as
    keyword arguments: epochs, lr, batch_size, eta, out_dir, name, ...), with everything ``slac train`` does:
    checkpoints, metrics.csv, summary.json, BatchNorm recalibration, exact resume (``Trainer(resume=run_dir,
    model=..., train_data=..., test_data=...)``). ``train``/``test``: ``(images, labels)`` tensors, an
    ``ArrayDataset`` or a map-style Dataset. Returns the summary.

        model = slac.convert_to_adder(my_cnn)
        summary = fit(model, (x_train, y_train), (x_test, y_test), epochs=5, name="mine")
    """
    recipe.setdefault("name", "custom")
    config = config_from_dict(
        {**TrainConfig().to_dict(), "model": CUSTOM, "dataset": CUSTOM, **recipe}, "fit()"
    )
    trainer = Trainer(
        config, overwrite=overwrite, log=log, model=model, head=head, train_data=train, test_data=test
    )
    return trainer.fit()


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
        with _autocast(device, amp):
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


class Trainer:
    """A training run of ``config``; ``resume`` continues the run in a run directory or checkpoint.

    ``fit()`` trains to the last epoch and returns the summary (also written to summary.json).
    Raises ``TrainingInterrupted`` after writing a checkpoint when SIGTERM/SIGINT arrives.

    A model and data of one's own (``slac.train.user``): ``model`` (an nn.Module, images -> logits; with
    ``head``, a slac head, images -> the head's features) replaces the recipe's registry model, and
    ``train_data``/``test_data`` (``(images, labels)`` tensors, an ``ArrayDataset`` or a map-style Dataset)
    its dataset; the recipe then records ``model: custom`` / ``dataset: custom``. To resume such a run, pass
    the same model (freshly built) and data again with ``resume``.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        resume: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        overwrite: bool = False,
        log: Callable[[str], None] = print,
        *,
        model: nn.Module | None = None,
        head: Any = None,
        train_data: Any = None,
        test_data: Any = None,
    ) -> None:
        self.state: dict[str, Any] | None = None
        if resume is not None:
            self.state = load_checkpoint(resume)
            config = self._resumed_config(self.state["config"], overrides or {}, config)
        elif config is None:
            config = TrainConfig()
        config = _with_user_parts(config, model, head, train_data, test_data)
        splits = None  # checked before anything is written
        if train_data is not None:
            splits = (as_dataset(train_data, "train_data"), as_dataset(test_data, "test_data"))
        self.config = config
        self.distributed, self.device = init_distributed(config.device)
        self.log = log if self.distributed.is_main else (lambda message: None)
        self.run_dir = _run_dir_of(resume) if resume is not None else config.run_dir
        if self.distributed.is_main:
            self._prepare_run_dir(resume is not None, overwrite)
        self._seed(config.seed)
        self.data: DataBundle = build_data(config, self.distributed, self.device, self.log, splits)
        if model is not None:
            self.model: nn.Module = UserModel(model, head)
        else:
            self.model = build_model(config, self.data.image_shape, self.data.num_classes)
        self.model = self.model.to(self.device, getattr(torch, config.dtype))
        if config.sync_batchnorm and self.distributed.enabled:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.module: nn.Module = TrainModule(self.model, compile=config.compile)
        if self.distributed.enabled:
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = self._build_optimizer()
        self.steps_per_epoch = len(self.data.train)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best = {"test_top1": -1.0, "epoch": 0}
        self.meters = _Meters(self.device)
        self.stop = StopFlag(self.log)
        if self.state is not None:
            self._restore(self.state)

    # ----------------------------------------------------------------------------------------- setup

    @staticmethod
    def _resumed_config(
        saved: dict[str, Any], overrides: dict[str, Any], given: TrainConfig | None
    ) -> TrainConfig:
        if given is not None:
            raise ConfigError(
                "--resume takes the recipe saved in the checkpoint; do not pass --config with it"
            )
        changed = sorted(set(overrides) - RESUME_OVERRIDABLE)
        if changed:
            raise ConfigError(
                f"--resume: {', '.join(changed)} cannot change in a resumed run (it would not be the same "
                f"run); only {', '.join(sorted(RESUME_OVERRIDABLE))} can. Start a new run with --name instead"
            )
        return saved_config({**saved, **overrides}, "checkpoint config")

    def _prepare_run_dir(self, resuming: bool, overwrite: bool) -> None:
        if not resuming and self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"run directory {self.run_dir} already holds a run; continue it with "
                    f"`slac train --resume {self.run_dir}`, choose another --name, or pass --overwrite"
                )
            shutil.rmtree(self.run_dir)
        if resuming:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.run_dir / "summary.json").unlink(missing_ok=True)  # written again when the run ends
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")

    def _seed(self, seed: int) -> None:
        import random

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

    def _build_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        head = self.model.head
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        backbone = [p for p in self.model.parameters() if id(p) not in head_ids and p.requires_grad]
        groups = [{"name": "backbone", "params": backbone, "lr": config.lr}]
        if head is not None:
            groups += head_param_groups(head, config.lr, config.covariance_lr_factor)
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )

    def _lr_factor(self, step: int) -> float:
        total = self.config.epochs * self.steps_per_epoch
        warmup = round(self.config.warmup_epochs * self.steps_per_epoch)
        return lr_factor(step, total, warmup, self.config.schedule)

    # ------------------------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self, meters: dict[str, Any]) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "loader": self.data.train.state_dict(),
            "rng": get_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "meters": meters,
            "history": self.history,
            "best": dict(self.best),
            "complete": self.epoch >= self.config.epochs,
            "world_size": self.distributed.world_size,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.data.train.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        mid_epoch = state["loader"].get("batch", 0) > 0
        if self.config.epochs < self.epoch or (mid_epoch and self.config.epochs <= self.epoch):
            raise ConfigError(
                f"epochs: the run has completed {self.epoch} epochs"
                + (" and is inside the next one" if mid_epoch else "")
                + f"; --epochs {self.config.epochs} would end it before where it stands"
            )
        self.meters.load_state_dict(state["meters"])
        if not self.distributed.is_main:  # the saved sums are over all processes: count them once
            self.meters.sums = {name: torch.zeros_like(value) for name, value in self.meters.sums.items()}
        self.history = list(state["history"])
        self.best = dict(state["best"])
        position = state["loader"].get("batch", 0)
        self.log(
            f"resumed {self.run_dir} at epoch {self.epoch}"
            + (f", batch {position}/{self.steps_per_epoch}" if position else "")
            + f" (step {self.step})"
        )

    def save(self, best: bool = False) -> Path | None:
        """Write checkpoints/last.pt (and best.pt) from rank 0; returns last.pt's path. Every process
        must call it: the running sums of an epoch in progress are summed over processes first."""
        meters = self.meters.state_dict(self.distributed)
        if not self.distributed.is_main:
            return None
        state = self._checkpoint_state(meters)
        path = save_checkpoint(state, self.run_dir / "checkpoints" / "last.pt")
        if best:
            save_checkpoint(state, self.run_dir / "checkpoints" / "best.pt")
        return path

    # ------------------------------------------------------------------------------------- signals

    def _should_stop(self) -> bool:
        flag = float(self.stop.signum or 0)
        if self.distributed.enabled:  # every process stops at the same step, or the others would hang
            flag = self.distributed.all_reduce_sum(torch.tensor([flag], device=self.device)).item()
        return flag > 0

    # ---------------------------------------------------------------------------------------- training

    def _train_step(self, images: Tensor, labels: Tensor) -> None:
        logits, total, parts = train_step(
            self.module,
            self.model,
            images,
            labels,
            self.optimizer,
            self.config.eta,
            self.config.amp,
            self.scaler,
        )
        self.scheduler.step()
        self.step += 1
        self.meters.record_step(logits, total, parts, labels)

    def _train_epoch(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        loader = self.data.train
        start_batch = loader.state_dict().get("batch", 0)
        if start_batch == 0:
            self.meters = _Meters(self.device)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=start_batch,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="batch",
            disable=not (self.config.progress and self.distributed.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        self.module.train()
        started = time.perf_counter()
        images_since = 0
        done = start_batch  # batches of this epoch trained (tqdm's counter stays 0 when it is disabled)
        for images, labels in loader:
            self._train_step(images, labels)
            done += 1
            images_since += labels.numel() * self.distributed.world_size
            bar.update(1)
            if done % 10 == 0 or done == self.steps_per_epoch:
                sums = {k: float(v) for k, v in self.meters.sums.items()}
                rate = images_since / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(
                    loss=f"{sums['loss'] / sums['count']:.4f}",
                    top1=f"{100 * sums['top1'] / sums['count']:.1f}%",
                    img_s=f"{rate:.0f}",
                )
            # On the epoch's last batch the stop waits until the epoch is evaluated and saved (fit()).
            if done < self.steps_per_epoch and self._should_stop():
                self.meters.seconds += time.perf_counter() - started
                bar.close()
                raise TrainingInterrupted(int(self.stop.signum or signal.SIGTERM), self.save())
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.meters.seconds += time.perf_counter() - started
        means = _Meters.means(self.meters.summed(self.distributed))
        count = means.pop("count")
        metrics = {f"train_{name}": value for name, value in means.items()}
        metrics["epoch_seconds"] = self.meters.seconds
        metrics["train_images_per_s"] = count / max(self.meters.seconds, 1e-9)
        if not math.isfinite(metrics["train_loss"]):
            last = self.run_dir / "checkpoints" / "last.pt"
            where = (
                f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            )
            raise DivergenceError(
                f"the training loss became {metrics['train_loss']} in epoch {self.epoch + 1}; {where}. "
                "Lower lr, or check the recipe."
            )
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs``; returns the summary (written to summary.json by rank 0)."""
        config = self.config
        writer = (
            MetricsWriter(self.run_dir, config.tensorboard, self.epoch) if self.distributed.is_main else None
        )
        previous = install_stop_handlers(self.stop)
        if self.epoch == 0 and self.step == 0:
            self.log(self._describe())
        try:
            while self.epoch < config.epochs:
                lr = config.lr * self._lr_factor(self.epoch * self.steps_per_epoch)  # at the epoch's start
                row: dict[str, Any] = {"epoch": self.epoch + 1, "lr": lr}
                row.update(self._train_epoch())
                self.epoch += 1
                if self.epoch % config.eval_every == 0 or self.epoch == config.epochs:
                    started = time.perf_counter()
                    row.update(self._evaluate())
                    row["eval_seconds"] = time.perf_counter() - started  # recalibration and both tests
                is_best = row.get("test_top1", -1.0) > self.best["test_top1"]
                if is_best:
                    self.best = {"test_top1": row["test_top1"], "epoch": self.epoch}
                self.history.append(row)
                self.meters = _Meters(self.device)
                path = self.save(best=is_best)
                if writer is not None:
                    writer.write(self.history)
                self.log(self._epoch_line(row))
                if self.epoch < config.epochs and self._should_stop():
                    raise TrainingInterrupted(int(self.stop.signum or signal.SIGTERM), path)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if writer is not None:
                writer.close()
        return self._finish()

    def _evaluate(self) -> dict[str, float]:
        """The test columns of an epoch: the headline (``eval_bn``) as test_top1/top5/loss and, when
        recalibration is on, both figures as test_*_running and test_*_recalibrated, and its cost. Nothing
        is drawn from the global random generators (a streaming loader draws its workers' base seed), so
        that training goes on the same with recalibration on or off."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return self._evaluate_both()

    def _evaluate_both(self) -> dict[str, float]:
        config = self.config
        results = {
            "running": evaluate(self.module, self.data.test, self.device, config.amp, self.distributed)
        }
        row: dict[str, float] = {}
        if self.data.recalibration is not None:
            started = time.perf_counter()
            forward = _amp_forward(self.device, config.amp)
            with recalibrated_batchnorm(
                self.model, self.data.recalibration(), config.bn_recalibration, forward
            ):
                row["bn_recalibration_seconds"] = time.perf_counter() - started
                results["recalibrated"] = evaluate(
                    self.module, self.data.test, self.device, config.amp, self.distributed
                )
        headline = results[config.eval_bn]
        row = {
            "test_loss": headline["loss"],
            "test_top1": headline["top1"],
            "test_top5": headline["top5"],
        } | row
        if len(results) > 1:
            for name, result in results.items():
                row.update({f"test_{key}_{name}": result[key] for key in ("top1", "top5", "loss")})
        return row

    # ------------------------------------------------------------------------------------------ output

    def _describe(self) -> str:
        config = self.config
        parameters = sum(p.numel() for p in self.model.parameters())
        where = f"{self.device}" + (
            f" x {self.distributed.world_size} processes" if self.distributed.enabled else ""
        )
        return (
            f"training {config.model} ({config.form}, head {config.head}, {parameters:,} parameters) on "
            f"{config.dataset} ({self.data.train_size} train / {self.data.test_size} test images, "
            f"{self.data.num_classes} classes) for {config.epochs} epochs of {self.steps_per_epoch} steps, "
            f"batch {config.batch_size}, on {where}\nrun directory: {self.run_dir}"
        )

    def _epoch_line(self, row: dict[str, Any]) -> str:
        parts = ", ".join(
            f"{key[len('train_loss_') :]} {value:.4g}"
            for key, value in row.items()
            if key.startswith("train_loss_")
        )
        line = (
            f"epoch {row['epoch']:>4}/{self.config.epochs}  lr {row['lr']:.4g}  loss {row['train_loss']:.4f}"
            + (f" ({parts})" if parts else "")
            + f"  train top1 {row['train_top1']:.2f}%"
        )
        if "test_top1" in row:
            line += f"  test top1 {row['test_top1']:.2f}% top5 {row['test_top5']:.2f}%"
            other = other_bn(self.config.eval_bn)
            if f"test_top1_{other}" in row:
                line += f" ({other} BN statistics: {row[f'test_top1_{other}']:.2f}%)"
        return line + f"  {row['train_images_per_s']:.0f} img/s  {row['epoch_seconds']:.1f} s"

    def _finish(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        seconds = sum(row["epoch_seconds"] for row in self.history)
        summary = {
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
            "epochs": self.epoch,
            "steps": self.step,
            "final_test_top1": last.get("test_top1"),
            "final_test_top5": last.get("test_top5"),
            "final_train_top1": last.get("train_top1"),
            "eval_bn": self.config.eval_bn,  # the statistics of the headline test figures
            "final_test_top1_running": last.get("test_top1_running", last.get("test_top1")),
            "final_test_top1_recalibrated": last.get("test_top1_recalibrated"),
            "best_test_top1": self.best["test_top1"] if self.best["epoch"] else None,
            "best_epoch": self.best["epoch"] or None,
            "train_seconds": seconds,
            "train_images_per_s": self.data.train_size * len(self.history) / max(seconds, 1e-9),
            "device": str(self.device),
            "world_size": self.distributed.world_size,
            "checkpoints": {
                "last": str(self.run_dir / "checkpoints" / "last.pt"),
                "best": str(self.run_dir / "checkpoints" / "best.pt"),
            },
        }
        if self.distributed.is_main:
            write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


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
    config = saved_config({**state["config"], **overrides}, "checkpoint config")
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
        with recalibrated_batchnorm(
            model, batches, config.bn_recalibration, _amp_forward(device, config.amp)
        ):
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

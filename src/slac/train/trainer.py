"""A training run: ``Trainer`` builds and checks everything a run needs, ``fit()`` trains it and writes its
run directory. ``fit`` is the same for a model and data of one's own.

    slac train                                         # LeNet ANN + SLAC on the embedded digits
    slac train --config configs/table1/resnet20_cifar10_slac_ann.yaml --data_root ~/data/cifar
    slac train --resume runs/lenet_ann_slac_digits_seed0
    torchrun --nproc_per_node=4 -m slac.cli train --config ...

    summary = Trainer(load_config("configs/digits/lenet_ann_slac.yaml", ["--epochs", "5"])).fit()
    summary = fit(my_model, (x_train, y_train), (x_test, y_test), epochs=5)

Building a ``Trainer`` writes nothing: it resolves the recipe, loads the data, builds the model and checks
them against each other (``slac.train.preflight``), checks the run directory (``slac.train.run_dir``) and,
for a resumed run, the checkpoint against the recipe, the data and the model. ``fit()`` then writes.

An epoch: the steps of ``slac.train.step`` over the training loader, the learning rate following the
schedule per step (``slac.train.schedule``), then the test split scored (``slac.train.evaluate``) with the
headline on recalibrated or running BatchNorm statistics (``eval_bn``), a checkpoint, metrics.csv.

Reported accuracies: ``test_top1``/``test_top5`` on the whole test split after the epoch (the metric of
the paper's tables; ``best`` is the highest of them, an optimistic figure since there is no separate
validation split, so reports use the final epoch). Training accuracy is measured on the logits the
loss saw: for margin heads (L-Softmax, LGM, MoM) those include the margin, a lower bound.

Resuming: a checkpoint holds everything the next step depends on (weights, optimizer momentum,
schedule position, loader position and generator, global RNG states, the running sums of the epoch in
progress), so ``--resume`` ends with the same weights as an uninterrupted run on the CPU (tested with a
real SIGKILL). On CUDA, bit-identity needs ``deterministic: true``. The checkpoint also holds a fingerprint
of the data (``slac.train.fingerprint``): a resumed run refuses other data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slac.errors import CheckpointError, ConfigError, DivergenceError, MissingDependencyError
from slac.heads import Head
from slac.nn import recalibrated_batchnorm
from slac.ops.backends import resolve_backend
from slac.train.checkpoint import get_rng_state, isolated_rng, load_checkpoint, save_checkpoint, set_rng_state
from slac.train.config import (
    CUSTOM,
    RESUME_OVERRIDABLE,
    TrainConfig,
    config_from_dict,
    load_config,
    other_bn,
    saved_config,
)
from slac.train.data import DataBundle, as_dataset, build_data
from slac.train.distributed import convert_sync_batchnorm, init_distributed
from slac.train.evaluate import evaluate
from slac.train.fingerprint import compare_fingerprints, data_fingerprint
from slac.train.meters import EpochMeters
from slac.train.model import build_model, describe_user_model
from slac.train.preflight import check_model_against_data
from slac.train.records import MetricsWriter, write_json_atomic
from slac.train.run_dir import RunDirectory
from slac.train.schedule import build_optimizer, lr_factor
from slac.train.signals import StopFlag, TrainingInterrupted, install_stop_handlers, restore_handlers
from slac.train.step import TrainModule, amp_forward, train_step

__all__ = ["Trainer", "fit"]

_DEFAULTS = TrainConfig().to_dict()


def _set_keys(config: TrainConfig) -> set[str]:
    """The recipe keys whose values differ from ``TrainConfig``'s defaults: those a caller set."""
    return {key for key, value in config.to_dict().items() if value != _DEFAULTS[key]}


def _run_dir_of(resume: str | Path) -> tuple[Path, Path | None]:
    """The run directory a resumed run continues and the checkpoint named in it: (the directory given,
    None), or (the directory holding the checkpoint file given, that file)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        return path, None
    if not path.exists():
        beside = Path(TrainConfig.out_dir) / path
        hint = f"; did you mean {beside}?" if beside.exists() else ""
        raise CheckpointError(
            f"--resume: {path} does not exist (give a run directory or a checkpoint in it){hint}"
        )
    if path.parent.name != "checkpoints":
        raise CheckpointError(
            f"--resume: {path} is a file outside a run's checkpoints/ folder; give a run directory or one of "
            "its checkpoints (RUN/checkpoints/last.pt)"
        )
    return path.parent.parent, path


def _seed(config: TrainConfig) -> None:
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """A training run of ``config`` (None: the default job, or with ``model`` the library's defaults,
    ``TrainConfig()``); ``resume`` continues the run in a run directory
    or checkpoint (``overrides``: the keys a resumed run may change, ``RESUME_OVERRIDABLE``). ``overwrite``
    replaces a run already in the run directory, once the new run has written its first checkpoint.

    ``fit()`` trains to the last epoch and returns the summary (also written to summary.json).
    Raises ``TrainingInterrupted`` after writing a checkpoint when SIGTERM/SIGINT arrives.

    A model and data of one's own (``slac.train.model``, ``slac.train.data``): ``model`` (any nn.Module,
    images -> logits; with ``head``, images -> the head's features) replaces the recipe's zoo model, and
    ``train_data``/``test_data`` (``(images, labels)`` tensors, an ``ArrayDataset`` or a map-style Dataset)
    its dataset. ``head`` is a registered head's name (built on the model's features, ``head_options``
    from the recipe) or a ``slac.heads.Head``. The run records what it trained: ``model: custom``, the form
    read from the model, the head's name (``custom`` for the model's own classifier), ``dataset: custom``.
    To resume such a run, pass the same model (freshly built), head and data again with ``resume``.
    Recipe keys that cannot apply to such a model are refused when set: ``set_keys`` names the keys the
    caller set (``fit`` passes its keywords); those whose value differs from ``TrainConfig``'s default count
    as set in any case.
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
        head: str | Head | None = None,
        train_data: Any = None,
        test_data: Any = None,
        set_keys: Collection[str] | None = None,
    ) -> None:
        self.state: dict[str, Any] | None = None
        early_log = log if int(os.environ.get("RANK", "0")) == 0 else (lambda message: None)
        if resume is not None:
            if config is not None:
                raise ConfigError(
                    "resume takes the recipe saved in the checkpoint; do not pass a config with it"
                )
            if overwrite:
                raise ConfigError(
                    "resume continues a run; overwrite starts a new one in its place: choose one"
                )
            run_dir, checkpoint = _run_dir_of(resume)
            self.run = RunDirectory(run_dir, early_log)
            self.run.check_resume(checkpoint)
            self.state = load_checkpoint(resume)
            if checkpoint is not None:
                self.run.check_checkpoint_is_latest(self.state, checkpoint)
            config = self._resumed_config(self.state["config"], dict(overrides or {}), early_log)
        else:
            if config is None:  # the default job, or the library's defaults for a model of one's own
                config = load_config(None) if model is None else TrainConfig()
            if overrides:
                config = config_from_dict({**config.to_dict(), **overrides}, "overrides")
        # A resumed run's recipe was recorded, not set: what it says of the model is checked against the
        # model once it is described (_check_recorded_model).
        set_keys = set() if resume is not None else _set_keys(config) | set(set_keys or ())
        config = self._check_parts(config, model, head, train_data, test_data, resume is not None)
        splits = None
        if train_data is not None:
            splits = (as_dataset(train_data, "train_data"), as_dataset(test_data, "test_data"))
            config = dataclasses.replace(config, augment=config.augment and _augmentable(splits[0]))
        if resume is None and model is None:  # the run directory is known: check it before loading data
            self.run = RunDirectory(config.run_dir, early_log)
            self.run.check_new(overwrite)
        if config.tensorboard == "on":
            MetricsWriter.check_available()

        self.distributed, self.device = init_distributed(config.device)
        self.log = log if self.distributed.is_main else (lambda message: None)
        if config.adder_backend != "auto":  # e.g. triton on a CPU: said now, in the recipe's terms
            try:
                resolve_backend(config.adder_backend, self.device)
            except (ConfigError, MissingDependencyError) as error:
                raise type(error)(f"adder_backend: {error}") from None
        _seed(config)
        self.data: DataBundle = build_data(config, self.distributed, self.device, self.log, splits)
        if model is not None:
            recorded = config
            self.model, config = describe_user_model(
                config, model, head, self.data.image_shape, self.data.num_classes, set_keys
            )
            if resume is None:
                self.run = RunDirectory(config.run_dir, early_log)
                self.run.check_new(overwrite)
            else:
                self._check_recorded_model(recorded, config)
        else:
            self.model = build_model(config, self.data.image_shape, self.data.num_classes)
        self.config = config
        self.run_dir = self.run.path
        self.model = self.model.to(self.device, getattr(torch, config.dtype))
        check_model_against_data(self.model, self.data, config)
        with isolated_rng():  # a Dataset's transform may draw random numbers while its labels are read
            self.fingerprint = data_fingerprint(
                *self.data.splits, self.data.num_classes, self.data.image_shape
            )
        if config.sync_batchnorm and self.distributed.enabled:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.module: nn.Module = TrainModule(self.model, compile=config.compile)
        if self.distributed.enabled:
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = build_optimizer(self.model, config)
        self.steps_per_epoch = len(self.data.train)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.amp == "fp16" else None
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.best = {"test_top1": -1.0, "epoch": 0}
        self.meters = EpochMeters(self.device)
        self.stop = StopFlag(self.log)
        if self.state is not None:
            self._restore(self.state)

    # ----------------------------------------------------------------------------------------- setup

    def _resumed_config(
        self, saved: dict[str, Any], overrides: dict[str, Any], log: Callable[[str], None]
    ) -> TrainConfig:
        """The checkpoint's recipe, with the keys a resumed run may change taken from config.yaml's edits
        and then from ``overrides``; its location follows the directory it is resumed from."""
        changed = sorted(set(overrides) - RESUME_OVERRIDABLE)
        if changed:
            raise ConfigError(
                f"--resume: {', '.join(changed)} cannot change in a resumed run (it would not be the same "
                f"run); only {', '.join(sorted(RESUME_OVERRIDABLE))} can. Start a new run with --name instead"
            )
        edits = self.run.recipe_edits(saved)
        for key, value in edits.items():
            if key not in overrides:
                log(f"note: {self.run.path / 'config.yaml'} sets {key}: {value!r} (the checkpoint's: "
                    f"{saved.get(key)!r}); the resumed run takes it")  # fmt: skip
        resumed = config_from_dict(
            {**saved_config(saved, "checkpoint config").to_dict(), **edits, **overrides}, "--resume"
        )
        if resumed.run_dir.resolve() != self.run.path.resolve():  # the directory was moved or renamed
            resumed = dataclasses.replace(resumed, out_dir=str(self.run.path.parent), name=self.run.path.name)
        return resumed

    def _check_recorded_model(self, recorded: TrainConfig, described: TrainConfig) -> None:
        """A resumed model of one's own is what the checkpoint trained: form, head and head options as
        recorded. Checkpoints written before the records were read from the model (they have no data
        fingerprint) recorded the defaults of the time: what is read from the model now is taken."""
        keys = ("form", "head", "head_options")
        differ = [key for key in keys if getattr(recorded, key) != getattr(described, key)]
        if not differ:
            return
        said = "; ".join(f"{key} {getattr(recorded, key)!r}, the model passed: {getattr(described, key)!r}"
                         for key in differ)  # fmt: skip
        if self.state is not None and "data" not in self.state:
            self.log(f"note: the checkpoint predates records read from the model ({said}); recorded as read")
            return
        raise ConfigError(
            f"{self.run.path}: the run trained {said}. Resume with the model and head it trained "
            "(as passed when it started)"
        )

    @staticmethod
    def _check_parts(
        config: TrainConfig, model: Any, head: Any, train_data: Any, test_data: Any, resuming: bool
    ) -> TrainConfig:
        """``config`` checked against the parts passed from Python, its dataset marked custom for data."""
        if (train_data is None) != (test_data is None):
            raise ConfigError(
                "give both train_data and test_data (the test split is scored after each epoch)"
            )
        if head is not None and model is None:
            raise ConfigError("head: a head of one's own goes with a model of one's own (model=...)")
        if model is None and config.model == CUSTOM:
            raise ConfigError(
                "model: custom: this run trains a model passed from Python; pass it again "
                "(Trainer(model=..., head=...))"
            )
        if resuming and model is not None and config.model != CUSTOM:
            raise ConfigError(
                f"model: this run trains the zoo's {config.model!r} from its recipe; resume it without model="
            )
        if train_data is None:
            if config.dataset == CUSTOM:
                raise ConfigError(
                    "dataset: custom: this run trains on data passed from Python; pass it again "
                    "(Trainer(train_data=..., test_data=...))"
                )
            return config
        if resuming and config.dataset != CUSTOM:
            raise ConfigError(
                f"dataset: this run trains on {config.dataset} from its recipe; resume it without train_data="
            )
        if config.dataset not in (CUSTOM, _DEFAULTS["dataset"]):
            raise ConfigError(
                f"dataset: the recipe names {config.dataset!r}, but the data passed from Python replaces it; "
                "leave dataset out of the recipe"
            )
        return dataclasses.replace(config, dataset=CUSTOM)

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
            "data": self.fingerprint,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        saved = state.get("data")
        if saved is None:
            self.log("note: the checkpoint predates data fingerprints; the data cannot be checked against it")
        else:
            differences = compare_fingerprints(saved, self.fingerprint)
            if differences:
                raise ConfigError(
                    f"{self.run_dir}: the data differs from the data the run trained on ("
                    + "; ".join(differences)
                    + "). Resume with the run's data (data_root, or the same tensors), or start a new run"
                )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(
                f"{self.run_dir}: the checkpoint's weights do not fit the model ("
                + " ".join(str(error).split())[:400]
                + "); resume with the model the run trained"
            ) from None
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
        self.run.first_checkpoint(self.config)
        return path

    # ------------------------------------------------------------------------------------- signals

    def _should_stop(self) -> bool:
        flag = float(self.stop.signum or 0)
        if self.distributed.enabled:  # every process stops at the same step, or the others would hang
            flag = self.distributed.all_reduce_sum(torch.tensor([flag], device=self.device)).item()
        return flag > 0

    # ---------------------------------------------------------------------------------------- training

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
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
            self.meters = EpochMeters(self.device)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=start_batch,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="batch",
            # None: only on a terminal; a log file or a pipe gets the epoch lines, not the bar's frames
            disable=None if self.config.progress and self.distributed.is_main else True,
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
            if not bar.disable and (done % 10 == 0 or done == self.steps_per_epoch):
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
        means = EpochMeters.means(self.meters.summed(self.distributed))
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
        writer = None
        previous = install_stop_handlers(self.stop)
        try:
            if self.distributed.is_main:
                self.run.start(config)
                writer = MetricsWriter(self.run_dir, config.tensorboard, self.epoch)
            if self.epoch == 0 and self.step == 0:
                self.log(self._describe())
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
                self.meters = EpochMeters(self.device)
                path = self.save(best=is_best)
                if writer is not None:
                    writer.write(self.history)
                self.log(self._epoch_line(row))
                if self.epoch < config.epochs and self._should_stop():
                    raise TrainingInterrupted(int(self.stop.signum or signal.SIGTERM), path)
        except BaseException:
            if self.distributed.is_main:
                if writer is not None:
                    writer.close()
                    writer = None
                self.run.abandon()  # before the first checkpoint: the run it replaced comes back
            raise
        finally:
            restore_handlers(previous)
            if writer is not None:
                writer.close()
        summary = self._finish()
        if self.distributed.is_main:
            self.run.finish()
        return summary

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
            forward = amp_forward(self.device, config.amp)
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
        if config.model == CUSTOM:
            module = getattr(self.model, "module", self.model)
            what = f"a model of one's own ({type(module).__name__}, {config.form}"
        else:
            what = f"{config.model} ({config.form}"
        head = "its own classifier" if config.head == CUSTOM else f"head {config.head}"
        data = "data passed from Python" if config.dataset == CUSTOM else config.dataset
        return (
            f"training {what}, {head}, {parameters:,} parameters) on {data} ({self.data.train_size} train / "
            f"{self.data.test_size} test images, {self.data.num_classes} classes) for {config.epochs} epochs "
            f"of {self.steps_per_epoch} steps, batch {config.batch_size}, on {where}\n"
            f"run directory: {self.run_dir}"
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
            "data": self.fingerprint,
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
            "checkpoints": {"last": "checkpoints/last.pt", "best": "checkpoints/best.pt"},  # in run_dir
        }
        if self.distributed.is_main:
            write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


def _augmentable(dataset: Any) -> bool:
    """Whether the loader can augment ``dataset``: an in-memory split with a crop padding or flips (the
    registry's splits; tensors passed from Python have neither, since slac cannot know what keeps a label)."""
    from slac.data import ArrayDataset

    return isinstance(dataset, ArrayDataset) and (dataset.padding > 0 or dataset.flip)


def fit(
    model: nn.Module,
    train_data: Any,
    test_data: Any,
    *,
    head: str | Head | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
    **recipe: Any,
) -> dict[str, Any]:
    """Train a model of one's own on data of one's own with the paper's recipe (``TrainConfig``'s keys as
    keyword arguments: epochs, lr, batch_size, eta, out_dir, name, ...), with everything ``slac train`` does:
    checkpoints, metrics.csv, summary.json, BatchNorm recalibration, exact resume (``Trainer(resume=run_dir,
    model=..., head=..., train_data=..., test_data=...)``). ``train_data``/``test_data``: ``(images,
    labels)`` tensors, an ``ArrayDataset`` or a map-style Dataset. ``head``: None (the model's own
    classifier), a registered head's name (built on the model's features, with ``head_options``) or a
    ``slac.heads.Head``. Returns the summary.

        model = slac.convert_to_adder(my_cnn)
        summary = fit(model, (x_train, y_train), (x_test, y_test), epochs=5, name="mine")
    """
    config = config_from_dict({**_DEFAULTS, "model": CUSTOM, "dataset": CUSTOM, **recipe}, "fit()")
    trainer = Trainer(config, overwrite=overwrite, log=log, model=model, head=head, train_data=train_data,
                      test_data=test_data, set_keys=recipe)  # fmt: skip
    return trainer.fit()

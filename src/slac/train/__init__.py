"""Training and evaluation: recipes, the training run, the step for a loop of one's own, checkpoints.

    from slac.train import Trainer, fit, load_config, train_one_epoch
    summary = Trainer(load_config("configs/digits/lenet_ann_slac.yaml", ["--epochs", "5"])).fit()
    summary = fit(my_model, (x_train, y_train), (x_test, y_test), epochs=5)   # one's own model and data
    metrics = train_one_epoch(model, loader, optimizer, eta=0.2)              # in a loop of one's own

The files, one concept each:

    config.py       recipes: TrainConfig, YAML with --key value overrides, validation
    trainer.py      Trainer (build and check; fit() trains and writes) and fit()
    step.py         the training step and train_one_epoch, autocast
    schedule.py     the optimizer's parameter groups and the learning-rate schedule
    model.py        the model a run trains: the zoo's (build_model) or one's own (UserModel), and its record
    data.py         the splits as loaders; data passed from Python (as_dataset)
    preflight.py    the model checked against the data before the first step
    fingerprint.py  what identifies a run's data (a resumed run refuses other data)
    run_dir.py      run directories: what a folder holds, replacing a run without losing it
    checkpoint.py   atomic checkpoints, weights_only loading, RNG states
    records.py      metrics.csv, TensorBoard, atomic JSON
    meters.py       the running sums of an epoch
    evaluate.py     evaluate, evaluate_checkpoint (slac eval), evaluate_official
    signals.py      SIGTERM/SIGINT: a checkpoint of the exact step, then stop
    distributed.py  torchrun: process group, device, BatchNorm synchronisation

The command line is ``slac train`` / ``slac eval`` (``slac.cli``), a thin layer over this package.
"""

from slac.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from slac.train.config import (
    DEFAULT_JOB,
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from slac.train.data import as_dataset
from slac.train.distributed import DistributedBatchNorm, convert_sync_batchnorm
from slac.train.evaluate import evaluate, evaluate_checkpoint, evaluate_official
from slac.train.model import UserModel, build_model
from slac.train.records import read_metrics
from slac.train.schedule import build_optimizer, lr_factor
from slac.train.signals import TrainingInterrupted
from slac.train.step import TrainModule, train_one_epoch, train_step
from slac.train.trainer import Trainer, fit

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_JOB",
    "CheckpointError",
    "ConfigError",
    "DistributedBatchNorm",
    "TrainConfig",
    "TrainModule",
    "Trainer",
    "TrainingInterrupted",
    "UserModel",
    "as_dataset",
    "build_model",
    "build_optimizer",
    "config_from_dict",
    "convert_sync_batchnorm",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_official",
    "fit",
    "load_checkpoint",
    "load_config",
    "lr_factor",
    "parse_overrides",
    "read_metrics",
    "save_checkpoint",
    "save_config",
    "train_one_epoch",
    "train_step",
]

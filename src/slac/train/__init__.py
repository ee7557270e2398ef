"""Training and evaluation: recipes (``TrainConfig``), the loop (``Trainer``), checkpoints, distributed.

    from slac.train import Trainer, load_config
    summary = Trainer(load_config("configs/digits/lenet_ann_slac.yaml", ["--epochs", "5"])).fit()
    summary = fit(my_model, (x_train, y_train), (x_test, y_test), epochs=5)   # one's own model and data
    metrics = train_one_epoch(model, loader, optimizer, eta=0.2)              # in a loop of one's own

The command line is ``slac train`` / ``slac eval`` (``slac.cli``), a thin layer over this package.
"""

from slac.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from slac.train.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from slac.train.distributed import DistributedBatchNorm, convert_sync_batchnorm
from slac.train.records import read_metrics
from slac.train.trainer import (
    Trainer,
    TrainingInterrupted,
    TrainModule,
    build_model,
    evaluate,
    evaluate_checkpoint,
    evaluate_official,
    fit,
    lr_factor,
    train_one_epoch,
    train_step,
)
from slac.train.user import UserModel

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ConfigError",
    "DistributedBatchNorm",
    "TrainConfig",
    "TrainModule",
    "Trainer",
    "TrainingInterrupted",
    "UserModel",
    "build_model",
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

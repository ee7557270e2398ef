"""Training recipes: a YAML file gives the defaults, ``--key value`` flags override them.

    config = load_config("configs/table1/resnet20_cifar10_slac_ann.yaml", ["--epochs", "10", "--seed=3"])
    config = load_config(None)                      # the default job: LeNet ANN + SLAC on the digits
    save_config(config, run_dir / "config.yaml")    # the resolved recipe, next to the run's outputs

``TrainConfig()`` holds the library's defaults, which agree with the rest of the API (``create_model``'s
head is ``linear``: a recipe names the head it trains). The default job (``slac train`` with no recipe,
``load_config(None)``, ``Trainer()``) is those defaults with the SLAC head (``DEFAULT_JOB``), the same run
as configs/digits/lenet_ann_slac.yaml.

A recipe is a flat mapping of the ``TrainConfig`` fields below; ``head_options`` and ``model_options``
are mappings passed to the head and the model. A recipe may name another with ``base: other.yaml``
(a path relative to the recipe); its keys are read first and the recipe's own keys replace them
(``head_options``/``model_options`` are merged key by key). Unknown keys are errors that name the
closest known key. Flag values are parsed as YAML (``--amp bf16``, ``--eta null``,
``--head_options '{angle_weight: 1.0}'``); a dotted flag sets one entry of a mapping
(``--head_options.angle_weight 1.0``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slac.errors import ConfigError

__all__ = [
    "DEFAULT_JOB",
    "RESUME_OVERRIDABLE",
    "ConfigError",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "other_bn",
    "parse_overrides",
    "save_config",
    "saved_config",
]

SCHEDULES = ("cosine", "constant", "step")
AMP_MODES = ("off", "bf16", "fp16")
DTYPES = ("float32", "float64")
TENSORBOARD_MODES = ("auto", "on", "off")
EVAL_BN = ("recalibrated", "running")


def other_bn(eval_bn: str) -> str:
    """The BatchNorm statistics logged beside the headline ``eval_bn``."""
    return "running" if eval_bn == "recalibrated" else "recalibrated"


# Keys a resumed run may change: they alter how the run executes, not what it computes
# (``epochs`` extends or shortens the schedule, as in Figure 4c's 400/800/1200-epoch runs).
RESUME_OVERRIDABLE = frozenset(
    {"device", "progress", "tensorboard", "workers", "eval_batch_size", "epochs", "compile", "data_root"}
)


# The main job: TrainConfig's defaults with the paper's classifier.
DEFAULT_JOB: dict[str, Any] = {"head": "slac"}

# config.model / config.dataset of a run whose model or data was passed from Python; config.head of a run
# whose logits come from such a model's own classifier.
CUSTOM = "custom"


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults: a LeNet ANN with a linear head on the digits (the
    default job, ``DEFAULT_JOB``, puts the SLAC head on it)."""

    # What to train.
    model: str = "lenet"  # slac.models.list_models()
    form: str = "ann"  # cnn | ann | bnn
    head: str = "linear"  # slac.heads.list_heads()
    head_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the head
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. feature_dim: 2, shortcut: identity
    # Data. img_size/in_chans/num_classes come from the dataset unless model_options sets them.
    dataset: str = "digits"  # slac.data.list_datasets()
    data_root: str | None = None  # None: the dataset's default location (digits: embedded, none)
    download: bool = False  # CIFAR only, with MD5 verification
    augment: bool = True  # random crop (dataset padding) and flip (where label-preserving)
    batch_size: int = 64  # global: split evenly over the processes (the paper's recipes: 256)
    eval_batch_size: int = 1024
    drop_last: bool = False  # drop the last, smaller training batch of each epoch
    train_subset: int | None = None  # train on the first N images of the training split only
    test_subset: int | None = None  # evaluate on the first N images of the test split only
    workers: int = 8  # loader worker processes, streaming datasets (ImageNet) only
    # Optimisation (paper Sec. 4.1: SGD 0.1, momentum 0.9, weight decay 5e-4, cosine, batch 256).
    epochs: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    covariance_lr_factor: float = 100.0  # head covariance lr = lr / factor (1e2 CIFAR, 1e3 ImageNet)
    eta: float | None = 0.2  # AdderNet adaptive learning-rate scaling of adder gradients; null: off
    schedule: str = "cosine"  # cosine (per step, to 0) | constant | step (x0.1 at 50% and 75%)
    warmup_epochs: float = 0.0  # linear warm-up from 0, counted in epochs (fractions allowed)
    # Execution.
    device: str = "auto"  # auto (cuda if visible, else cpu) | cpu | cuda | cuda:N
    amp: str = "off"  # off | bf16 | fp16 (autocast; adder layers always run in float32)
    dtype: str = "float32"  # float32 | float64 (parameters and inputs; float64 for numerical checks)
    compile: bool = False  # torch.compile the backbone
    adder_backend: str = "auto"  # slac.ops backend of the adder layers
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    sync_batchnorm: bool = False  # distributed runs: batch statistics over all processes
    # Outputs.
    out_dir: str = "runs"  # the run directory is out_dir/name
    name: str | None = None  # None: {model}_{form}_{head}_{dataset}_seed{seed}
    tensorboard: str = "auto"  # auto (if installed) | on | off (true/false also accepted)
    progress: bool = True  # a progress bar per epoch (rank 0)
    eval_every: int = 1  # evaluate on the test split every N epochs (and always after the last)
    # Evaluation with recalibrated BatchNorm statistics (slac.nn.recalibrate_batchnorm): before each test
    # evaluation, the running statistics are recomputed from this many training batches (no augmentation,
    # the same batches every time; more than an epoch means one epoch), the model is scored, and the
    # training-time statistics are put back, so that training is the same with it on or off. 0: off.
    bn_recalibration: int = 32
    # Which statistics the headline test accuracy (test_top1, best.pt, slac eval) uses: recalibrated (the
    # default job and the small recipes) or running (the paper's protocol, kept by its recipes); the other
    # figure is logged beside it whenever recalibration is on.
    eval_bn: str = "recalibrated"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.model}_{self.form}_{self.head}_{self.dataset}_seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir).expanduser() / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_MAPPINGS = ("head_options", "model_options")


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _check_type(key: str, value: Any) -> Any:
    """``value`` converted to the field's type (int -> float where a float is expected), or an error."""
    annotation = str(_FIELDS[key].type)
    optional = "None" in annotation
    if value is None:
        if not optional:
            _fail(key, "must not be null")
        return None
    if annotation.startswith("dict"):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            _fail(key, f"must be a mapping with string keys, got {value!r}")
        return dict(value)
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            _fail(key, f"must be true or false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"must be an integer, got {value!r}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                _fail(key, f"must be a number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(key, f"must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("str"):
        if not isinstance(value, str):
            _fail(key, f"must be a string, got {value!r}")
        return value
    raise AssertionError(f"unhandled field type {annotation}")  # pragma: no cover


def validate(config: TrainConfig) -> None:
    """Type and range checks of every field; names the field and what would be valid."""
    if isinstance(config.tensorboard, bool):  # YAML 1.1 reads on/off as booleans
        config.tensorboard = "on" if config.tensorboard else "off"
    for key in _FIELDS:
        setattr(config, key, _check_type(key, getattr(config, key)))
    from slac.data import list_datasets
    from slac.heads import list_heads
    from slac.models import list_models
    from slac.models.layers import FORMS
    from slac.ops.backends import BACKENDS

    choices = {
        "model": [*list_models(), CUSTOM],  # custom: a model passed from Python (slac.train.model)
        "form": FORMS,
        # custom: the logits of a model passed from Python come from its own classifier
        "head": [*list_heads(), CUSTOM] if config.model == CUSTOM else list_heads(),
        "dataset": [*list_datasets(), CUSTOM],  # custom: data passed from Python
        "adder_backend": ["auto", *BACKENDS],
        "schedule": SCHEDULES,
        "amp": AMP_MODES,
        "dtype": DTYPES,
        "tensorboard": TENSORBOARD_MODES,
        "eval_bn": EVAL_BN,
    }
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            _fail(key, f"must be one of {', '.join(allowed)}; got {getattr(config, key)!r}")
    for key in ("batch_size", "eval_batch_size", "epochs", "eval_every"):
        if getattr(config, key) < 1:
            _fail(key, f"must be >= 1, got {getattr(config, key)}")
    for key in ("train_subset", "test_subset"):
        if getattr(config, key) is not None and getattr(config, key) < 1:
            _fail(key, f"must be >= 1 or null, got {getattr(config, key)}")
    if config.bn_recalibration < 0:
        _fail(
            "bn_recalibration",
            f"must be >= 0 (training batches; 0 switches it off), got {config.bn_recalibration}",
        )
    if config.eval_bn == "recalibrated" and config.bn_recalibration == 0:
        _fail("eval_bn", "recalibrated needs bn_recalibration > 0 (or eval_bn: running)")
    if config.workers < 0:
        _fail("workers", f"must be >= 0, got {config.workers}")
    for key in ("lr", "weight_decay", "momentum", "warmup_epochs"):
        value = getattr(config, key)
        if not math.isfinite(value) or value < 0:
            _fail(key, f"must be finite and >= 0, got {value}")
    if config.momentum >= 1:
        _fail("momentum", f"must be < 1, got {config.momentum}")
    if config.nesterov and config.momentum == 0:
        _fail("nesterov", "needs momentum > 0")
    if not math.isfinite(config.covariance_lr_factor) or config.covariance_lr_factor <= 0:
        _fail("covariance_lr_factor", f"must be finite and > 0, got {config.covariance_lr_factor}")
    if config.eta is not None and (not math.isfinite(config.eta) or config.eta <= 0):
        _fail("eta", f"must be > 0, or null to switch the adaptive scaling off; got {config.eta}")
    if config.dtype == "float64" and config.amp != "off":
        _fail("amp", "mixed precision needs dtype float32")
    if config.warmup_epochs > config.epochs:
        _fail("warmup_epochs", f"({config.warmup_epochs}) must not exceed epochs ({config.epochs})")
    if config.device != "auto" and not (config.device == "cpu" or config.device.startswith("cuda")):
        _fail("device", f"must be auto, cpu, cuda or cuda:N; got {config.device!r}")
    for key in ("num_classes", "form", "head", "head_options"):
        if key in config.model_options:
            _fail("model_options", f"{key!r} is set by the recipe's own key, not by model_options")
    if config.name is not None and (
        not config.name or "/" in config.name or config.name in (".", "..") or config.name.startswith(".")
    ):
        _fail("name", f"must be a plain directory name not starting with a dot, got {config.name!r}")
    if config.data_root is not None and config.dataset in ("digits", CUSTOM):
        where = "is embedded in scikit-learn" if config.dataset == "digits" else "was passed from Python"
        _fail(
            "data_root",
            f"the {config.dataset} dataset {where}: it has no data_root (got {config.data_root!r})",
        )
    if config.download and not config.dataset.startswith("cifar"):
        _fail("download", f"only the CIFAR datasets can be downloaded, not {config.dataset!r}")


# What a recipe saved before BatchNorm recalibration existed meant: running statistics only. A run
# directory or checkpoint of that time is read, resumed and evaluated as it was trained.
BEFORE_RECALIBRATION = {"bn_recalibration": 0, "eval_bn": "running"}


def saved_config(data: dict[str, Any], where: str) -> TrainConfig:
    """The recipe a run saved (its config.yaml, or a checkpoint's ``config``), with the meaning of the keys
    it predates (``BEFORE_RECALIBRATION``). Keys that earlier versions accepted and ignored (a data_root
    for the embedded digits, download for a dataset that has none) are dropped as they were ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of recipe keys, got {type(data).__name__}")
    data = {**BEFORE_RECALIBRATION, **data}
    if data.get("dataset") in ("digits", CUSTOM):
        data["data_root"] = None
    if not str(data.get("dataset", "")).startswith("cifar"):
        data["download"] = False
    return config_from_dict(data, where)


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_FIELDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(_FIELDS)}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if key in _MAPPINGS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.expanduser().resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' recipes form a cycle: {' -> '.join(map(str, (*seen, path)))}")
    if not path.is_file():
        raise ConfigError(
            f"recipe {path} does not exist (recipes live under configs/, see configs/README.md)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    for key in data:
        if key != "base" and key not in _FIELDS:
            raise _unknown_key(str(key), str(path))
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path to another recipe, got {base!r}")
    return _merge(_read_recipe(path.parent / base, (*seen, path)), data)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--epochs", "10", "--amp=bf16", "--head_options.angle_weight", "1"]`` -> a mapping of values.

    Values are parsed as YAML scalars or flow mappings. A flag without a value is an error (write
    ``--compile true``), as is an unknown key.
    """
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(args):
        flag = args[index]
        if not flag.startswith("--") or flag == "--":
            raise ConfigError(f"expected a --key value pair, got {flag!r}")
        if "=" in flag:
            key, text = flag[2:].split("=", 1)
            index += 1
        else:
            key = flag[2:]
            if index + 1 >= len(args) or args[index + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value (e.g. --{key} true)")
            text = args[index + 1]
            index += 2
        key = key.replace("-", "_")
        top, _, sub = key.partition(".")
        if top not in _FIELDS:
            raise _unknown_key(top, "command line")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"--{key}: cannot parse {text!r}: {error}") from None
        if sub:
            if top not in _MAPPINGS:
                raise ConfigError(f"--{key}: only {' and '.join(_MAPPINGS)} take dotted keys")
            overrides.setdefault(top, {})[sub] = value
        else:
            overrides[top] = value
    return overrides


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    for key in data:
        if key not in _FIELDS:
            raise _unknown_key(str(key), where)
    return TrainConfig(**data)


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TrainConfig:
    """The recipe at ``path`` (None: the default job, ``DEFAULT_JOB``) with ``overrides`` applied and
    validated. A recipe file names its head: the default was slac before it became linear, so a recipe
    without one would change meaning silently."""
    data = _read_recipe(Path(path)) if path is not None else dict(DEFAULT_JOB)
    if overrides:
        update = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
        data = _merge(data, update)
    if path is not None and "head" not in data:
        raise ConfigError(
            f"{path}: the recipe does not name its head; add head: slac (the paper's classifier), head: "
            f"linear, or another of {', '.join(_head_names())} (the default is linear; before 2026-12-06 "
            "it was slac, so a recipe without a head is refused rather than read either way)"
        )
    return config_from_dict(data, str(path) if path is not None else "config")


def _head_names() -> list[str]:
    from slac.heads import list_heads

    return list_heads()


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML to ``path`` atomically (a temporary file renamed over it)."""
    from slac.train.records import write_text_atomic

    write_text_atomic(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))

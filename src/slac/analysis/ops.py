"""Operation counts (#Mul, #Add, #XNOR per image) and energy estimates, in the conventions of the paper's
Tables 1 and 2 (which are AdderNet's, Chen et al. 2020, whose numbers the paper cites).

    from slac.analysis import count_ops
    ops = count_ops(create_model("resnet20", form="ann"), (3, 32, 32))
    ops.mul, ops.add, ops.xnor              # 442,368  81,183,360  0
    print(ops.format())                     # per layer, totals, energy
    slac ops resnet20 --form ann --head slac --dataset cifar10
    slac ops --paper                        # every entry of Tables 1-2 against these counts

Convention (one per layer kind, on one image; the shapes come from a forward pass on the meta device):

    layer                        #Mul   #Add   #XNOR   M = output elements x (C_in / groups) x kh x kw
    full-precision conv/linear   M      M      0       multiply-accumulates; bias adds not counted
    adder conv/linear            0      2M     0       |x - w|: a subtraction and an accumulation
    binary conv/linear           0      M      M       XNOR, then the popcount accumulation
    head                         per head, below
    BN, activations, pooling, residual additions, the BN on logits: not counted. AdderNet omits BN
    ("its cost is significantly lower than that of the convolutional layers"); at inference it folds
    into an affine map per channel, as do the BNN's scale factors.

Heads, per image with d features and K classes; constants of the parameters (Sigma^-1, Sigma^-1 gamma,
alpha, normalizers) are precomputed; sqrt/exp/log and O(K) scalar operations are not counted, as biases
are not:  linear and L-Softmax (inference logits W x): K d mul, K d add.  LGM/MoM, per Gaussian
component: r = x - mu, r^2, times Sigma^-1, sum: 2 d mul, 2 d add.  SL/SLAC: the Gaussian part and the
skew term r . (Sigma^-1 gamma): 3 K d mul, 3 K d add.

Reproduction of Tables 1-2 (CIFAR-10 heads; ``paper_comparison()``; tests/analysis): with option-B
shortcuts (1x1 conv + BN, the official AdderNet code), ResNet-50 striding in the first 1x1 conv
(``resnet50_v1``), every entry of ResNet-18 and ResNet-50 matches except ResNet-50 BNN #XNOR, and the
ResNet-32 CNN and BNN-#Add entries match. The other entries cannot all be matched by any one convention:

- ResNet-32 vs ResNet-20 (Table 1): the two networks differ by 12 identical 3x3 convolutions (4 per
  stage) whose multiply-accumulates, 12 x 2,359,296 = 28.31M, do not depend on any counting convention.
  Table 1's CNN rows differ by 69.12M - 41.17M = 27.95M. ResNet-32's 69.12M is reproduced exactly
  (69,124,736); ResNet-20's 41.17M is 0.36M above the 40.81M of the same count (option A shortcuts give
  40.55M, further away). Every ResNet-20 entry inherits that offset (XNOR 40.72M vs 40.37M, ANN #Add
  81.89M vs 81.18M).
- #Mul of the CIFAR ResNets: the first conv (442,368) and the classifier (640) make 0.443M, printed
  0.44M; the tables print 0.45M, and their #XNOR and ANN #Add entries are exactly consistent with
  XNOR = CNN total - 0.45M and ANN #Add = 2 XNOR + 0.45M computed from the rounded figures (ResNet-32:
  69.12 - 0.45 = 68.67, 2 x 68.67 + 0.45 = 137.79; exact: 68.68M and 137.81M). With ResNet-32's total
  fixed at 69.12M no count can give 0.45M (it would push the total to 69.13M).
- SLAC-ANN rows print +0.01M #Mul and #Add over the ANN rows; the SLAC head on d = 64, K = 10 costs
  3 K d = 1,920 of each against the linear head's 640 (+0.0013M), which rounds to +0.00M.
- VGG-small: the five convolutions after the first cost 0.604G (#XNOR 0.60G matches), but the first
  conv and the classifier cost 3.6M (0.004G), not 0.05G, so CNN is 0.61G (printed 0.65G) and ANN #Add
  1.21G (printed 1.25G); no VGG-small variant we know (FC widths, pooling) gives 0.05G outside the
  binary layers and 0.60G inside.
- ResNet-50 BNN #XNOR: 3.738G prints 3.7G; the table's 3.8G is 3.9G - 0.1G of rounded figures.

Energy (``ENERGY_TABLES``): M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm at 0.9 V (the figures Sze et al. 2017, the paper's [19], reproduce): 32-bit float
multiply 3.7 pJ, add 0.9 pJ; 32-bit integer multiply 3.1 pJ, add 0.1 pJ; 8-bit integer add 0.03 pJ.
Horowitz lists no 1-bit operation: an XNOR is costed as an 8-bit integer add (0.03 pJ), an assumption
and an upper bound for one gate. Every #Add, the BNN's popcount accumulations included, is costed at the
table's add energy, as the tables count them as additions. Memory access, which dominates real
accelerators, is not included.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from slac.data.registry import DATASET_SPECS
from slac.errors import ConfigError, options_as_config_errors
from slac.heads import Head, LGMHead, LinearHead, LSoftmaxHead, MoMHead, SkewLaplaceHead
from slac.nn import AdderLayer, BinaryConv2d, BinaryLinear

__all__ = [
    "DATASETS",
    "ENERGY_TABLES",
    "PAPER_DISCREPANCIES",
    "PAPER_ROWS",
    "EnergyTable",
    "LayerOps",
    "OpCount",
    "PaperRow",
    "count_ops",
    "head_ops",
    "layer_kind",
    "paper_comparison",
    "register_head_ops",
]

# ----------------------------------------------------------------------------------------- datasets
DATASETS = DATASET_SPECS
"""Input size (C, H, W) and class count per dataset name (``slac.data.DATASET_SPECS``)."""


# ----------------------------------------------------------------------------------------- energy
@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation in picojoules, and where the figures come from."""

    name: str
    mul_pj: float
    add_pj: float
    xnor_pj: float
    source: str

    def energy_pj(self, mul: int, add: int, xnor: int) -> float:
        return mul * self.mul_pj + add * self.add_pj + xnor * self.xnor_pj


_HOROWITZ = "Horowitz, ISSCC 2014, 45 nm, 0.9 V"
ENERGY_TABLES: dict[str, EnergyTable] = {
    t.name: t
    for t in (
        EnergyTable(
            "45nm-fp32", 3.7, 0.9, 0.03, f"{_HOROWITZ}: fp32 mult 3.7 pJ, add 0.9 pJ; XNOR assumed 0.03 pJ"
        ),
        EnergyTable(
            "45nm-int32", 3.1, 0.1, 0.03, f"{_HOROWITZ}: int32 mult 3.1 pJ, add 0.1 pJ; XNOR assumed 0.03 pJ"
        ),
    )
}


# ----------------------------------------------------------------------------------------- counts
@dataclass(frozen=True)
class LayerOps:
    """Operations of one layer on one image."""

    name: str
    kind: str  # "conv", "linear", "adder", "binary" or "head"
    module: str  # class name
    output_shape: tuple[int, ...]
    mul: int
    add: int
    xnor: int


@dataclass(frozen=True)
class OpCount:
    """Per-layer and total operation counts of a model on one image of ``input_size``."""

    input_size: tuple[int, ...]
    layers: tuple[LayerOps, ...] = field(default_factory=tuple)

    @property
    def mul(self) -> int:
        return sum(layer.mul for layer in self.layers)

    @property
    def add(self) -> int:
        return sum(layer.add for layer in self.layers)

    @property
    def xnor(self) -> int:
        return sum(layer.xnor for layer in self.layers)

    def energy_pj(self, table: str | EnergyTable = "45nm-fp32") -> float:
        """Energy of the counted operations in picojoules (see ``ENERGY_TABLES``)."""
        return _energy_table(table).energy_pj(self.mul, self.add, self.xnor)

    def as_dict(self, table: str = "45nm-fp32") -> dict:
        return {
            "input_size": list(self.input_size),
            "mul": self.mul,
            "add": self.add,
            "xnor": self.xnor,
            "energy_uj": self.energy_pj(table) / 1e6,
            "energy_table": asdict(_energy_table(table)),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def format(self, per_layer: bool = True, table: str = "45nm-fp32") -> str:
        """A text table: one row per counted layer (optional), the totals and the energy estimate."""
        header = f"{'layer':32s} {'kind':7s} {'output':>18s} {'#Mul':>15s} {'#Add':>15s} {'#XNOR':>15s}"
        lines = [header, "-" * len(header)]
        if per_layer:
            for layer in self.layers:
                shape = "x".join(map(str, layer.output_shape))
                lines.append(
                    f"{layer.name:32s} {layer.kind:7s} {shape:>18s} "
                    f"{layer.mul:>15,d} {layer.add:>15,d} {layer.xnor:>15,d}"
                )
            lines.append("-" * len(header))
        lines.append(f"{'total':32s} {'':7s} {'':>18s} {self.mul:>15,d} {self.add:>15,d} {self.xnor:>15,d}")
        human = f"{_human(self.mul):>15s} {_human(self.add):>15s} {_human(self.xnor):>15s}"
        lines.append(f"{'':32s} {'':7s} {'':>18s} {human}")
        energy = _energy_table(table)
        lines.append(f"energy: {self.energy_pj(energy) / 1e6:.2f} uJ per image ({energy.source})")
        return "\n".join(lines)


def _energy_table(table: str | EnergyTable) -> EnergyTable:
    if isinstance(table, EnergyTable):
        return table
    if table not in ENERGY_TABLES:
        raise ConfigError(f"unknown energy table {table!r}; known: {', '.join(sorted(ENERGY_TABLES))}")
    return ENERGY_TABLES[table]


def _human(count: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def layer_kind(module: nn.Module) -> str | None:
    """ "binary", "adder", "conv" (full-precision convolution), "linear", "head", or None (not counted)."""
    if isinstance(module, Head):
        return "head"
    if isinstance(module, BinaryConv2d | BinaryLinear):  # before nn.Conv2d / nn.Linear: they subclass them
        return "binary"
    if isinstance(module, AdderLayer):
        return "adder"
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _terms_per_output(module: nn.Module) -> int:
    """K: the products (or |x - w| terms) summed into one output element."""
    weight = module.weight
    return int(math.prod(weight.shape[1:]))  # (O, C/groups, kh, kw) or (O, K)


# Head formulas: fn(head) -> (mul, add) per image.
_HEAD_OPS: dict[type, Callable[[Head], tuple[int, int]]] = {}


def register_head_ops(head_type: type) -> Callable:
    """Decorator registering ``fn(head) -> (mul, add)``, the per-image cost of a head class's logits."""

    def decorator(fn: Callable[[Head], tuple[int, int]]) -> Callable[[Head], tuple[int, int]]:
        _HEAD_OPS[head_type] = fn
        return fn

    return decorator


@register_head_ops(LinearHead)
@register_head_ops(LSoftmaxHead)
def _dot_product_head(head: Head) -> tuple[int, int]:
    macs = head.num_classes * head.in_features
    return macs, macs


@register_head_ops(LGMHead)
def _gaussian_head(head: Head) -> tuple[int, int]:
    terms = 2 * head.num_classes * head.in_features
    return terms, terms


@register_head_ops(MoMHead)
def _gaussian_mixture_head(head: MoMHead) -> tuple[int, int]:
    terms = 2 * head.num_classes * head.num_components * head.in_features
    return terms, terms


@register_head_ops(SkewLaplaceHead)
def _skew_laplace_head(head: Head) -> tuple[int, int]:
    terms = 3 * head.num_classes * head.in_features
    return terms, terms


def head_ops(head: Head) -> tuple[int, int]:
    """(#Mul, #Add) per image of a head's logits (module docstring)."""
    for head_type in type(head).__mro__:
        if head_type in _HEAD_OPS:
            return _HEAD_OPS[head_type](head)
    raise NotImplementedError(
        f"no operation count for head {type(head).__name__}; "
        "register one with slac.analysis.register_head_ops"
    )


class _HeadReached(Exception):
    pass


# (#Mul, #Add, #XNOR) per multiply-accumulate (or |x - w| term) of each layer kind (module docstring)
_OPS_PER_MAC = {"conv": (1, 1, 0), "linear": (1, 1, 0), "adder": (0, 2, 0), "binary": (0, 1, 1)}


def count_ops(model: nn.Module, input_size: tuple[int, ...]) -> OpCount:
    """Count #Mul, #Add, #XNOR per layer of ``model`` on one image of ``input_size`` = (C, H, W).

    The model runs once on the meta device (no arithmetic, parameters untouched, any size is cheap); a
    forward hook reads each counted layer's output shape. A head ends the pass: it is counted by its
    formula (``head_ops``) and what follows it (the BN on logits) is not counted.
    """
    input_size = _image_size(input_size)
    records: list[LayerOps] = []
    handles = []

    def hook(name: str, kind: str):
        def record(module: nn.Module, inputs, output) -> None:
            shape = tuple(output.shape[1:])
            macs = int(math.prod(shape)) * _terms_per_output(module)
            mul, add, xnor = (macs * factor for factor in _OPS_PER_MAC[kind])
            records.append(LayerOps(name, kind, type(module).__name__, shape, mul, add, xnor))

        return record

    def head_hook(name: str):
        def record(module: Head, inputs) -> None:
            mul, add = head_ops(module)
            records.append(LayerOps(name, "head", type(module).__name__, (module.num_classes,), mul, add, 0))
            raise _HeadReached

        return record

    heads = [name for name, module in model.named_modules() if isinstance(module, Head)]
    for name, module in model.named_modules():
        if any(name.startswith(h + ".") for h in heads):
            continue  # inside a head: counted by the head's formula
        kind = layer_kind(module)
        if kind == "head":
            handles.append(module.register_forward_pre_hook(head_hook(name)))
        elif kind is not None:
            handles.append(module.register_forward_hook(hook(name, kind)))
    state = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in (*model.named_parameters(), *model.named_buffers())
    }
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        functional_call(model, state, (torch.empty(1, *input_size, device="meta"),), strict=False)
    except _HeadReached:
        pass
    except (RuntimeError, ValueError) as error:
        # On the meta device nothing is computed: what fails is a shape the model cannot take (channels,
        # a flattened size, a kernel larger than its input). An operator without a meta kernel is a bug.
        if isinstance(error, NotImplementedError):
            raise
        raise ConfigError(
            f"{type(model).__name__} cannot run on one image of {'x'.join(map(str, input_size))} ({error}); "
            "give the (C, H, W) it was built for"
        ) from error
    finally:
        for module, training in modes.items():
            module.training = training
        for handle in handles:
            handle.remove()
    return OpCount(input_size, tuple(records))


def _image_size(input_size: Any) -> tuple[int, int, int]:
    """``input_size`` as (C, H, W) of positive integers; anything else (a float, a string) is refused
    rather than rounded."""
    try:
        entries = tuple(input_size)
        size = tuple(operator.index(s) for s in entries)
    except TypeError:
        entries = size = ()
    if len(size) != 3 or any(isinstance(s, bool) for s in entries) or min(size) < 1:
        raise ConfigError(f"input_size must be (C, H, W), three positive integers, got {input_size!r}")
    return size  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- Tables 1-2
@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Tables 1 and 2, with the entries as printed, and our model for it."""

    table: int
    network: str  # as printed
    method: str  # "CNN", "BNN", "ANN", "SLAC-ANN"
    mul: str
    add: str
    xnor: str
    model: str  # slac.models name
    dataset: str

    @property
    def form(self) -> str:
        return {"CNN": "cnn", "BNN": "bnn", "ANN": "ann", "SLAC-ANN": "ann"}[self.method]

    @property
    def head(self) -> str:
        return "slac" if self.method == "SLAC-ANN" else "linear"


def _rows(table, network, model, dataset, entries):
    return [PaperRow(table, network, method, *values, model, dataset) for method, *values in entries]


PAPER_ROWS: tuple[PaperRow, ...] = tuple(
    _rows(1, "VGG-small", "vgg_small", "cifar10", [
        ("CNN", "0.65G", "0.65G", "0"), ("BNN", "0.05G", "0.65G", "0.60G"),
        ("ANN", "0.05G", "1.25G", "0"), ("SLAC-ANN", "0.05G", "1.25G", "0"),
    ])
    + _rows(1, "ResNet-20", "resnet20", "cifar10", [
        ("CNN", "41.17M", "41.17M", "0"), ("BNN", "0.45M", "41.17M", "40.72M"),
        ("ANN", "0.45M", "81.89M", "0"), ("SLAC-ANN", "0.46M", "81.90M", "0"),
    ])
    + _rows(1, "ResNet-32", "resnet32", "cifar10", [
        ("CNN", "69.12M", "69.12M", "0"), ("BNN", "0.45M", "69.12M", "68.67M"),
        ("ANN", "0.45M", "137.79M", "0"), ("SLAC-ANN", "0.46M", "137.80M", "0"),
    ])
    + _rows(2, "ResNet-18", "resnet18", "imagenet", [
        ("CNN", "1.8G", "1.8G", "0"), ("BNN", "0.1G", "1.8G", "1.7G"),
        ("ANN", "0.1G", "3.5G", "0"), ("SLAC-ANN", "0.1G", "3.5G", "0"),
    ])
    + _rows(2, "ResNet-50", "resnet50_v1", "imagenet", [
        ("CNN", "3.9G", "3.9G", "0"), ("BNN", "0.1G", "3.9G", "3.8G"),
        ("ANN", "0.1G", "7.6G", "0"), ("SLAC-ANN", "0.1G", "7.6G", "0"),
    ])
)  # fmt: skip
"""Tables 1 (CIFAR-10 columns' models) and 2 of the paper, #Mul/#Add/#XNOR as printed."""


def format_like(count: int, printed: str) -> str:
    """``count`` written in the unit and with the decimals of the printed table entry ("41.17M", "0")."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?([MG]?)", printed)
    if match is None:
        raise ValueError(f"cannot read the table entry {printed!r}")
    if not match.group(3):
        return str(count)
    decimals = len(match.group(2) or "")
    return f"{count / {'M': 1e6, 'G': 1e9}[match.group(3)]:.{decimals}f}{match.group(3)}"


_R20_OFFSET = (
    "Table 1's ResNet-20 total (41.17M) is 0.36M above the count (40.81M) that reproduces ResNet-32's 69.12M "
    "exactly; the networks differ by 12 convolutions of 2,359,296 MACs (28.31M under any convention), the "
    "table's rows by 27.95M"
)
_CIFAR_MUL = "first conv 442,368 + classifier 640 = 0.443M; the table prints 0.45M"
_SLAC_MUL = "first conv 442,368 + SLAC head 3Kd = 1,920: 0.444M; the table adds 0.01M to its ANN's 0.45M"
_VGG_MUL = "first conv 3,538,944 + classifier 81,920 = 0.004G; the table's 0.05G is unexplained"
_VGG_TOTAL = "0.604G in the five binary/adder convolutions + 0.004G; the table's totals use its 0.05G"

PAPER_DISCREPANCIES: dict[tuple[str, str, str], str] = {
    **{("VGG-small", method, "mul"): _VGG_MUL for method in ("BNN", "ANN", "SLAC-ANN")},
    **{("VGG-small", method, column): _VGG_TOTAL for method, column in (
        ("CNN", "mul"), ("CNN", "add"), ("BNN", "add"), ("ANN", "add"), ("SLAC-ANN", "add"))},
    **{("ResNet-20", method, column): _R20_OFFSET for method, column in (
        ("CNN", "mul"), ("CNN", "add"), ("BNN", "add"), ("BNN", "xnor"), ("ANN", "add"),
        ("SLAC-ANN", "add"))},
    **{(network, method, "mul"): _CIFAR_MUL
       for network in ("ResNet-20", "ResNet-32") for method in ("BNN", "ANN")},
    ("ResNet-20", "SLAC-ANN", "mul"): _SLAC_MUL,
    ("ResNet-32", "SLAC-ANN", "mul"): _SLAC_MUL,
    ("ResNet-32", "BNN", "xnor"): "exact 68.68M; the table's 68.67M is 69.12M - 0.45M of rounded figures",
    ("ResNet-32", "ANN", "add"): "exact 137.81M; the table's 137.79M is 2 x 68.67M + 0.45M, rounded figures",
    ("ResNet-32", "SLAC-ANN", "add"): "exact 137.81M (ANN + 1,280); the table adds 0.01M to its ANN's entry",
    ("ResNet-50", "BNN", "xnor"): "exact 3.738G; the table's 3.8G is 3.9G - 0.1G of rounded figures",
}  # fmt: skip
"""The entries of Tables 1-2 that these counts do not reproduce, with the likely cause (module docstring)."""


def paper_comparison(rows: tuple[PaperRow, ...] = PAPER_ROWS) -> list[dict]:
    """Our counts for every entry of Tables 1-2: one dict per (row, column) with the printed value, ours at
    the same precision, the exact count, whether they agree, the difference in units of the table's last
    printed digit, and the note of ``PAPER_DISCREPANCIES`` where there is one."""
    from slac.models import create_model

    results = []
    for row in rows:
        (channels, height, width), num_classes = DATASETS[row.dataset]
        with torch.device("meta"):
            model = create_model(row.model, form=row.form, head=row.head, num_classes=num_classes)
        ops = count_ops(model, (channels, height, width))
        for column, printed, exact in (
            ("mul", row.mul, ops.mul),
            ("add", row.add, ops.add),
            ("xnor", row.xnor, ops.xnor),
        ):
            ours = format_like(exact, printed)
            results.append(
                {
                    "table": row.table,
                    "network": row.network,
                    "method": row.method,
                    "column": column,
                    "paper": printed,
                    "ours": ours,
                    "exact": exact,
                    "match": ours == printed,
                    "last_digit_diff": _last_digit_diff(ours, printed),
                    "note": PAPER_DISCREPANCIES.get((row.network, row.method, column), ""),
                }
            )
    return results


def _last_digit_diff(ours: str, printed: str) -> int:
    """ours - printed in units of the printed entry's last digit ("0.44M" vs "0.45M": -1)."""
    digits = lambda text: int(re.sub(r"[^0-9]", "", text))  # noqa: E731 - same decimals on both sides
    return digits(ours) - digits(printed)


# ----------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``slac ops``."""
    parser.add_argument("model", nargs="?", help="a registered model (slac.models.list_models())")
    parser.add_argument("--form", default="ann", choices=("cnn", "ann", "bnn"))
    parser.add_argument("--head", default="linear", help="a registered head (slac.heads.list_heads())")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="input size, channels included (as slac train builds the model), and classes "
        "(default: the model's)",
    )
    parser.add_argument("--num-classes", type=int, help="override the dataset's class count")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="architecture override, e.g. shortcut=identity or feature_dim=2 (Python literal values)",
    )  # fmt: skip
    parser.add_argument("--energy", default="45nm-fp32", choices=sorted(ENERGY_TABLES))
    parser.add_argument("--totals-only", action="store_true", help="no per-layer rows")
    parser.add_argument("--json", metavar="PATH", help="also write the counts as JSON")
    parser.add_argument("--paper", action="store_true", help="compare with every entry of Tables 1 and 2")


def _parse_model_args(items: list[str]) -> dict:
    import ast

    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg expects KEY=VALUE (e.g. shortcut=identity), got {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def _build_model(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, int, int], int]:
    """The model of ``slac ops`` on the meta device, as ``slac train`` builds it for the dataset: the
    dataset sets the input channels and, for models that flatten their last feature map, ``img_size``."""
    from slac.models import create_model, model_cfg

    cfg = model_cfg(args.model)
    dataset = args.dataset or cfg.dataset
    input_size, num_classes = DATASETS[args.dataset] if args.dataset else (cfg.input_size, cfg.num_classes)
    if args.num_classes is not None:
        num_classes = args.num_classes
    kwargs = _parse_model_args(args.model_arg)
    kwargs.setdefault("in_chans", input_size[0])
    if kwargs["in_chans"] != input_size[0]:
        raise ConfigError(
            f"--model-arg in_chans: {dataset} has {input_size[0]} channels, got {kwargs['in_chans']!r}"
        )
    if cfg.fixed_input_size:
        kwargs.setdefault("img_size", input_size[1])
        if kwargs["img_size"] != input_size[1]:
            raise ConfigError(
                f"--model-arg img_size: {args.model} flattens its last feature map, so it needs img_size "
                f"{input_size[1]} for {dataset}'s {input_size[1]}x{input_size[2]} images, got "
                f"{kwargs['img_size']!r}"
            )
    with options_as_config_errors(args.model), torch.device("meta"):  # as slac train says them
        model = create_model(args.model, form=args.form, head=args.head, num_classes=num_classes, **kwargs)
    return model, input_size, num_classes


def main(args: argparse.Namespace) -> int:
    """``slac ops``: print the counts of one model, or the comparison with Tables 1-2 (``--paper``)."""
    from slac.files import check_output_file

    json_path = check_output_file(args.json, "--json") if args.json else None
    if args.paper:
        given = [flag for flag, value in (("MODEL", args.model), ("--dataset", args.dataset),
                 ("--num-classes", args.num_classes), ("--model-arg", args.model_arg))
                 if value not in (None, [])]  # fmt: skip
        if given:
            raise ConfigError(
                f"--paper counts the models of Tables 1-2 as printed; leave out {', '.join(given)}"
            )
        results = paper_comparison()
        columns = f"{'paper':>9s} {'ours':>9s} {'exact':>15s}"
        print(f"{'table':5s} {'network':10s} {'method':9s} {'col':5s} {columns}  note")
        for r in results:
            flag = "" if r["match"] else f"  {r['last_digit_diff']:+d}: {r['note']}"
            print(
                f"{r['table']:<5d} {r['network']:10s} {r['method']:9s} {r['column']:5s} "
                f"{r['paper']:>9s} {r['ours']:>9s} {r['exact']:>15,d}{flag}"
            )
        counted = [r for r in results if r["paper"] != "0"]
        agree = sum(r["match"] for r in counted)
        print(
            f"{agree}/{len(counted)} nonzero entries agree (all zero entries do); the others are explained "
            "in slac.analysis.ops.PAPER_DISCREPANCIES"
        )
        if json_path:
            with open(json_path, "w") as f:
                json.dump(results, f, indent=2)
        return 0
    if args.model is None:
        from slac.models import list_models

        raise ConfigError(f"give a MODEL ({', '.join(list_models())}) or --paper")
    model, input_size, num_classes = _build_model(args)
    ops = count_ops(model, input_size)
    print(
        f"{args.model} form={args.form} head={args.head} input={'x'.join(map(str, input_size))} "
        f"classes={num_classes}"
    )
    print(ops.format(per_layer=not args.totals_only, table=args.energy))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(
                {"model": args.model, "form": args.form, "head": args.head, **ops.as_dict(args.energy)},
                f,
                indent=2,
            )
    return 0

"""Export of models with adder layers: standard operators only, run by onnxruntime with slac's outputs."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from slac.errors import ConfigError
from slac.export import ChannelAffine, decompositions, export_onnx, export_program, fold_batchnorm
from slac.models import create_model
from slac.nn import Adder2d, recalibrate_batchnorm

onnxruntime = pytest.importorskip(
    "onnxruntime", reason="onnxruntime not installed (pip install slac[export])"
)
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install slac[export])")


def _realistic(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Evaluation mode with BatchNorm statistics of real activations (at their initial values every adder
    output is about -1e3 and the ReLUs zero everything: a comparison would be of constants)."""
    torch.manual_seed(0)
    recalibrate_batchnorm(model, [torch.randn(32, *shape) for _ in range(4)])
    return model.eval()


def _relative_error(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [("resnet20", (3, 32, 32), {}), ("lenet", (1, 8, 8), {"img_size": 8, "in_chans": 1})],
    ids=["resnet20", "lenet"],
)
def test_onnx_export_runs_in_onnxruntime_with_slacs_outputs(tmp_path, name, shape, options):
    """onnxruntime's float32 logits are as close to the exact (float64) logits as slac's own float32 ones:
    an ANN's logits carry large float32 rounding (adder sums of magnitude 1e3, then the logits' BatchNorm
    divides by their small spread), so the comparison is with that floor, measured here, not a fixed
    number. Measured on a Xeon Sapphire Rapids, relative to the largest logit: slac's float32 logits are off
    the exact ones by 1.6e-5 (ResNet-20) and 3.8e-4 (LeNet's 5x5 layers: longer sums), onnxruntime's by
    5e-6 and 3.9e-4; a wrong decomposition is off by O(1)."""
    model = _realistic(create_model(name, form="ann", head="linear", num_classes=10, **options), shape)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        slac32 = model(x)
        exact = copy.deepcopy(model).double()(x.double())
    assert slac32.std() > 0.1  # the logits vary: the comparison is not of constants
    path = export_onnx(model, x[:2], tmp_path / f"{name}.onnx")  # exported at batch 2, run at batch 5
    import onnx

    graph = onnx.load(str(path)).graph
    assert not [node.op_type for node in graph.node if node.domain not in ("", "ai.onnx")]  # standard ops
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    floor = max(_relative_error(slac32, exact), 1e-6)
    assert _relative_error(got, exact) <= 10 * floor, (_relative_error(got, exact), floor)
    assert _relative_error(got, slac32) <= 1e-3  # and the float32 outputs themselves agree


def test_batchnorm_after_an_adder_layer_folds_into_a_scale_and_shift():
    torch.manual_seed(0)
    model = nn.Sequential(Adder2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                          nn.BatchNorm2d(4))  # fmt: skip
    model = _realistic(model, (3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert isinstance(folded[1], ChannelAffine) and isinstance(folded[4], nn.BatchNorm2d)  # only after adders
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    exported = export_program(model, x).module()  # folded and decomposed, on a copy
    torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(model[1], nn.BatchNorm2d)  # the model itself is left alone
    with pytest.raises(ConfigError, match="training mode"):
        fold_batchnorm(copy.deepcopy(model).train())


def test_torch_export_decomposes_to_standard_operators():
    model = _realistic(create_model("resnet20", form="ann", head="linear", num_classes=10), (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,))
    assert any("slac" in str(node.target) for node in program.graph.nodes)
    program = program.run_decompositions(decompositions())
    assert not any("slac" in str(node.target) for node in program.graph.nodes)
    with torch.no_grad():
        assert _relative_error(program.module()(x), model(x)) < 1e-4


def _lenet() -> nn.Module:
    return create_model("lenet", form="ann", head="linear", num_classes=10, img_size=8, in_chans=1).eval()


@pytest.mark.parametrize(
    ("example", "message"),
    [
        (lambda: torch.randn(0, 1, 8, 8), "a batch of at least 1 image, got shape (0, 1, 8, 8)"),
        (
            lambda: [torch.randn(1, 1, 8, 8)],
            "a tensor or a tuple of tensors, got a list; pass tuple(example)",
        ),
        (lambda: (), "a tensor or a tuple of tensors, got an empty tuple"),
        (lambda: torch.randn(2, 1, 8, 8).numpy(), "got a numpy.ndarray; pass torch.from_numpy(example)"),
        (lambda: torch.tensor(1.0), "a batch of at least 1 image, got shape ()"),
        (lambda: torch.randn(2, 1, 8, 8).double(), "the example is torch.float64 and the model's parameters"),
        (lambda: torch.randn(2, 1, 8, 8).long(), "the example is torch.int64 and the model's parameters"),
        (lambda: torch.randn(2, 1, 8, 8, device="meta"), "the example is on meta and the model on cpu"),
        (lambda: torch.randn(2, 3, 8, 8), "the model does not run on the example (shape (2, 3, 8, 8)"),
        (
            lambda: torch.randn(2, 1, 16, 16),
            "the model does not run on the example (shape (2, 1, 16, 16)",
        ),
    ],
    ids=[
        "batch 0",
        "list",
        "empty tuple",
        "numpy",
        "scalar",
        "float64",
        "int64",
        "device",
        "channels",
        "size",
    ],
)
def test_the_example_is_checked_before_tracing(tmp_path, example, message):
    model = _lenet()
    for export in (
        lambda: export_program(model, example()),
        lambda: export_onnx(model, example(), tmp_path / "m.onnx"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            export()
    assert not (tmp_path / "m.onnx").exists()


def test_a_batch_of_one_declared_dynamic_exports_a_dynamic_batch():
    """torch.export specializes an axis of size 1 even where dynamic_shapes declares it dynamic."""
    model, x = _lenet(), torch.randn(3, 1, 8, 8)
    program = export_program(model, x[:1], dynamic_shapes=({0: torch.export.Dim("batch")},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-3)


def test_the_model_and_the_path_are_checked_before_tracing(tmp_path):
    with pytest.raises(ConfigError, match=r"folds an nn\.Module, got str"):
        fold_batchnorm("model")
    with pytest.raises(ConfigError, match=r"exports an nn\.Module, got function"):
        export_program(lambda x: x, torch.randn(2, 1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=f"the folder {tmp_path / 'missing'} does not exist"):
        export_onnx(_lenet(), x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ConfigError, match=f"{tmp_path} is a directory"):
        export_onnx(_lenet(), x, tmp_path)
    assert list(tmp_path.iterdir()) == []

"""Official AdderNet checkpoints in slac's models: a state dict in the official layout (written here, by
the official code's names: no download) loads into the slac model and gives the same logits."""

from __future__ import annotations

import pytest
import torch

from slac.errors import CheckpointError
from slac.models import create_model, load_official_addernet


def _official_layout(model: torch.nn.Module, prefix: str = "") -> dict:
    """A slac ANN's state dict renamed as the official resnet20.py/resnet50.py name their modules: adder
    weights 'adder', the classifier a 1x1 convolution 'fc', the logits' BatchNorm 'bn2'."""
    official = {}
    adder_weights = {f"{name}.weight" for name, m in model.named_modules() if type(m).__name__ == "Adder2d"}
    for key, value in model.state_dict().items():
        if key in adder_weights:
            key = key[: -len("weight")] + "adder"
        elif key == "head.linear.weight":
            key, value = "fc.weight", value[:, :, None, None]
        elif key == "head.linear.bias":
            key = "fc.bias"
        elif key.startswith("logit_norm."):
            key = "bn2." + key[len("logit_norm.") :]
        official[prefix + key] = value.clone()
    return official


def _trained_like(name: str, num_classes: int, bias: bool) -> torch.nn.Module:
    """A slac ANN with the official classifier and statistics that are not the initial ones."""
    torch.manual_seed(0)
    model = create_model(name, form="ann", num_classes=num_classes, head="linear",
                         head_options={"bias": bias}, logit_norm=True)  # fmt: skip
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-50, 0)
                module.running_var.uniform_(10, 100)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "num_classes", "bias", "size"),
    [("resnet20", 10, False, 32), pytest.param("resnet50", 1000, True, 64, marks=pytest.mark.slow)],
    ids=["resnet20", "resnet50"],
)
@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "DataParallel"])
def test_an_official_state_dict_gives_the_logits_of_the_model_it_came_from(
    name, num_classes, bias, size, prefix
):
    model = _trained_like(name, num_classes, bias)
    official = _official_layout(model, prefix)
    assert any(key.endswith(".adder") for key in official) and official[prefix + "fc.weight"].dim() == 4
    loaded = load_official_addernet(official, model=name).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_file_with_missing_extra_or_misshapen_keys_is_refused_by_name(tmp_path):
    model = _trained_like("resnet20", 10, False)
    official = _official_layout(model)
    path = tmp_path / "ResNet20-AdderNet.pth"
    torch.save(official, path)
    assert load_official_addernet(path).head.num_classes == 10
    broken = dict(official)
    del broken["layer2.0.conv1.adder"]
    broken["layer9.bn.weight"] = torch.ones(3)
    broken["layer1.0.bn1.weight"] = torch.ones(7)
    expected = (
        r"missing \(1\): layer2\.0\.conv1\.weight.*unexpected \(1\): layer9\.bn\.weight.*"
        r"layer1\.0\.bn1\.weight: checkpoint \(7,\), model \(16,\)"
    )
    with pytest.raises(CheckpointError, match=expected):
        load_official_addernet(broken)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read it"):
        load_official_addernet(path)
    with pytest.raises(FileNotFoundError):
        load_official_addernet(tmp_path / "missing.pth")


def test_slac_eval_official_scores_the_checkpoint_on_cifar10(tmp_path):
    """`slac eval --official FILE --model resnet20 --data_root DIR`, as a user checks the published 91.8%:
    here on a tiny CIFAR-10 folder in the official format (the real archive cannot be fetched)."""
    import dataclasses
    import json
    import subprocess
    import sys

    from data.helpers import cifar_files, write_cifar_dir
    from slac.data import load_dataset
    from slac.train import evaluate
    from slac.train.data import DeviceLoader

    write_cifar_dir(tmp_path / "cifar-10-batches-py", cifar_files("cifar10", n=6))
    model = _trained_like("resnet20", 10, False)
    torch.save(_official_layout(model, "module."), tmp_path / "ResNet20-AdderNet.pth")
    result = subprocess.run(
        [sys.executable, "-m", "slac.cli", "eval", str(tmp_path / "ResNet20-AdderNet.pth"), "--official",
         "--model", "resnet20", "--data_root", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["count"] == 6 and scored["dataset"] == "cifar10" and scored["published_top1"] == 91.8
    # the same as scoring the slac model on those images normalized as the official test.py
    test = load_dataset("cifar10", str(tmp_path), "test")
    official = dataclasses.replace(test, std=(0.2023, 0.1994, 0.2010))
    expected = evaluate(model, DeviceLoader(official, 100, shuffle=False), torch.device("cpu"))
    assert scored["top1"] == expected["top1"] and scored["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_to_official_state_dict_is_the_inverse_of_the_loader():
    model = _trained_like("resnet20", 10, False)
    assert {
        k: tuple(v.shape) for k, v in __import__("slac").models.to_official_state_dict(model).items()
    } == {k: tuple(v.shape) for k, v in _official_layout(model).items()}

"""The model zoo, driven by the registry: every model in every form builds, runs forward and backward,
has the expected shapes and parameter counts, and keeps multiplications out of its ANN/BNN layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slac.heads import list_heads
from slac.models import FORMS, ClassifierModel, create_model, list_models, model_cfg, register_model
from slac.models.layers import PadShortcut
from slac.nn import AdderLayer, BinaryConv2d, BinaryLinear

# Inputs of the forward/backward tests, reduced to stay fast on 2 CPU cores: the LeNet at the digits' 8x8,
# VGG-small at 16x16 (it flattens 512 x 2 x 2), the ResNets (adaptive pooling) at half their CIFAR size
# or at 32x32 for the ImageNet ones (layer4 then works on 1x1 maps).
SMALL_INPUT = {
    "lenet": (1, 8, 8),
    "vgg_small": (3, 16, 16),
    "resnet20": (3, 16, 16),
    "resnet32": (3, 16, 16),
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "resnet50_v1": (3, 32, 32),
}

# Parameters at the default configuration (linear head, default classes), measured. The ANN form has a
# BatchNorm on the logits (2K parameters) and a bias-free linear head (-K): +K.
PARAMETERS = {
    "lenet": 806_826,
    "vgg_small": 4_660_106,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet50_v1": 25_557_032,
}


def _meta_model(name: str, **kwargs) -> ClassifierModel:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_is_tested():
    assert set(list_models()) == set(SMALL_INPUT) == set(PARAMETERS)


def test_unknown_model_is_an_error_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'.*resnet20.*vgg_small"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="known models"):
        model_cfg("nope")


def test_list_models_pattern_and_defaults():
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet32", "resnet50", "resnet50_v1"]
    assert model_cfg("resnet18").input_size == (3, 224, 224)
    assert model_cfg("lenet").fixed_input_size
    model = _meta_model("resnet18", form="cnn")
    assert model.num_classes == 1000 and model.form == "cnn" and model.num_features == 512


def test_registry_rejects_duplicates_and_bad_forms():
    def resnet20(**kwargs):  # same name as a registered model
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model(input_size=(3, 32, 32), num_classes=10, dataset="cifar10")(resnet20)
    with pytest.raises(ValueError, match="form must be one of"):
        create_model("resnet20", form="snn")
    with pytest.raises(TypeError):
        create_model("resnet20", no_such_argument=1)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_forward_backward(name, form):
    input_size = SMALL_INPUT[name]
    kwargs = {"img_size": input_size[1]} if model_cfg(name).fixed_input_size else {}
    model = create_model(name, form=form, num_classes=10, **kwargs)
    x = torch.randn(2, *input_size)
    targets = torch.tensor([3, 7])
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    logits = model.forward_head(features, targets)
    assert logits.shape == (2, 10)
    model.loss(features, logits, targets).total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts(name, form):
    model = _meta_model(name, form=form)
    expected = PARAMETERS[name] + (model.num_classes if form == "ann" else 0)
    assert _count(model) == expected


@pytest.mark.parametrize(
    ("name", "kwargs", "published", "digits"),
    [
        ("resnet20", {"shortcut": "identity"}, 0.27, 2),  # He et al. 2016, Table 6 (option A)
        ("resnet32", {"shortcut": "identity"}, 0.46, 2),
        ("resnet20", {}, 0.27, 2),  # option B: 272,474
        ("resnet18", {}, 11.7, 1),  # torchvision / He et al.
        ("resnet50", {}, 25.6, 1),
        ("resnet50_v1", {}, 25.6, 1),
    ],
)
def test_cnn_parameter_counts_match_published(name, kwargs, published, digits):
    assert round(_count(_meta_model(name, form="cnn", **kwargs)) / 1e6, digits) == published


def test_option_a_and_b_parameter_counts():
    # option B adds two (1x1 conv + BN): 16*32 + 2*32 + 32*64 + 2*64 = 2,752 parameters
    for name, option_a in (("resnet20", 269_722), ("resnet32", 464_154)):
        assert _count(_meta_model(name, form="cnn", shortcut="identity")) == option_a
        assert _count(_meta_model(name, form="cnn")) == option_a + 2_752
    # ResNet-32 with option B rounds to 0.47M, not the published 0.46M
    assert round(_count(_meta_model("resnet32", form="cnn")) / 1e6, 2) == 0.47


def _multiplying_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not isinstance(m, BinaryConv2d | BinaryLinear)
    ]


@pytest.mark.parametrize("form", ["ann", "bnn"])
@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_only_the_first_conv_and_the_head_multiply(name, form):
    model = _meta_model(name, form=form)
    outside_head = [(n, m) for n, m in _multiplying_layers(model) if not n.startswith("head.")]
    assert len(outside_head) == 1, [n for n, _ in outside_head]
    first_name, first = outside_head[0]
    assert isinstance(first, nn.Conv2d) and first.in_channels == model_cfg(name).input_size[0]
    assert first_name == next(
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear | AdderLayer)
    )
    kind = AdderLayer if form == "ann" else (BinaryConv2d, BinaryLinear)
    assert sum(isinstance(m, kind) for m in model.modules()) >= 4
    other_kind = (BinaryConv2d, BinaryLinear) if form == "ann" else AdderLayer
    assert not any(isinstance(m, other_kind) for m in model.modules())


def test_cnn_has_no_adder_or_binary_layers():
    model = _meta_model("resnet20", form="cnn")
    assert not any(isinstance(m, AdderLayer | BinaryConv2d | BinaryLinear) for m in model.modules())


def test_official_ann_classifier_has_batchnorm_on_the_logits():
    ann = _meta_model("resnet20", form="ann")
    assert isinstance(ann.logit_norm, nn.BatchNorm1d) and ann.head.linear.bias is None
    for model in (
        _meta_model("resnet20", form="cnn"),
        _meta_model("resnet20", form="bnn"),
        _meta_model("resnet20", form="ann", head="slac"),
        _meta_model("resnet20", form="ann", logit_norm=False),
    ):
        assert isinstance(model.logit_norm, nn.Identity)
    assert _meta_model("resnet20", form="cnn").head.linear.bias is not None
    assert isinstance(_meta_model("resnet20", form="cnn", logit_norm=True).logit_norm, nn.BatchNorm1d)


@pytest.mark.parametrize("head", list_heads())
def test_every_head_trains_on_a_model(head):
    model = create_model("lenet", form="cnn", head=head, img_size=8, num_classes=4)
    x, targets = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    features = model.forward_features(x)
    logits = model.forward_head(features, targets)
    assert logits.shape == (6, 4) and model.num_features == 128
    loss = model.loss(features, logits, targets).total
    loss.backward()
    assert torch.isfinite(loss) and model.features[0].weight.grad.abs().sum() > 0


def test_reset_classifier_swaps_the_head():
    model = create_model("resnet20", form="cnn")
    model.reset_classifier(100, head="slac")
    assert model.head_name == "slac" and model.head.num_classes == 100
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_lenet_feature_layer_and_digits_size():
    model = create_model("lenet", form="ann", feature_dim=2, img_size=8)
    assert model.num_features == 2
    features = model.forward_features(torch.randn(4, 1, 8, 8))
    assert features.shape == (4, 2)
    assert isinstance(model.embedding[0], AdderLayer)
    assert create_model("lenet", form="cnn").num_features == 128 * 3 * 3
    with pytest.raises(ValueError, match="img_size"):
        create_model("lenet", img_size=4)


def test_vgg_small_average_pooling_option():
    model = create_model("vgg_small", form="cnn", global_pool="avg", img_size=16)
    assert model.num_features == 512
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_option_a_shortcut_pads_and_subsamples():
    shortcut = PadShortcut(16, 32, 2)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    model = create_model("resnet20", form="cnn", shortcut="identity")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet50_v1_strides_in_the_first_1x1():
    v1, v15 = _meta_model("resnet50_v1", form="cnn"), _meta_model("resnet50", form="cnn")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


def test_adder_layers_keep_their_normal_initialization():
    model = create_model("resnet20", form="ann")
    weight = model.layer1[0].conv1.weight
    assert abs(weight.std().item() - 1.0) < 0.05  # N(0, 1), official AdderNet

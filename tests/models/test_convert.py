"""slac.convert_to_adder on models that are not slac's: which layers change, what is refused, and that the
result trains."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import slac
from slac.nn import Adder2d, AdderLinear, UnconvertibleLayerError, recalibrate_batchnorm, scale_adder_grads


def small_cnn() -> nn.Sequential:
    """Conv-BN-ReLU stages with padding="same", a stride-2 stage, a Linear classifier (digits: 1 x 8 x 8)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding="same"), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def test_the_adder_net_layout_keeps_the_first_convolution_and_the_classifier():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every adder layer has its BatchNorm: no warning
        model = slac.convert_to_adder(small_cnn().double())
    assert type(model[0]) is nn.Conv2d and type(model[11]) is nn.Linear
    assert isinstance(model[3], Adder2d) and model[3].padding == "same"
    assert isinstance(model[6], Adder2d) and model[6].stride == (2, 2) and model[6].padding == (1, 1)
    assert model[3].weight.dtype == torch.float64 and model[3].bias is not None  # Conv2d's default bias
    assert model(torch.randn(2, 1, 8, 8, dtype=torch.float64)).shape == (2, 10)
    everything = slac.convert_to_adder(small_cnn(), keep_first=False, keep_classifier=False, linear=True)
    assert isinstance(everything[0], Adder2d) and isinstance(everything[11], AdderLinear)


def test_the_converted_model_trains_on_digits_well_above_chance():
    from slac.data import DeviceLoader, load_dataset

    torch.manual_seed(0)
    model = slac.convert_to_adder(small_cnn())
    train, test = (load_dataset("digits", None, split) for split in ("train", "test"))
    loader = DeviceLoader(train, batch_size=64, augment=False, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(6):
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            scale_adder_grads(model, eta=0.2)
            optimizer.step()
    recalibrate_batchnorm(model, DeviceLoader(train, batch_size=64, augment=False, shuffle=False))
    model.eval()
    images, labels = next(iter(DeviceLoader(test, batch_size=len(test), shuffle=False)))
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).double().mean().item()
    assert accuracy > 0.9, accuracy  # chance is 0.1; measured 0.98-0.99 over seeds 0-2 (Sapphire Rapids)


def test_layers_without_an_adder_form_are_named_or_left_alone():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(8),
        nn.ConvTranspose2d(8, 8, 2), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8),
    )  # fmt: skip
    with pytest.raises(UnconvertibleLayerError, match=r"1: padding_mode 'reflect'.*3: ConvTranspose2d"):
        slac.convert_to_adder(model)
    converted = slac.convert_to_adder(model, unsupported="keep", keep_classifier=False)
    assert [type(m).__name__ for m in converted] == [
        "Conv2d", "Conv2d", "BatchNorm2d", "ConvTranspose2d", "BatchNorm2d", "Adder2d", "BatchNorm2d",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unsupported must be"):
        slac.convert_to_adder(model, unsupported="skip")


def test_adder_layers_without_normalization_are_warned_about_by_name():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3)
            self.conv = nn.Conv2d(8, 8, 3)  # no norm after it
            self.act = nn.ReLU()
            self.shared = nn.Conv2d(8, 8, 1)
            self.norm = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.norm(self.shared(self.shared(self.act(self.conv(self.stem(x))))))

    with pytest.warns(
        UserWarning, match=r"1 adder layer\(s\) with no normalization layer right after them: conv\."
    ):
        block = slac.convert_to_adder(Block(), keep_classifier=False)
    assert isinstance(block.conv, Adder2d) and isinstance(block.shared, Adder2d)
    assert block(torch.randn(1, 3, 7, 7)).shape == (1, 8, 3, 3)
    single = slac.convert_to_adder(
        nn.Conv2d(3, 4, 3), keep_first=False, keep_classifier=False, warn_unnormalized=False
    )
    assert isinstance(single, Adder2d)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_architectures(name):
    models = pytest.importorskip("torchvision.models", reason="torchvision not installed (slac[imagenet])")
    model = getattr(models, name)(num_classes=10)
    convs = sum(type(m) is nn.Conv2d for m in model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision puts a BatchNorm after every convolution
        converted = slac.convert_to_adder(model)
    adders = sum(isinstance(m, Adder2d) for m in converted.modules())
    assert (
        adders == convs - 1
        and type(converted.fc if name == "resnet18" else converted.classifier[1]) is nn.Linear
    )
    assert converted(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def stem_and_head(middle: nn.Module, head: nn.Module) -> nn.Sequential:
    """A kept stem convolution (3 -> 8 channels), ``middle`` (8 -> 8 channels), a BatchNorm, ``head``."""
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), middle, nn.BatchNorm2d(8), head)


@pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:DeprecationWarning")
def test_torchscript_modules_are_refused_with_what_to_do_instead():
    for scripted in (
        torch.jit.script(small_cnn()),
        torch.jit.trace(small_cnn().eval(), torch.randn(1, 1, 8, 8)),
    ):
        with pytest.raises(
            UnconvertibleLayerError, match=r"<root> is a TorchScript module.*convert the eager"
        ):
            slac.convert_to_adder(scripted)
    nested = stem_and_head(torch.jit.script(nn.Conv2d(8, 8, 1)), nn.Conv2d(8, 8, 1))
    with pytest.raises(UnconvertibleLayerError, match=r"^convert_to_adder: 2 is a TorchScript module"):
        slac.convert_to_adder(nested)
    # a scripted module without parameters holds no layer to convert: it is left as it is
    activation = torch.jit.script(nn.ReLU())
    model = stem_and_head(nn.Sequential(activation, nn.Conv2d(8, 8, 3)), nn.Conv2d(8, 8, 1))
    model = slac.convert_to_adder(model, warn_unnormalized=False)
    assert model[2][0] is activation and isinstance(model[2][1], Adder2d)


def test_a_layer_registered_at_several_places_becomes_one_shared_adder_layer():
    shared = nn.Conv2d(8, 8, 3, padding=1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), shared, nn.BatchNorm2d(8), shared, nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = slac.convert_to_adder(model)
    assert isinstance(model[2], Adder2d) and model[4] is model[2]  # one layer: its parameters stay shared

    class TwoNames(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.norm, self.fc = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2)
            self.body = self.also_body = nn.Conv2d(8, 8, 3)

    named = slac.convert_to_adder(TwoNames(), warn_unnormalized=False)
    assert isinstance(named.body, Adder2d) and named.also_body is named.body
    # the first convolution and a 1x1 head are one layer each, kept wherever they are registered
    stem, head = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
    model = nn.Sequential(stem, stem, head, nn.Conv2d(8, 8, 3, padding=1), head)
    converted = slac.convert_to_adder(model, warn_unnormalized=False)
    assert [type(m).__name__ for m in converted] == ["Conv2d", "Conv2d", "Conv2d", "Adder2d", "Conv2d"]
    assert converted[0] is stem and converted[2] is head and converted[4] is head
    # two layers that share a weight tensor share the new one
    first, second = nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3)
    second.weight = first.weight
    tied = stem_and_head(nn.Sequential(first, second), nn.Conv2d(8, 8, 1))
    tied = slac.convert_to_adder(tied, warn_unnormalized=False)
    assert tied[2][0].weight is tied[2][1].weight and tied[2][0].bias is not tied[2][1].bias


def test_lazy_and_subclassed_linear_classifiers_are_the_classifier():
    class Head(nn.Linear):
        pass

    for head in (nn.LazyLinear(2), Head(8, 2), AdderLinear(8, 2)):
        model = stem_and_head(nn.Conv2d(8, 8, 1), nn.Sequential(nn.Flatten(), head))
        converted = slac.convert_to_adder(model, warn_unnormalized=False)
        assert isinstance(converted[2], Adder2d) and converted[4][1] is head
    lazy = stem_and_head(nn.LazyConv2d(8, 3), nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))
    with pytest.raises(UnconvertibleLayerError, match=r"2: .*uninitialized.*run one forward pass"):
        slac.convert_to_adder(lazy)
    lazy(torch.randn(1, 3, 8, 8))
    converted = slac.convert_to_adder(lazy, warn_unnormalized=False)
    assert isinstance(converted[2], Adder2d) and converted[2].in_channels == 8
    mlp = nn.Sequential(nn.Flatten(), nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UnconvertibleLayerError, match=r"1: .*run one forward pass"):
        slac.convert_to_adder(mlp, linear=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = slac.convert_to_adder(nn.Sequential(Head(4, 4), nn.ReLU(), Head(4, 2)), linear=True)
    assert isinstance(converted[0], AdderLinear) and type(converted[2]) is Head


def test_linear_layers_that_pytorch_multiplies_by_directly_stay_linear():
    # MultiheadAttention never calls its out_proj: it is a holder of weights, as in_proj_weight is
    attention = nn.MultiheadAttention(8, 2)
    converted = slac.convert_to_adder(
        nn.Sequential(nn.Linear(8, 8), attention), linear=True, keep_classifier=False
    )
    assert isinstance(converted[0], AdderLinear) and type(attention.out_proj) is not AdderLinear
    # TransformerEncoderLayer's eval-mode fast path multiplies by linear1.weight and linear2.weight
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    with pytest.raises(
        UnconvertibleLayerError, match=r"linear1: TransformerEncoderLayer's inference fast path"
    ):
        slac.convert_to_adder(layer, linear=True, keep_classifier=False)
    with pytest.warns(UserWarning, match="no layer was converted: unsupported='keep' left linear1, linear2"):
        kept = slac.convert_to_adder(layer, linear=True, keep_classifier=False, unsupported="keep")
    assert [type(kept.linear1), type(kept.linear2)] == [nn.Linear, nn.Linear]


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_layers_whose_computation_an_adder_layer_would_drop_are_named():
    class DoubledConv2d(nn.Conv2d):
        def forward(self, input):
            return 2 * super().forward(input)

    class RenamedConv2d(nn.Conv2d):  # nn.Conv2d's computation: converts
        pass

    for middle, why in (
        (DoubledConv2d(8, 8, 3), "DoubledConv2d computes its own forward"),
        (slac.nn.BinaryConv2d(8, 8, 3), "BinaryConv2d computes its own forward"),
        (nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3)), r"parametrized weight \(_WeightNorm\)"),
        (nn.utils.weight_norm(nn.Conv2d(8, 8, 3)), r"forward or backward hooks \(WeightNorm\)"),
    ):
        model = stem_and_head(middle, nn.Conv2d(8, 8, 1))
        with pytest.raises(UnconvertibleLayerError, match=rf"2: {why}.*unsupported='keep'"):
            slac.convert_to_adder(model)
        kept = slac.convert_to_adder(
            model, unsupported="keep", keep_classifier=False, warn_unnormalized=False
        )
        assert kept[2] is middle and isinstance(kept[4], Adder2d)
    model = stem_and_head(RenamedConv2d(8, 8, 3), nn.Conv2d(8, 8, 1))
    assert isinstance(slac.convert_to_adder(model)[2], Adder2d)
    # the layers the AdderNet layout keeps are not refused: a reflect-padded or custom stem stays as it is
    for stem in (nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), DoubledConv2d(3, 8, 3, padding=1)):
        model = nn.Sequential(stem, nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1))
        converted = slac.convert_to_adder(model)
        assert converted[0] is stem and isinstance(converted[1], Adder2d) and type(converted[3]) is nn.Conv2d


def test_the_adder_layers_keep_frozen_parameters_and_the_memory_format():
    model = small_cnn().to(memory_format=torch.channels_last)
    model[3].requires_grad_(False)
    model[6].bias.requires_grad_(False)
    converted = slac.convert_to_adder(model)
    assert not converted[3].weight.requires_grad and not converted[3].bias.requires_grad
    assert converted[6].weight.requires_grad and not converted[6].bias.requires_grad
    for adder in (converted[3], converted[6]):
        assert adder.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 1, 8, 8)
    assert torch.equal(converted(images), converted(images.contiguous(memory_format=torch.channels_last)))


def test_a_model_left_unchanged_is_warned_about():
    with pytest.warns(
        UserWarning, match=r"no layer was converted: AdderNet's layout keeps .* \(<root>; keep_first=False"
    ):
        assert type(slac.convert_to_adder(nn.Conv2d(3, 4, 3))) is nn.Conv2d
    with pytest.warns(UserWarning, match=r"no layer was converted: the model has no nn.Conv2d or nn.Linear"):
        slac.convert_to_adder(nn.Sequential(nn.Flatten(), nn.ReLU()), linear=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converting a converted model again: nothing to say
        twice = slac.convert_to_adder(slac.convert_to_adder(small_cnn()))
    assert [type(m) for m in twice if isinstance(m, (nn.Conv2d, Adder2d))] == [nn.Conv2d, Adder2d, Adder2d]


def test_invalid_arguments_and_distributed_wrappers_are_refused():
    for arguments, message in (
        ({"keep_first": "no"}, "keep_first must be True or False, got 'no'"),
        ({"linear": None}, "linear must be True or False, got None"),
        ({"backend": "cuda"}, "backend must be 'auto' or one of"),
    ):
        with pytest.raises(slac.errors.ConfigError, match=message):
            slac.convert_to_adder(nn.Sequential(nn.ReLU()), **arguments)
    distributed = pytest.importorskip("torch.distributed")
    if not distributed.is_available() or distributed.is_initialized():
        pytest.skip("needs torch.distributed and no process group of the test run's own")
    distributed.init_process_group("gloo", store=distributed.HashStore(), rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(small_cnn())
        with pytest.raises(
            UnconvertibleLayerError, match=r"<root> is a DistributedDataParallel.*before wrapping"
        ):
            slac.convert_to_adder(model)
    finally:
        distributed.destroy_process_group()
    assert isinstance(slac.convert_to_adder(nn.DataParallel(small_cnn())).module[3], Adder2d)

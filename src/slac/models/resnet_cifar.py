"""CIFAR ResNets (He et al. 2016, Sec. 4.2): ResNet-20 and ResNet-32, in CNN, ANN and BNN forms.

Structure (6n + 2 layers, n = 3 for ResNet-20, 5 for ResNet-32), as the official AdderNet resnet20.py
(huawei-noah/AdderNet):

    conv1 3x3, 16 (full precision) - BN - act
    layer1: n basic blocks, 16 channels, 32x32      block: conv3x3-BN-act-conv3x3-BN, + shortcut, act
    layer2: n blocks, 32 channels, 16x16 (the first with stride 2)
    layer3: n blocks, 64 channels, 8x8
    global average pool -> features (N, 64) -> head

The block convolutions are ``conv_layer(form)``: nn.Conv2d, Adder2d (BN after every adder layer) or
BinaryConv2d. Shortcuts where the shape changes:

- ``shortcut="conv"`` (default; He et al.'s option B, the official AdderNet code): 1x1 convolution of the
  form with stride 2, then BN. ANN and CNN differ only in the operator, and this is the structure whose
  operation counts match the paper's ResNet-32 row exactly (see ``slac.analysis.ops``).
- ``shortcut="identity"`` (option A, He et al.'s CIFAR networks): subsample and zero-pad, parameter-free.

Parameters (CNN form, linear head with bias, CIFAR-10), measured by tests/models:
ResNet-20 272,474 (option B) / 269,722 (option A; published 0.27M); ResNet-32 466,906 (option B,
0.47M) / 464,154 (option A; published 0.46M). Option B adds 2 x (1x1 conv + BN) = 2,752 parameters.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from slac.models._registry import register_model
from slac.models.base import ClassifierModel
from slac.models.layers import PadShortcut, act_layer, conv_layer, conv_shortcut

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32"]


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-act-conv3x3-BN, plus the shortcut, then act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        conv: Callable[..., nn.Module],
        act: Callable[[], nn.Module],
        shortcut: str,
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = act()
        self.conv2 = conv(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = act()
        if shortcut == "conv" or (stride == 1 and in_channels == out_channels):
            self.downsample = conv_shortcut(conv, in_channels, out_channels, stride)
        else:
            self.downsample = PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act2(out + shortcut)


class CifarResNet(ClassifierModel):
    """ResNet for 32x32 images with ``blocks`` basic blocks per stage (see the module docstring).

    Args:
        blocks: blocks per stage (3 stages).
        form: "cnn", "ann" or "bnn".
        num_classes, head, head_options, logit_norm: the classifier (``ClassifierModel.reset_classifier``).
        shortcut: "conv" (option B, 1x1 conv + BN) or "identity" (option A, zero padding).
        widths: channels of the three stages.
        in_chans: input channels.
        adder_backend: backend of the adder layers (ANN form).
    """

    def __init__(
        self,
        blocks: tuple[int, int, int],
        *,
        form: str = "ann",
        num_classes: int = 10,
        head: str = "linear",
        head_options: dict | None = None,
        logit_norm: bool | None = None,
        shortcut: str = "conv",
        widths: tuple[int, int, int] = (16, 32, 64),
        in_chans: int = 3,
        adder_backend: str = "auto",
    ) -> None:
        super().__init__(form)
        if shortcut not in ("conv", "identity"):
            raise ValueError(f"shortcut must be 'conv' (option B) or 'identity' (option A), got {shortcut!r}")
        self.shortcut = shortcut
        conv, act = conv_layer(form, adder_backend), act_layer(form)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act()
        in_channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(in_channels, width, stride if block == 0 else 1, conv, act, shortcut))
                in_channels = width
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = in_channels
        self.init_backbone()
        self.reset_classifier(num_classes, head, head_options, logit_norm)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (N, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, 8, 8)
        return self.global_pool(x)  # (N, 64)


_CIFAR = {"input_size": (3, 32, 32), "num_classes": 10, "dataset": "cifar10"}


@register_model(**_CIFAR)
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (He et al. 2016): 3 basic blocks per stage."""
    return CifarResNet((3, 3, 3), **kwargs)


@register_model(**_CIFAR)
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (He et al. 2016): 5 basic blocks per stage."""
    return CifarResNet((5, 5, 5), **kwargs)

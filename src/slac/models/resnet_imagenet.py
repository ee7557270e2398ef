"""ImageNet ResNets (He et al. 2016): ResNet-18 and ResNet-50, in CNN, ANN and BNN forms.

Structure as torchvision's and the official AdderNet resnet50.py (huawei-noah/AdderNet):

    conv1 7x7/2, 64 (full precision) - BN - act - maxpool 3x3/2
    layer1..layer4: basic blocks (ResNet-18: 2, 2, 2, 2) or bottlenecks (ResNet-50: 3, 4, 6, 3),
        widths 64, 128, 256, 512 (x4 for bottlenecks), stride 2 at the first block of layers 2-4
    adaptive average pool -> features (N, 512 or 2048) -> head

Block convolutions are ``conv_layer(form)`` with BN after each; downsampling shortcuts are 1x1
convolutions of the form with stride, then BN. Adaptive pooling lets the models run on small inputs
(tests use 64x64).

Where a bottleneck strides: ``stride_in_1x1=False`` (``resnet50``; torchvision, official AdderNet code,
"ResNet v1.5") puts the stride on the 3x3 convolution: 4.09 G multiply-accumulates at 224x224.
``stride_in_1x1=True`` (``resnet50_v1``; the original ResNet-50 of He et al. 2016 and its Caffe model)
puts it on the first 1x1 convolution: 3.86 G, the figure behind Table 2's ResNet-50 row (3.9G; the
v1.5 count, 4.1G, matches none of its entries). Both have the same 25,557,032 parameters (CNN form,
linear head).

Parameters (CNN form, linear head, 1000 classes), measured by tests/models: ResNet-18 11,689,512
(published 11.7M), ResNet-50 25,557,032 (published 25.6M).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from slac.models._registry import register_model
from slac.models.base import ClassifierModel
from slac.models.layers import act_layer, conv_layer, conv_shortcut
from slac.models.resnet_cifar import BasicBlock as CifarBasicBlock

__all__ = ["BasicBlock", "Bottleneck", "ImageNetResNet", "resnet18", "resnet50", "resnet50_v1"]


class BasicBlock(CifarBasicBlock):
    """conv3x3(stride)-BN-act-conv3x3-BN, plus the shortcut (1x1 conv + BN where the shape changes), then
    act: the CIFAR block with option-B shortcuts, in the ImageNet block interface."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        conv: Callable[..., nn.Module],
        act: Callable[[], nn.Module],
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__(in_channels, planes, stride, conv, act, shortcut="conv")


class Bottleneck(nn.Module):
    """conv1x1-BN-act-conv3x3-BN-act-conv1x1(x4)-BN, plus the shortcut, then act."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        conv: Callable[..., nn.Module],
        act: Callable[[], nn.Module],
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv(in_channels, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = act()
        self.conv2 = conv(planes, planes, 3, stride=stride_3x3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = act()
        self.conv3 = conv(planes, out_channels, 1, stride=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act3 = act()
        self.downsample = conv_shortcut(conv, in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act3(out + shortcut)


class ImageNetResNet(ClassifierModel):
    """ResNet for 224x224 images (see the module docstring).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (4 stages).
        form: "cnn", "ann" or "bnn".
        num_classes, head, head_options, logit_norm: the classifier (``ClassifierModel.reset_classifier``).
        stride_in_1x1: bottlenecks stride on their first 1x1 (v1) instead of the 3x3 (v1.5).
        in_chans: input channels.
        adder_backend: backend of the adder layers (ANN form).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        form: str = "ann",
        num_classes: int = 1000,
        head: str = "linear",
        head_options: dict | None = None,
        logit_norm: bool | None = None,
        stride_in_1x1: bool = False,
        in_chans: int = 3,
        adder_backend: str = "auto",
    ) -> None:
        super().__init__(form)
        self.stride_in_1x1 = stride_in_1x1
        conv, act = conv_layer(form, adder_backend), act_layer(form)
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = act()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(count):
                stage.append(block(in_channels, planes, stride if b == 0 else 1, conv, act, stride_in_1x1))
                in_channels = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.num_features = in_channels
        self.init_backbone()
        self.reset_classifier(num_classes, head, head_options, logit_norm)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, C, H/32, W/32)
        return self.global_pool(x)  # (N, C)


_IMAGENET = {"input_size": (3, 224, 224), "num_classes": 1000, "dataset": "imagenet"}


@register_model(**_IMAGENET)
def resnet18(**kwargs) -> ImageNetResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(**_IMAGENET)
def resnet50(**kwargs) -> ImageNetResNet:
    """ResNet-50 as torchvision and the official AdderNet code: bottlenecks (3, 4, 6, 3), 3x3 strides."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(**_IMAGENET)
def resnet50_v1(**kwargs) -> ImageNetResNet:
    """ResNet-50 of He et al. 2016 (stride on the first 1x1 of a bottleneck): Table 2's operation counts."""
    kwargs.setdefault("stride_in_1x1", True)
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), **kwargs)

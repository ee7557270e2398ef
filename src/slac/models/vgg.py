"""VGG-small (Cai et al. 2017, HWGQ; the paper's [2], as used by AdderNet) in CNN, ANN and BNN forms.

    conv1 3x3, 128 (full precision) - BN - act
    conv 3x3, 128 - BN - act, maxpool 2              32x32 -> 16x16
    conv 3x3, 256 - BN - act, conv 3x3, 256 - BN - act, maxpool 2   -> 8x8
    conv 3x3, 512 - BN - act, conv 3x3, 512 - BN - act, maxpool 2   -> 4x4
    features: flatten, (N, 512 * 4 * 4 = 8192) -> head (the single FC layer of VGG-small)

``global_pool="avg"`` averages the last maps instead (features (N, 512)), a lighter input for the density
heads. Multiply-accumulates at 32x32 (CNN form, linear head, 10 classes): 0.604 G in the five
convolutions after the first, 3.5 M in the first, 0.08 M in the classifier, 0.608 G in all; Table 1
prints 0.65G in all and 0.05G outside the binary/adder layers (see ``slac.analysis.ops`` for this
discrepancy). Parameters (CNN form, linear head, CIFAR-10): 4,660,106.
"""

from __future__ import annotations

from torch import Tensor, nn

from slac.models._registry import register_model
from slac.models.base import ClassifierModel
from slac.models.layers import act_layer, conv_layer

__all__ = ["VGGSmall", "vgg_small"]


class VGGSmall(ClassifierModel):
    """VGG-small (see the module docstring).

    Args:
        form: "cnn", "ann" or "bnn".
        num_classes, head, head_options, logit_norm: the classifier (``ClassifierModel.reset_classifier``).
        global_pool: "flatten" (VGG-small) or "avg" (global average pooling).
        img_size: input height and width (32 for CIFAR), a multiple of 8.
        in_chans: input channels.
        widths: channels of the three stages.
        adder_backend: backend of the adder layers (ANN form).
    """

    def __init__(
        self,
        *,
        form: str = "ann",
        num_classes: int = 10,
        head: str = "linear",
        head_options: dict | None = None,
        logit_norm: bool | None = None,
        global_pool: str = "flatten",
        img_size: int = 32,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (128, 256, 512),
        adder_backend: str = "auto",
    ) -> None:
        super().__init__(form)
        if global_pool not in ("flatten", "avg"):
            raise ValueError(f"global_pool must be 'flatten' or 'avg', got {global_pool!r}")
        if img_size < 8 or img_size % 8:
            raise ValueError(f"img_size must be a positive multiple of 8, got {img_size}")
        conv, act = conv_layer(form, adder_backend), act_layer(form)
        self.img_size, self.global_pool_type = img_size, global_pool
        layers: list[nn.Module] = []
        in_channels = in_chans
        for index, width in enumerate(widths):
            for repeat in range(2):
                layer = nn.Conv2d if index == 0 and repeat == 0 else conv  # first conv: full precision
                layers += [
                    layer(in_channels, width, 3, stride=1, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                ]
                layers.append(act())
                in_channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        if global_pool == "flatten":
            self.global_pool = nn.Flatten(1)
            self.num_features = widths[-1] * (img_size // 8) ** 2
        else:
            self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            self.num_features = widths[-1]
        self.init_backbone()
        self.reset_classifier(num_classes, head, head_options, logit_norm)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.global_pool(self.features(x))  # (N, 8192) at 32x32, or (N, 512)


@register_model(input_size=(3, 32, 32), num_classes=10, dataset="cifar10", fixed_input_size=True)
def vgg_small(**kwargs) -> VGGSmall:
    """VGG-small for 32x32 images: 2 x 128, 2 x 256, 2 x 512 3x3 convolutions, one classifier layer."""
    return VGGSmall(**kwargs)

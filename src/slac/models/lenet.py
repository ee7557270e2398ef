"""LeNet++ (Wen et al. 2016, "A discriminative feature learning approach"; the LGM paper's MNIST network)
for small grey images, in CNN, ANN and BNN forms: the network of the paper's Figure 3.

    conv1 5x5, 32 (full precision) - BN - act, conv 5x5, 32 - BN - act, maxpool 2
    conv 5x5, 64 - BN - act, conv 5x5, 64 - BN - act, maxpool 2
    conv 5x5, 128 - BN - act, conv 5x5, 128 - BN - act, maxpool 2
    flatten -> (N, 128 * (img_size // 8)^2): 1152 at 28x28 (MNIST), 128 at 8x8 (scikit-learn digits)
    optional feature layer (``feature_dim``, 2 for the Figure 3 plots): linear layer of the form - BN
    -> head

Differences from the Caffe LeNet++: BN after every layer (as AdderNet's LeNet-5-BN; required after adder
layers) and ReLU instead of PReLU, so that the three forms differ only in the operator; floor pooling
(28 -> 14 -> 7 -> 3; Caffe's ceil mode gives 4). The feature layer has no activation, so 2-D features
can lie anywhere in the plane; it is an adder (ANN) or binary (BNN) layer like the rest of the backbone.
"""

from __future__ import annotations

from torch import Tensor, nn

from slac.models._registry import register_model
from slac.models.base import ClassifierModel
from slac.models.layers import act_layer, conv_layer, linear_layer

__all__ = ["LeNetPlusPlus", "lenet"]


class LeNetPlusPlus(ClassifierModel):
    """LeNet++ (see the module docstring).

    Args:
        form: "cnn", "ann" or "bnn".
        num_classes, head, head_options, logit_norm: the classifier (``ClassifierModel.reset_classifier``).
        feature_dim: width of the optional feature layer before the head (None: the flattened maps).
        img_size: input height and width (28 for MNIST, 8 for the digits), >= 8.
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
        feature_dim: int | None = None,
        img_size: int = 28,
        in_chans: int = 1,
        widths: tuple[int, int, int] = (32, 64, 128),
        adder_backend: str = "auto",
    ) -> None:
        super().__init__(form)
        if img_size < 8:
            raise ValueError(f"img_size must be >= 8 (three 2x2 poolings), got {img_size}")
        conv, linear, act = (
            conv_layer(form, adder_backend),
            linear_layer(form, adder_backend),
            act_layer(form),
        )
        self.img_size = img_size
        layers: list[nn.Module] = []
        in_channels = in_chans
        for index, width in enumerate(widths):
            for repeat in range(2):
                first = index == 0 and repeat == 0
                layer = nn.Conv2d if first else conv  # the first convolution is full precision
                layers += [
                    layer(in_channels, width, 5, stride=1, padding=2, bias=False),
                    nn.BatchNorm2d(width),
                ]
                layers.append(act())
                in_channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        flat = widths[-1] * (img_size // 8) ** 2
        if feature_dim is None:
            self.embedding = nn.Identity()
            self.num_features = flat
        else:
            self.embedding = nn.Sequential(linear(flat, feature_dim, bias=False), nn.BatchNorm1d(feature_dim))
            self.num_features = feature_dim
        self.feature_dim = feature_dim
        self.init_backbone()
        self.reset_classifier(num_classes, head, head_options, logit_norm)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(1)  # (N, 128 * (img_size // 8)^2)
        return self.embedding(x)  # (N, num_features)


@register_model(input_size=(1, 28, 28), num_classes=10, dataset="mnist", fixed_input_size=True)
def lenet(**kwargs) -> LeNetPlusPlus:
    """LeNet++ for 28x28 grey images; ``feature_dim=2`` for the Figure 3 feature plots, ``img_size=8``
    for the scikit-learn digits."""
    return LeNetPlusPlus(**kwargs)

"""The contract every model of the zoo honours: a backbone that pools features, and a head.

    model = create_model("resnet20", form="ann", head="slac", num_classes=100)
    features = model.forward_features(x)          # (N, model.num_features): what the head sees
    logits = model.forward_head(features, targets) # (N, K); margin heads use targets in training
    loss = model.loss(features, logits, targets)   # the head's loss (HeadLoss: total, parts, weights)
    logits = model(x)                              # forward_head(forward_features(x))

The head replaces the network's last layer (paper Sec. 4.1: "replaces the last layer by the proposed SL
distributions parameters"); it is built by ``slac.heads.create_head`` on the pooled features.

Logit normalization (``logit_norm``): the official AdderNet classifier is a full-precision 1x1
convolution (a linear layer on the pooled features) followed by a BatchNorm of the logits (resnet20.py,
resnet50.py of huawei-noah/AdderNet). The ANN baseline of the tables is that network, so with
``logit_norm=None`` (the default) a ``BatchNorm1d(num_classes)`` follows the head exactly when the form
is "ann" and the head is "linear"; the linear head then has no bias (the BatchNorm's shift replaces it;
the official ResNet-20 classifier has none either). CNN and BNN forms, and every other head, give the
head's logits unchanged: the density heads' logits are log densities that a BatchNorm would distort.
Pass ``logit_norm=True/False`` to choose explicitly.
"""

from __future__ import annotations

from torch import Tensor, nn

from slac.heads import Head, create_head
from slac.heads.losses import HeadLoss
from slac.models.layers import check_form

__all__ = ["ClassifierModel"]


class ClassifierModel(nn.Module):
    """Base of the zoo's models. Subclasses build their backbone, set ``num_features``, call
    ``reset_classifier`` and implement ``forward_features``.

    Attributes: form ("cnn" | "ann" | "bnn"), num_features (d, the head's input width), num_classes,
    head_name, head (a ``slac.heads.Head``), logit_norm (``BatchNorm1d`` or ``Identity``).
    """

    num_features: int
    num_classes: int
    head_name: str
    head: Head

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = check_form(form)

    def reset_classifier(
        self,
        num_classes: int,
        head: str = "linear",
        head_options: dict | None = None,
        logit_norm: bool | None = None,
    ) -> None:
        """Replace the head (and the logit normalization, see the module docstring)."""
        options = dict(head_options or {})
        if logit_norm is None:
            logit_norm = self.form == "ann" and head == "linear"
        if logit_norm and head == "linear":
            options.setdefault("bias", False)
        self.num_classes = num_classes
        self.head_name = head
        self.head = create_head(head, self.num_features, num_classes, **options)
        self.logit_norm = nn.BatchNorm1d(num_classes) if logit_norm else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Pooled features (N, num_features), the head's input."""
        raise NotImplementedError

    def forward_head(self, features: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits (N, num_classes) of the head on ``features``; ``targets`` go to the head (margins)."""
        return self.logit_norm(self.head(features, targets))

    def forward(self, x: Tensor, targets: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x), targets)

    def loss(self, features: Tensor, logits: Tensor, targets: Tensor) -> HeadLoss:
        """The head's loss for ``logits = forward_head(features, targets)``."""
        return self.head.loss(features, logits, targets)

    def backbone_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every module outside the head and the logit normalization."""
        return [
            (name, module)
            for name, module in self.named_modules()
            if name and not name.startswith(("head", "logit_norm"))
        ]

    def init_backbone(self) -> None:
        """He-normal (fan_out) for full-precision and binary convolutions, BatchNorm to (1, 0); adder
        layers keep their own N(0, 1) (official AdderNet); the head initializes itself."""
        for _, module in self.backbone_modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def extra_repr(self) -> str:
        return f"form={self.form!r}, num_features={self.num_features}, head={self.head_name!r}"

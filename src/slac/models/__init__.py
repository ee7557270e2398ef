"""The paper's networks in three forms, behind a timm-style registry.

    from slac.models import create_model, list_models, model_cfg
    model = create_model("resnet20", form="ann", head="slac", num_classes=100)
    list_models()   # ['lenet', 'resnet18', 'resnet20', 'resnet32', 'resnet50', 'resnet50_v1', 'vgg_small']

Forms: "cnn" (multiplications), "ann" (adder layers, the paper's ANNs), "bnn" (binary weights and
activations with straight-through estimators, the BNN rows of Tables 1-2). In every form the first
convolution and the head are full precision (paper Sec. 4.1), and BN follows every other layer. The
head (``slac.heads``) replaces the last layer and sees the pooled features; the contract
(``forward_features``, ``forward_head``, ``forward``, ``loss``, ``num_features``) is in
``slac.models.base``. Operation counts: ``slac.analysis.count_ops`` and ``slac ops MODEL``.

Models (one file per family): ``lenet`` (LeNet++, 28x28 or 8x8 grey, optional 2-D feature layer),
``vgg_small``, ``resnet20``, ``resnet32`` (CIFAR, 32x32), ``resnet18``, ``resnet50`` (ImageNet, 224x224;
``resnet50_v1`` strides in the first 1x1 convolution like He et al.'s original, the count of Table 2).
Checkpoints of the official AdderNet code load with ``load_official_addernet`` (``slac.models.official``).
"""

from slac.models import lenet, resnet_cifar, resnet_imagenet, vgg  # noqa: F401  (registration)
from slac.models._registry import ModelCfg, create_model, list_models, model_cfg, register_model
from slac.models.base import ClassifierModel
from slac.models.layers import FORMS, act_layer, conv_layer, linear_layer
from slac.models.lenet import LeNetPlusPlus
from slac.models.official import load_official_addernet, official_to_slac, to_official_state_dict
from slac.models.resnet_cifar import CifarResNet
from slac.models.resnet_imagenet import ImageNetResNet
from slac.models.vgg import VGGSmall

__all__ = [
    "FORMS",
    "CifarResNet",
    "ClassifierModel",
    "ImageNetResNet",
    "LeNetPlusPlus",
    "ModelCfg",
    "VGGSmall",
    "act_layer",
    "conv_layer",
    "create_model",
    "linear_layer",
    "list_models",
    "load_official_addernet",
    "model_cfg",
    "official_to_slac",
    "register_model",
    "to_official_state_dict",
]

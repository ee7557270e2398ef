"""Layers: adder layers and the adaptive learning-rate scaling that trains them, binary (BNN) layers."""

from slac.nn.adder import Adder2d, AdderLayer, AdderLinear
from slac.nn.binary import BinaryConv2d, BinaryLinear, binarize_weight, sign_ste
from slac.nn.grad_scaling import adder_weights, scale_adder_grads

__all__ = [
    "Adder2d",
    "AdderLayer",
    "AdderLinear",
    "BinaryConv2d",
    "BinaryLinear",
    "adder_weights",
    "binarize_weight",
    "scale_adder_grads",
    "sign_ste",
]

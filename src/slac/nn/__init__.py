"""Layers: adder layers and the adaptive learning-rate scaling that trains them, binary (BNN) layers,
BatchNorm statistics recomputed from training batches."""

from slac.nn.adder import Adder2d, AdderLayer, AdderLinear
from slac.nn.batchnorm import batchnorm_layers, recalibrate_batchnorm, recalibrated_batchnorm
from slac.nn.binary import BinaryConv2d, BinaryLinear, binarize_weight, sign_ste
from slac.nn.convert import UnconvertibleLayerError, convert_to_adder
from slac.nn.grad_scaling import adder_weights, scale_adder_grads

__all__ = [
    "Adder2d",
    "AdderLayer",
    "AdderLinear",
    "BinaryConv2d",
    "BinaryLinear",
    "UnconvertibleLayerError",
    "adder_weights",
    "batchnorm_layers",
    "binarize_weight",
    "convert_to_adder",
    "recalibrate_batchnorm",
    "recalibrated_batchnorm",
    "scale_adder_grads",
    "sign_ste",
]

"""Layers: adder layers and the adaptive learning-rate scaling that trains them."""

from slac.nn.adder import Adder2d, AdderLayer, AdderLinear
from slac.nn.grad_scaling import adder_weights, scale_adder_grads

__all__ = ["Adder2d", "AdderLayer", "AdderLinear", "adder_weights", "scale_adder_grads"]

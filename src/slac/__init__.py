"""slac: Adder neural networks with Skew Laplace mixture classifiers.

Implements "Handling Long-tailed Feature Distribution in AdderNets" (Dong et al., NeurIPS 2021):
adder layers (negative L1 distance instead of a dot product) with fast CPU/GPU kernels, the Skew
Laplace mixture head with angle-based constraint (SLAC) and its baselines, the paper's models and
training recipes.
"""

__version__ = "0.1.0"

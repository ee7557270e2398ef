"""Benchmarks: speed and peak memory of the adder backends against conv2d and the official formulation."""

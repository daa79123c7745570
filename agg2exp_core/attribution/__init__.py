"""Voxel attributions of the aggregated class function of a 3-D segmentation model.

``explain(model, image, method, classes=None, **params)`` is the entry point (the
contract of docs/CONTRACTS.md); ``registry`` names the methods and their parameters,
``gradients`` holds VG, SmoothGrad and Integrated Gradients (one sample stream, one
backward pass per class), ``kernelshap`` the Shapley values of supervoxels and
``partitions`` the supervoxels themselves.
"""
from agg2exp_core.attribution.gradients import ig_quadrature
from agg2exp_core.attribution.registry import METHODS, explain

__all__ = ["METHODS", "explain", "ig_quadrature"]

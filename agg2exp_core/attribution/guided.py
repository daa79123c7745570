"""Guided Backprop (Springenberg et al. 2015), kept as a known negative control.

The map is the vanilla gradient of the aggregated class score (``gradients``, method
``vg``: same mask, aggregation, windows, sinks) with every rectifier's backward pass
*guided*: only positive error signals pass downwards,

    R_in = f'(x) · max(R_out, 0)        (Springenberg's rule: for ReLU, (x > 0)·(R_out > 0)·R_out)

Adebayo et al. (2018, "Sanity checks for saliency maps") show that Guided Backprop barely
changes when the model's weights are randomised: it reconstructs image structure (edges)
rather than what the model learned. It is offered so that the sanity checks have a method
that must fail them; do not read its maps as evidence about the model.

Activations: Captum's ``GuidedBackprop`` overrides only ``nn.ReLU`` modules, but MONAI's
UNet uses ``PReLU`` by default and nnU-Net / DynUNet ``LeakyReLU`` (in place). Here every
activation module of ``GUIDED_ACTIVATIONS`` gets a forward hook that passes its output
through an identity whose backward clamps the incoming gradient at zero; the module's own
derivative f'(x) (the leaky / learned slope on x < 0, 0 for ReLU) then applies as usual.
For ReLU this equals Captum's rule (tests/core/attribution/test_guided_backprop.py). For a
PReLU with a negative learned slope the gradient passed down may be negative (f' < 0);
Captum's form clamps after f' instead. Activations called as functions (``F.relu`` inside
a ``forward``) cannot be hooked: a network with no activation module is refused.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

from agg2exp_core.attribution import gradients, options
from agg2exp_core.attribution.target_layers import hookable
from agg2exp_core.errors import InputError

GUIDED_PARAMS = gradients.COMMON_PARAMS
GUIDED_ACTIVATIONS = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.RReLU,
                      torch.nn.ELU, torch.nn.CELU, torch.nn.SELU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Mish)


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only the positive part of the gradient through."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp_min(0)


def _guide(module, inputs, output):
    return _PositiveGradient.apply(output) if isinstance(output, torch.Tensor) else output


@contextmanager
def guided(model):
    """The model (an ``nn.Module`` or a ``Segmenter``) with guided activations (forward hooks, removed on exit)."""
    network = hookable(model)
    if isinstance(network, torch.jit.ScriptModule) or not isinstance(network, torch.nn.Module):
        raise InputError("guided_backprop", f"needs an nn.Module to hook; a {type(network).__name__} "
                                            "(e.g. a TorchScript model) has no activation modules to guide")
    activations = [m for m in network.modules() if isinstance(m, GUIDED_ACTIVATIONS)]
    if not activations:
        raise InputError("guided_backprop", f"{type(network).__name__} has no activation module "
                                            "(ReLU, LeakyReLU, PReLU, ...) to guide: functional activations cannot be hooked")
    handles = [m.register_forward_hook(_guide) for m in activations]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def check_guidable(model, params: dict) -> None:
    """Refuse, before any case is computed, a model whose activations cannot be guided."""
    with guided(model):
        pass


def guided_explain(model, image: torch.Tensor, classes: Sequence[int] | None = None, **params) -> torch.Tensor:
    """``[len(classes) or l, *S]`` Guided Backprop maps in ``image.dtype``, on CPU (parameters as ``vg``'s)."""
    options.reject_unknown("guided_backprop", params, GUIDED_PARAMS)
    with guided(model):
        return gradients.explain_gradients(model, image, "vg", classes=classes, **params)

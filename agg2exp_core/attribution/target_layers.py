"""The layer whose feature maps Seg-Grad-CAM weighs: named by the user, or a default per network.

The default is the last decoder block before the output head (the finest decoder feature
map the head reads), per class of network the tool loads:

- MONAI ``UNet``: ``model.1``, the outermost skip connection (``channels[0]`` features of the
  first encoder block concatenated with the decoder's, at the first stride's resolution);
  ``model.2`` is the head (a transposed convolution straight to the class channels).
- MONAI ``DynUNet``: the last ``upsamples`` block; ``output_block`` is the head.
- MONAI ``BasicUNet``: ``upcat_1``; ``SegResNet``: the last ``up_layers`` block;
  ``SwinUNETR``: ``decoder1``; ``UNETR``: ``decoder2`` (each followed by its head).
- nnU-Net's ``PlainConvUNet`` / ``ResidualEncoderUNet`` (any network with
  ``decoder.stages`` and ``decoder.seg_layers``): the last ``decoder.stages`` block.
- nnU-Net folds (``NnUNetNetwork``): that layer in every fold; Seg-Grad-CAM adds the folds'
  weighted maps before its ReLU (the ensemble's logit is the mean of the folds'). With test-time
  mirroring each layer runs once per mirrored copy (``call_frames``): each copy's weighted map is
  flipped back before the sum.

A MONAI bundle's ``network_def`` is one of these classes (or names its layer by ``layer``).
"""
from __future__ import annotations

from typing import Callable

import torch

from agg2exp_core.errors import InputError


def _last(prefix: str, blocks) -> str:
    return f"{prefix}.{len(blocks) - 1}"


# network class name -> the default layer's name in that network
DEFAULT_LAYERS: dict[str, Callable[[torch.nn.Module], str]] = {
    "UNet": lambda net: "model.1",
    "DynUNet": lambda net: _last("upsamples", net.upsamples),
    "BasicUNet": lambda net: "upcat_1",
    "BasicUnet": lambda net: "upcat_1",
    "SegResNet": lambda net: _last("up_layers", net.up_layers),
    "SwinUNETR": lambda net: "decoder1",
    "UNETR": lambda net: "decoder2",
}


def default_layer_names(network: torch.nn.Module) -> list[str]:
    """The default target layer(s) of a network (see the module); an ``InputError`` for others."""
    folds = getattr(network, "folds", None)
    if isinstance(folds, torch.nn.ModuleList) and hasattr(network, "mirror_axes"):  # nnU-Net's fold ensemble
        return [f"folds.{i}.{name}" for i, fold in enumerate(folds) for name in default_layer_names(fold)]
    kind = type(network).__name__
    if kind in DEFAULT_LAYERS:
        return [DEFAULT_LAYERS[kind](network)]
    decoder = getattr(network, "decoder", None)
    if isinstance(getattr(decoder, "stages", None), torch.nn.ModuleList) and hasattr(decoder, "seg_layers"):
        return [_last("decoder.stages", decoder.stages)]  # nnU-Net's dynamic_network_architectures
    raise InputError("layer", f"no default Seg-Grad-CAM layer for a {kind}: name one with the 'layer' parameter "
                              f"(its top-level modules: {', '.join(_top_level(network)) or 'none'})")


def call_frames(network) -> list[tuple[int, ...]]:
    """Tensor dims flipped in each call of a target layer within one forward pass, in call order:
    ``[()]`` (one plain call) except for nnU-Net's mirrored ensembles (the plain copy, then each flip)."""
    flips = getattr(network, "flips", None) if hasattr(network, "mirror_axes") else None
    return [(), *flips] if flips else [()]


def hookable(model):
    """The ``nn.Module`` whose layers get hooks: a ``Segmenter``'s network, else the model itself."""
    network = getattr(model, "network", None)
    return network if isinstance(network, torch.nn.Module) and not isinstance(model, torch.nn.Module) else model


def check_layer(model, params: dict) -> None:
    """Resolve a run's ``layer`` on its model before any case is computed (bad names fail up front)."""
    resolve_layers(hookable(model), params.get("layer"))


def resolve_layers(network, layer: str | list[str] | tuple[str, ...] | None) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of the target layer(s): ``layer`` by name (one or several), else the default."""
    if isinstance(network, torch.jit.ScriptModule) or not isinstance(network, torch.nn.Module):
        raise InputError("layer", f"Seg-Grad-CAM hooks a layer of an nn.Module; a {type(network).__name__} "
                                  "(e.g. a TorchScript model) has none to hook")
    if layer is None:
        names = default_layer_names(network)
    elif isinstance(layer, str):
        names = [layer]
    elif isinstance(layer, (list, tuple)) and layer and all(isinstance(n, str) for n in layer):
        names = list(layer)
    else:
        raise InputError("layer", f"expected a module name or a list of names, got {layer!r}")
    modules = dict(network.named_modules())
    for name in names:
        if name not in modules or not name:
            raise InputError("layer", f"no module named {name!r} in {type(network).__name__} "
                                      f"(its top-level modules: {', '.join(_top_level(network))})")
    return [(name, modules[name]) for name in names]


def _top_level(network: torch.nn.Module) -> list[str]:
    return [name for name, _ in network.named_children()]

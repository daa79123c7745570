"""MONAI 3-D segmentation networks by name (``{"name", "params"}`` configs).

The networks people train with MONAI: UNet, BasicUNet, SwinUNETR, SegResNet, DynUNet,
UNETR. ``params`` are the network's own keyword arguments over the defaults below; the
input has one channel and the output one per label. UNETR's ``img_size`` defaults to the
sliding window's size (its position embedding is fixed to it).
"""
from __future__ import annotations

from typing import Sequence

import torch

# Defaults per network name; the paper's model is SwinUNETR(feature_size=48) on 96^3 patches.
NETWORK_DEFAULTS: dict[str, dict] = {
    "unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2},
    "basicunet": {"features": [16, 16, 32, 64, 128, 16]},
    "swinunetr": {"feature_size": 48},
    "segresnet": {"init_filters": 16},
    "dynunet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "upsample_kernel_size": [2, 2, 2]},
    "unetr": {"feature_size": 16},
}
PAPER_NETWORK = {"name": "swinunetr", "params": {"feature_size": 48}, "roi_size": [96, 96, 96]}


def build_network(config: dict, n_classes: int, roi_size: Sequence[int] | None = None) -> torch.nn.Module:
    """A MONAI 3-D network ``[B,1,*S] -> [B,n_classes,*S]`` from ``{"name", "params"}``."""
    from monai.networks import nets

    name = str(config.get("name", "")).lower()
    if name not in NETWORK_DEFAULTS:
        raise ValueError(f"unknown network '{config.get('name')}' (choose from {', '.join(NETWORK_DEFAULTS)})")
    params = {**NETWORK_DEFAULTS[name], **(config.get("params") or {})}
    io = {"spatial_dims": 3, "in_channels": 1, "out_channels": n_classes}
    if name == "unet":
        return nets.UNet(**io, **params)
    if name == "basicunet":
        return nets.BasicUNet(**io, **params)
    if name == "swinunetr":
        return nets.SwinUNETR(**io, **params)
    if name == "segresnet":
        return nets.SegResNet(**io, **params)
    if name == "dynunet":
        return nets.DynUNet(**io, **params)
    img_size = params.pop("img_size", None) or roi_size or config.get("roi_size")
    if img_size is None:
        raise ValueError("unetr needs img_size (its window size)")
    return nets.UNETR(**io, img_size=tuple(int(s) for s in img_size), **params)

"""MONAI 3-D segmentation networks by name (``{"name", "params"}`` configs)."""
from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet, SwinUNETR, UNet

# Defaults per network name; the paper's model is SwinUNETR(feature_size=48) on 96^3 patches.
NETWORK_DEFAULTS: dict[str, dict] = {
    "unet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2},
    "basicunet": {"features": [16, 16, 32, 64, 128, 16]},
    "swinunetr": {"feature_size": 48},
}
PAPER_NETWORK = {"name": "swinunetr", "params": {"feature_size": 48}, "roi_size": [96, 96, 96]}


def build_network(config: dict, n_classes: int) -> torch.nn.Module:
    """A MONAI 3-D network ``[B,1,*S] -> [B,n_classes,*S]`` from ``{"name", "params"}``."""
    name = str(config.get("name", "")).lower()
    if name not in NETWORK_DEFAULTS:
        raise ValueError(f"unknown network '{config.get('name')}' (choose from {', '.join(NETWORK_DEFAULTS)})")
    params = {**NETWORK_DEFAULTS[name], **config.get("params", {})}
    if name == "unet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=n_classes, **params)
    if name == "basicunet":
        return BasicUNet(spatial_dims=3, in_channels=1, out_channels=n_classes, **params)
    return SwinUNETR(in_channels=1, out_channels=n_classes, spatial_dims=3, **params)

"""Networks, self-describing checkpoints, sliding-window inference and Dice (all MONAI).

A checkpoint holds the weights together with everything needed to use them: the
network config, the label names (channel order) and the preprocessing. A real model's
plain state dict can be wrapped with ``load_checkpoint(..., network=..., label_names=...)``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_dice
from monai.networks.nets import BasicUNet, SwinUNETR, UNet
from monai.networks.utils import one_hot

from agg2exp_core.cohort import Preprocessing
from agg2exp_core.errors import InputError

CHECKPOINT_FORMAT = "agg2exp-checkpoint/1"

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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Segmenter:
    """A loaded segmentation model: network plus its labels, preprocessing and inference setup."""

    network: torch.nn.Module
    network_config: dict
    label_names: list[str]
    preprocessing: Preprocessing
    roi_size: tuple[int, int, int]
    overlap: float = 0.25
    sw_batch_size: int = 2
    checkpoint_sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Network logits of a batch ``[B,1,*S]`` (one window; attribution uses this)."""
        return self.network(x)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[l,*S]`` (on CPU) of an image ``[1,*S]`` by MONAI sliding-window inference."""
        x = image[None].to(self.device, dtype=torch.float32)
        logits = sliding_window_inference(x, self.roi_size, self.sw_batch_size, self.network,
                                          overlap=self.overlap, mode="gaussian")
        return torch.as_tensor(logits)[0].float().cpu()


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(0)


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice of every class ``[n_classes]`` (MONAI); NaN where the class is absent from the truth."""
    p = one_hot(pred[None, None].long(), n_classes)
    t = one_hot(label[None, None].long(), n_classes)
    return compute_dice(p, t, include_background=True, ignore_empty=True)[0].cpu().numpy()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, network: torch.nn.Module, network_config: dict,
                    label_names: Sequence[str], preprocessing: Preprocessing,
                    roi_size: Sequence[int], overlap: float = 0.25, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "network": network_config, "label_names": list(label_names),
                "preprocessing": preprocessing.to_dict(),
                "inference": {"roi_size": [int(r) for r in roi_size], "overlap": float(overlap)},
                "extra": extra or {}, "state_dict": state}, path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "auto", *,
                    network: dict | None = None, label_names: Sequence[str] | None = None,
                    preprocessing: Preprocessing | None = None, roi_size: Sequence[int] | None = None,
                    overlap: float | None = None) -> Segmenter:
    """Load a self-describing checkpoint, or a plain state dict given its network config and labels.

    Keyword arguments override (or, for a plain state dict, supply) the stored description;
    any mismatch between labels, config and weights is an ``InputError`` naming the file.
    """
    path = Path(path)
    blob = _read_checkpoint(path)
    described = isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT
    state = blob["state_dict"] if described else blob
    config = network or (blob.get("network") if described else None)
    names = list(label_names or (blob.get("label_names") if described else []) or [])
    if not config or not names:
        raise InputError(path, "plain state dict: give the network config and the label names")
    if described and label_names is not None and len(label_names) != len(blob["label_names"]):
        raise InputError(path, f"checkpoint has {len(blob['label_names'])} labels, expected {len(label_names)}")
    inference = blob.get("inference", {}) if described else {}
    prep = preprocessing or Preprocessing.from_dict(blob.get("preprocessing", {}) if described else {})
    try:
        net = build_network(config, len(names))
        net.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(path, f"weights do not match network config {config} with {len(names)} labels ({first})") from None
    dev = resolve_device(device)
    net = net.to(dev).eval()
    return Segmenter(network=net, network_config=config, label_names=names, preprocessing=prep,
                     roi_size=tuple(int(r) for r in (roi_size or inference.get("roi_size") or config.get("roi_size") or (96, 96, 96))),
                     overlap=float(overlap if overlap is not None else inference.get("overlap", 0.25)),
                     checkpoint_sha256=file_sha256(path), device=dev)


def _read_checkpoint(path: Path):
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise InputError(path, f"cannot read checkpoint ({type(err).__name__})") from None

"""Self-describing checkpoints: weights together with the network config, labels, preprocessing
and sliding-window settings; a plain state dict is described by arguments instead.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from agg2exp_core.errors import InputError
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.inference import WindowSpec
from agg2exp_core.models.networks import build_network
from agg2exp_core.models.segmenter import Segmenter

CHECKPOINT_FORMAT = "agg2exp-checkpoint/1"
PREDICT_SW_BATCH = 2  # windows per network call of a loaded model


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
                    overlap: float | None = None, window: WindowSpec | None = None,
                    whole_volume: bool = False, blob=None) -> Segmenter:
    """Load a self-describing checkpoint, or a plain state dict given its network config and labels.

    Keyword arguments override (or, for a plain state dict, supply) the stored description
    (``window`` replaces ``roi_size``/``overlap``; ``whole_volume`` = no sliding window);
    any mismatch between labels, config and weights is an ``InputError`` naming the file.
    ``blob``: the file's content when the caller has read it already.
    """
    path = Path(path)
    blob = read_checkpoint(path) if blob is None else blob
    described = isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT
    state = blob["state_dict"] if described else unwrap_state_dict(blob)
    config = network or (blob.get("network") if described else None)
    names = list(label_names or (blob.get("label_names") if described else []) or [])
    if not config or not names:
        raise InputError(path, "plain state dict: give the network (--network NAME) and the label names (--labels FILE)")
    if described and label_names is not None and len(label_names) != len(blob["label_names"]):
        raise InputError(path, f"checkpoint has {len(blob['label_names'])} labels, expected {len(label_names)}")
    inference = blob.get("inference", {}) if described else {}
    prep = preprocessing or Preprocessing.from_dict(blob.get("preprocessing", {}) if described else {})
    roi = tuple(int(r) for r in (roi_size or inference.get("roi_size") or config.get("roi_size") or (96, 96, 96)))
    if window is None and not whole_volume:
        window = WindowSpec(roi, float(overlap if overlap is not None else inference.get("overlap", 0.25)),
                            sw_batch_size=PREDICT_SW_BATCH)
    try:
        net = build_network(config, len(names), roi_size=window.roi_size if window is not None else roi)
        net.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(path, f"weights do not match network config {config} with {len(names)} labels ({first})") from None
    dev = resolve_device(device)
    net = net.to(dev).eval()
    return Segmenter(network=net, network_config=config, label_names=names, preprocessing=prep,
                     window=None if whole_volume else window, checkpoint_sha256=file_sha256(path), device=dev,
                     source="agg2exp" if described else "state_dict")


STATE_DICT_KEYS = ("state_dict", "model", "network_weights", "model_state_dict")


def unwrap_state_dict(blob):
    """The tensors of a plain state dict, also when saved as ``{"state_dict": ...}`` (Lightning),
    ``{"model": ...}`` (MONAI's CheckpointSaver) or ``{"network_weights": ...}`` (nnU-Net)."""
    if isinstance(blob, dict) and not any(isinstance(v, torch.Tensor) for v in blob.values()):
        for key in STATE_DICT_KEYS:
            if isinstance(blob.get(key), dict):
                return blob[key]
    return blob


def read_checkpoint(path: Path, trust_code: bool = False):
    """The file's content, weights-only unless ``trust_code`` (``models.trust``)."""
    from agg2exp_core.models.trust import load_tensors

    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        return load_tensors(path, trust_code)
    except InputError:
        raise
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise InputError(path, f"cannot read checkpoint ({type(err).__name__})") from None

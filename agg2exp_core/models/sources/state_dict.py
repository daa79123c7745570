"""Our self-describing checkpoints and plain state dicts of MONAI networks.

A plain state dict carries only tensors: the network comes from ``network`` (a name of
``models.networks``) and ``network_params`` (its keyword arguments as JSON), the label
names from ``labels`` (a labels file or a sidecar, which may also give the
preprocessing, the window and the network), or from a sidecar next to the weights.
"""
from __future__ import annotations

from pathlib import Path

from agg2exp_core.errors import InputError
from agg2exp_core.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, load_checkpoint
from agg2exp_core.models.networks import NETWORK_DEFAULTS
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.models.sources.common import Description, fingerprint, sidecar_of


def load_weights(path: Path, device="auto", network: str | None = None, network_params: dict | None = None,
                 given: Description = Description(), trust_code: bool = False) -> Segmenter:
    blob = read_checkpoint(path, trust_code)
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        config = {"name": network, "params": network_params or {}} if network else None
        return load_checkpoint(path, device, network=config, label_names=given.labels,
                               preprocessing=given.preprocessing, window=given.window,
                               whole_volume=given.whole_volume, blob=blob)
    described = given.over(sidecar_of(path))
    if network:
        if network.lower() not in NETWORK_DEFAULTS:
            raise InputError("--network", f"unknown network {network!r} (choose from {', '.join(NETWORK_DEFAULTS)})")
        config = {"name": network.lower(), "params": dict(network_params or {})}
    else:
        config = described.network
    if not config or not described.labels:
        missing = " and ".join(m for m, ok in (("--network NAME", config), ("--labels FILE", described.labels)) if not ok)
        raise InputError(path, f"plain state dict: give {missing} (or a sidecar {path.with_suffix('.json').name})")
    model = load_checkpoint(path, device, network=config, label_names=described.labels,
                            preprocessing=described.preprocessing, window=described.window,
                            whole_volume=described.whole_volume, blob=blob)
    files = [path] + ([described.source] if described.source else [])
    model.checkpoint_sha256 = fingerprint(files, {"network": config})
    return model

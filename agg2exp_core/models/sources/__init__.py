"""Every model format behind one call: ``load_model(path, ...) -> Segmenter``.

Recognised by what lies at ``path``:

- a folder with ``plans.json`` / ``dataset.json``: an nnU-Net v2 trained-model folder
  (``fold``, ``checkpoint_name``, ``mirroring``, ``tile_step_size``), ``sources.nnunet``;
- a folder with ``configs/``: a MONAI bundle, ``sources.bundle``;
- a TorchScript archive with a sidecar JSON (or ``labels``), ``sources.torchscript``;
- our self-describing ``.pt`` (``models.checkpoint``), or a plain state dict of a MONAI
  network given ``network`` (unet, basicunet, swinunetr, segresnet, dynunet, unetr),
  ``network_params`` and ``labels`` (or a sidecar).

Whatever the source, the Segmenter has label names, a preprocessing (``io.preprocessing``
protocol: grid, intensity space, air value) and a window, so every explainer, the
evaluation and the pipeline use it the same way. ``ModelSpec`` is the same request as a
small picklable value (what a worker process needs to load the model itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from agg2exp_core.errors import InputError
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.models.sources.common import Description, check_names, read_description

FORMATS = "a self-describing .pt, a plain state dict (with --network, --labels), TorchScript, " \
          "a MONAI bundle folder or an nnU-Net v2 trained-model folder"


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: its path and the options of its format (see ``load_model``)."""

    path: Path
    fold: str | int | Sequence[int] | None = field(default=None, hash=False)
    checkpoint_name: str | None = None
    network: str | None = None
    network_params: dict | None = field(default=None, hash=False)
    labels: str | Path | Sequence[str] | None = None
    mirroring: bool = False
    tile_step_size: float | None = None
    trust_code: bool = False

    def options(self) -> dict:
        return {"fold": self.fold, "checkpoint_name": self.checkpoint_name, "network": self.network,
                "network_params": self.network_params, "labels": self.labels, "mirroring": self.mirroring,
                "tile_step_size": self.tile_step_size, "trust_code": self.trust_code}


def load_model(model: str | Path | ModelSpec | Segmenter, *, device="auto", fold=None, checkpoint_name=None,
               network=None, network_params=None, labels=None, mirroring=False, tile_step_size=None,
               trust_code=False) -> Segmenter:
    """Load a model of any supported format as a ``Segmenter`` (a Segmenter is returned as it is).

    ``trust_code``: the model's files may run code (a pickled checkpoint, a bundle config's
    ``$`` expressions and any ``_target_``); without it such a file is refused in one line
    (``models.trust``). TorchScript is loaded either way and is not a sandbox.

    Options that do not apply to the format found are an ``InputError`` (e.g. ``fold`` for
    a bundle), so nothing is silently ignored.
    """
    if isinstance(model, Segmenter):
        return model
    given = {"fold": fold, "checkpoint_name": checkpoint_name, "network": network, "network_params": network_params,
             "labels": labels, "mirroring": mirroring, "tile_step_size": tile_step_size, "trust_code": trust_code}
    if isinstance(model, ModelSpec):
        given = {k: (v if _is_set(v) else model.options()[k]) for k, v in given.items()}
        model = model.path
    path = Path(model)
    kind = detect_source(path)
    _reject_options(kind, given)
    description = _description(given["labels"])
    if kind == "nnunet":
        from agg2exp_core.models.sources.nnunet import load_nnunet

        return load_nnunet(path, device, given["fold"], given["checkpoint_name"], given["mirroring"],
                           given["tile_step_size"], description, given["trust_code"])
    if kind == "bundle":
        from agg2exp_core.models.sources.bundle import load_bundle

        return load_bundle(path, device, description, given["trust_code"])
    if kind == "torchscript":
        from agg2exp_core.models.sources.torchscript import load_torchscript

        return load_torchscript(path, device, description)
    from agg2exp_core.models.sources.state_dict import load_weights

    return load_weights(path, device, given["network"], given["network_params"], description, given["trust_code"])


def detect_source(path: Path) -> str:
    """``nnunet``, ``bundle``, ``torchscript`` or ``checkpoint`` (ours or a plain state dict)."""
    if path.is_dir():
        if (path / "plans.json").exists() or (path / "dataset.json").exists():
            return "nnunet"
        if (path / "configs").is_dir():
            return "bundle"
        raise InputError(path, "not a model folder: expected a MONAI bundle (configs/inference.json, "
                               "configs/metadata.json, models/model.pt) or an nnU-Net v2 trained-model folder "
                               "(plans.json, dataset.json, fold_K/checkpoint_final.pth)")
    if not path.exists():
        raise InputError(path, f"checkpoint file not found (a model is {FORMATS})")
    from agg2exp_core.models.sources.torchscript import is_torchscript

    return "torchscript" if is_torchscript(path) else "checkpoint"


APPLIES = {"fold": {"nnunet"}, "checkpoint_name": {"nnunet"}, "mirroring": {"nnunet"},
           "tile_step_size": {"nnunet"}, "network": {"checkpoint"}, "network_params": {"checkpoint"}}
FLAGS = {"fold": "--fold", "checkpoint_name": "--checkpoint-name", "mirroring": "--mirroring",
         "tile_step_size": "--tile-step-size", "network": "--network", "network_params": "--network-params"}


def _reject_options(kind: str, given: dict) -> None:
    for name, kinds in APPLIES.items():
        if _is_set(given[name]) and kind not in kinds:
            only = "nnU-Net folders" if kinds == {"nnunet"} else "plain state dicts"
            raise InputError(FLAGS[name], f"applies to {only} only, not to a {_KIND_NAMES[kind]}")
    if given["network_params"] is not None and not given["network"]:
        raise InputError("--network-params", "needs --network NAME")


def _is_set(value) -> bool:
    """Given by the caller: fold=0 is set (``0 in (None, False)`` would say it is not)."""
    return value is not None and value is not False


_KIND_NAMES = {"nnunet": "nnU-Net folder", "bundle": "MONAI bundle", "torchscript": "TorchScript file",
               "checkpoint": "checkpoint"}


def _description(labels) -> Description:
    """``labels``: a labels / sidecar file, or the names themselves (Python API)."""
    if labels is None:
        return Description()
    if isinstance(labels, (str, Path)):
        return read_description(labels)
    return Description(labels=check_names("labels", [str(n) for n in labels]))


__all__ = ["FORMATS", "ModelSpec", "detect_source", "load_model"]

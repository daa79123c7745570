"""What the model sources share: label files, sidecar descriptions, fingerprints of folders.

A *sidecar* describes a TorchScript file or a plain state dict (which carry no labels,
preprocessing or window of their own): a JSON file next to it (``model.ts`` ->
``model.json`` or ``model.ts.json``) or given by ``--labels``::

    {"labels": ["background", "liver", ...],
     "preprocessing": {"spacing": [1.5, 1.5, 1.5], "orientation": "RAS",
                       "normalization": "window", "hu_window": [-1024, 1024]},
     "window": {"roi_size": [96, 96, 96], "overlap": 0.25},   # MONAI's settings; null: whole volume
     "network": {"name": "swinunetr", "params": {"feature_size": 48}}}   # state dicts only

A labels file is such a JSON, a JSON list of names, a JSON object ``{"0": "background",
...}`` (MONAI's ``channel_def``), or a text file with one name per line.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from agg2exp_core.errors import InputError
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.inference import WindowSpec

PREDICT_SW_BATCH = 2  # windows per network call of a loaded model


@dataclass(frozen=True)
class Description:
    """What a sidecar (or ``--labels``) says about a model; None where it says nothing."""

    labels: list[str] | None = None
    preprocessing: Preprocessing | None = None
    window: WindowSpec | None = None
    whole_volume: bool = False       # "window": null
    network: dict | None = None
    source: Path | None = None

    def over(self, other: "Description") -> "Description":
        """This description, completed by ``other`` where this one says nothing."""
        return Description(self.labels or other.labels, self.preprocessing or other.preprocessing,
                           self.window or other.window, self.whole_volume or other.whole_volume,
                           self.network or other.network, self.source or other.source)

    def to_json(self) -> dict:
        return {"labels": self.labels, "network": self.network,
                "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
                "window": self.window.to_dict() if self.window else None, "whole_volume": self.whole_volume}


def read_description(path: str | Path) -> Description:
    """A sidecar JSON or a labels file (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "labels file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() != ".json":
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return Description(labels=check_names(path, names), source=path)
    try:
        blob = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if isinstance(blob, list):
        return Description(labels=check_names(path, blob), source=path)
    if not isinstance(blob, dict):
        raise InputError(path, "expected a JSON list of label names or an object")
    if "labels" not in blob and all(str(k).isdigit() for k in blob):
        return Description(labels=channel_names(path, blob), source=path)
    return _sidecar(path, blob)


def _sidecar(path: Path, blob: dict) -> Description:
    unknown = sorted(set(blob) - {"labels", "preprocessing", "window", "network"})
    if unknown:
        raise InputError(path, f"unknown key {unknown[0]!r} (expected labels, preprocessing, window, network)")
    labels = blob.get("labels")
    if isinstance(labels, dict):
        labels = channel_names(path, labels)
    elif labels is not None:
        labels = check_names(path, labels)
    try:
        prep = Preprocessing.from_dict(blob["preprocessing"]) if blob.get("preprocessing") else None
        window = blob.get("window")
        spec = None
        if isinstance(window, dict):
            window = {k: v for k, v in window.items() if k != "kind"}
            spec = WindowSpec(**{**window, "roi_size": tuple(window.get("roi_size") or ())})
        elif window is not None:
            raise InputError("window", "expected an object of MONAI sliding-window settings or null")
    except (InputError, TypeError, ValueError) as err:
        raise InputError(path, f"bad description: {err}") from None
    network = blob.get("network")
    if network is not None and not (isinstance(network, dict) and network.get("name")):
        raise InputError(path, 'network: expected {"name": ..., "params": {...}}')
    return Description(labels, prep, spec, "window" in blob and blob["window"] is None, network, path)


def channel_names(path, mapping: Mapping) -> list[str]:
    """Names in channel order from ``{"0": "background", "1": ...}`` (ids 0..l-1, each once)."""
    try:
        ids = sorted((int(k), str(v)) for k, v in mapping.items())
    except (TypeError, ValueError):
        raise InputError(path, "label ids must be integers") from None
    if [i for i, _ in ids] != list(range(len(ids))):
        raise InputError(path, f"label ids must be 0..{len(ids) - 1}, got {[i for i, _ in ids]}")
    return check_names(path, [n for _, n in ids])


def check_names(path, names) -> list[str]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(path, "expected a non-empty list of label names")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(path, f"duplicate label name {duplicates[0]!r}")
    if len(names) < 2:
        raise InputError(path, "a segmentation model has at least two labels (background and one class)")
    return [n.strip() for n in names]


def sidecar_of(model_file: Path) -> Description:
    """The sidecar next to a model file (``model.json`` or ``model.ts.json``), if any."""
    for candidate in (model_file.with_suffix(".json"), model_file.with_name(model_file.name + ".json")):
        if candidate.is_file() and candidate != model_file:
            return read_description(candidate)
    return Description()


def fingerprint(files: Iterable[Path], options: Mapping | None = None) -> str:
    """SHA-256 over the files' bytes and the loading options (what fixes the model's function)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    digest.update(json.dumps(options or {}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else an ``InputError`` naming it and what it should hold."""
    if not path.exists():
        raise InputError(path, f"missing: {what}")
    return path


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__

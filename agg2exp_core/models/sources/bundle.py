"""MONAI bundles (the MONAI Model Zoo format): a folder with ``configs/inference.json``
(or ``.yaml``), ``configs/metadata.json`` and ``models/model.pt``.

The network is the bundle's ``network_def`` parsed by ``monai.bundle.ConfigParser`` with
the weights of ``models/model.pt`` (or the TorchScript ``models/model.ts``); label names
come from the metadata's ``network_data_format.outputs.pred.channel_def``; the bundle's
``preprocessing`` transforms (its loader left out: the scan arrives read) make the
network input, and its ``inferer`` (``SlidingWindowInferer`` or ``SimpleInferer``) the
window. Label maps and masks follow the image onto the grid the transforms produced
(nearest neighbour, MONAI's ``SpatialResample``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.io.preprocessing import GridMemo, Intensity, IntensityViews
from agg2exp_core.models.checkpoint import unwrap_state_dict
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.inference import WindowSpec
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.models.sources.common import Description, channel_names, fingerprint, first_line, require
from agg2exp_core.models.trust import load_tensors

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
LAYOUT = "a MONAI bundle needs configs/inference.json (or .yaml), configs/metadata.json and models/model.pt"


@dataclass
class BundlePreprocessing(IntensityViews):
    """A bundle's preprocessing transforms on a scan that is already read."""

    transforms: object                 # monai.transforms.Compose without its loader
    key: str                           # the image key of the dict transforms
    intensity: Intensity
    description: list[str]             # the transforms' names (provenance)
    memo: GridMemo = field(default_factory=GridMemo, repr=False)
    target_spacing = None  # the bundle's transforms decide; only the stored size is checked

    def image(self, volume: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        out = self.transforms({self.key: loaded(volume, affine)})[self.key]
        if out.shape[0] != 1:
            raise InputError("preprocessing", f"the bundle's transforms made {out.shape[0]} channels, expected 1")
        grid = np.asarray(out.affine, dtype=np.float64)
        self.memo.put(volume, affine, (grid, tuple(out.shape[1:])))
        return _plain_tensor(out).float(), grid

    def labels(self, volume: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        from monai.transforms import SpatialResample

        grid, shape = self.memo.get(volume, affine)
        moved = SpatialResample(mode="nearest", padding_mode="zeros")(
            loaded(volume, affine)[None], dst_affine=torch.as_tensor(grid), spatial_size=shape)
        return _plain_tensor(moved)[0].round().long()

    def to_dict(self) -> dict:
        return {"kind": "bundle", "transforms": self.description, "intensity": self.intensity.to_dict()}


def _plain_tensor(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def loaded(volume: np.ndarray, affine: np.ndarray):
    """A scan as MONAI's ``LoadImage`` returns it: ``[X, Y, Z]`` MetaTensor with its metadata."""
    from monai.data import MetaTensor

    affine = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    meta = {"original_affine": affine.numpy().copy(), "spatial_shape": np.asarray(volume.shape),
            "space": "RAS", "original_channel_dim": float("nan"), "filename_or_obj": "scan"}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)), affine=affine, meta=meta)


def load_bundle(folder: Path, device="auto", given: Description = Description(), trust_code: bool = False) -> Segmenter:
    """A bundle; without ``trust_code`` its config is checked first (``bundle_guard``)."""
    from monai.bundle import ConfigParser

    config_file = next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)
    if config_file is None:
        raise InputError(folder / "configs" / "inference.json", f"missing: {LAYOUT}")
    meta_file = require(folder / "configs" / "metadata.json", LAYOUT)
    weights = folder / "models" / "model.pt"
    weights = weights if weights.is_file() else require(folder / "models" / "model.ts", LAYOUT + " (or models/model.ts)")
    parser = ConfigParser()
    try:
        _read(parser, config_file, meta_file, trust_code)
        parser["bundle_root"] = str(folder)
        network = _network(parser, weights, trust_code)
        preprocessing = _preprocessing(parser, config_file)
        window = _window(parser, config_file)
    except InputError:
        raise
    except Exception as err:  # the parser evaluates user expressions: any error is the bundle's
        raise InputError(config_file, f"cannot parse the bundle ({first_line(err)})") from None
    names = given.labels or _labels(meta_file)
    dev = resolve_device(device)
    out_channels = getattr(network, "out_channels", None)
    if isinstance(out_channels, int) and out_channels != len(names):
        raise InputError(meta_file, f"{len(names)} label names for a network with {out_channels} output channels")
    return Segmenter(network=network.to(dev).eval(), network_config={"name": "bundle", "folder": folder.name,
                                                                     "network_def": _plain(parser["network_def"]),
                                                                     "allowed_mirror_axes": _mirror_axes(meta_file)},
                     label_names=names, preprocessing=preprocessing, window=window,
                     checkpoint_sha256=fingerprint([config_file, meta_file, weights]), device=dev, source="bundle")


def _read(parser, config_file: Path, meta_file: Path, trust_code: bool) -> None:
    if trust_code:
        parser.read_meta(str(meta_file))
        parser.read_config(str(config_file))
        return
    from agg2exp_core.models.sources.bundle_guard import untrusted_sections

    try:
        config = {"_meta_": parser.load_config_file(str(meta_file)), **parser.load_config_file(str(config_file))}
    except Exception as err:  # JSON / YAML syntax, duplicate keys
        raise InputError(config_file, f"cannot read the bundle's config ({first_line(err)})") from None
    parser.read_config(untrusted_sections(config, config_file, parser.locator))


def _network(parser, weights: Path, trust_code: bool) -> torch.nn.Module:
    if weights.suffix == ".ts":  # TorchScript: not a sandbox, as trusted as the user's choice (docs)
        return torch.jit.load(str(weights), map_location="cpu")
    if "network_def" not in parser:
        raise InputError(weights.parent.parent / "configs", "the bundle's config has no network_def")
    network = parser.get_parsed_content("network_def")
    try:
        state = unwrap_state_dict(load_tensors(weights, trust_code, "bundle's weights file"))
        network.load_state_dict(state, strict=True)
    except InputError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise InputError(weights, f"weights do not match the bundle's network_def ({first_line(err)})") from None
    except Exception as err:  # unreadable or foreign file
        raise InputError(weights, f"cannot read the weights ({first_line(err)})") from None
    return network


def _preprocessing(parser, config_file: Path) -> BundlePreprocessing:
    from monai.transforms import Compose, LoadImage, LoadImaged

    if "preprocessing" not in parser:
        raise InputError(config_file, "the bundle's config has no preprocessing")
    compose = parser.get_parsed_content("preprocessing")
    steps = compose.flatten().transforms if isinstance(compose, Compose) else [compose]
    loaders = [t for t in steps if isinstance(t, LoadImaged)]
    key = str(next(iter(loaders[0].keys))) if loaders else "image"
    kept = [t for t in steps if not isinstance(t, (LoadImage, LoadImaged))]
    return BundlePreprocessing(Compose(kept), key, _intensity(kept), [type(t).__name__ for t in kept])


def _intensity(steps) -> Intensity:
    """The intensity normalisation among the transforms (window, fixed z-score, per image, none)."""
    from monai.transforms import NormalizeIntensity, NormalizeIntensityd, ScaleIntensityRange, ScaleIntensityRanged

    found = []
    for t in steps:
        inner = getattr(t, "scaler", None) or getattr(t, "normalizer", None) or t
        if isinstance(t, (ScaleIntensityRange, ScaleIntensityRanged)):
            found.append(Intensity("window", float(inner.a_min), float(inner.a_max), b_min=float(inner.b_min),
                                   b_max=float(inner.b_max), clip=bool(inner.clip)))
        elif isinstance(t, (NormalizeIntensity, NormalizeIntensityd)):
            fixed = isinstance(inner.subtrahend, (int, float)) and isinstance(inner.divisor, (int, float))
            found.append(Intensity("zscore", mean=float(inner.subtrahend), std=float(inner.divisor)) if fixed
                         else Intensity("image"))
    if len(found) > 1:
        return Intensity("image")  # several rescalings: fall back to the image's own minimum as air
    return found[0] if found else Intensity("none")


def _window(parser, config_file: Path) -> WindowSpec | None:
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    inferer = parser.get_parsed_content("inferer") if "inferer" in parser else SimpleInferer()
    if isinstance(inferer, SimpleInferer):
        return None
    if not isinstance(inferer, SlidingWindowInferer):
        raise InputError(config_file, f"inferer {type(inferer).__name__} is not supported "
                                      "(SlidingWindowInferer or SimpleInferer)")
    value = lambda v: str(getattr(v, "value", v))  # noqa: E731 - MONAI's str enums as plain strings
    return WindowSpec(tuple(int(r) for r in inferer.roi_size), inferer.overlap, value(inferer.mode),
                      inferer.sigma_scale, value(inferer.padding_mode), float(inferer.cval), int(inferer.sw_batch_size))


def _labels(meta_file: Path) -> list[str]:
    meta = json.loads(meta_file.read_text())
    channels = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def")
    if not channels:
        raise InputError(meta_file, "no label names: network_data_format.outputs.pred.channel_def "
                                    "is missing (or give --labels FILE)")
    return channel_names(meta_file, channels)


def _plain(value):
    """A config section as JSON-safe data (provenance)."""
    return json.loads(json.dumps(value, default=str))


def _mirror_axes(meta_file: Path) -> list[int]:
    """Spatial axes a bundle declares it may be flipped along (metadata.json ``mirror_axes``; none if absent)."""
    axes = json.loads(meta_file.read_text()).get("mirror_axes") or []
    if not isinstance(axes, list) or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a < 3 for a in axes):
        raise InputError(meta_file, f"mirror_axes must be a list of spatial axes 0..2, got {axes!r}")
    return sorted(set(axes))

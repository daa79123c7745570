"""How a scan becomes network input; a model source brings its own (see ``models.sources``).

Every model's preprocessing answers the same questions (``ModelPreprocessing``):
``image(volume, affine)`` -> network input ``[1, *G]`` and the affine of its grid G;
``labels(volume, affine)`` -> a label map or mask of the same scan on G; ``air_value``
(-1024 HU in the model's intensity space: the default baseline of IG, KernelSHAP and the
evaluation's perturbations); ``to_hu`` and ``display_window`` (artefacts show HU);
``to_dict`` (the run's provenance). ``Preprocessing`` here is MONAI's: orientation (RAS,
LPS or as stored), resampling to a target spacing (bilinear for intensities, nearest for
label maps and masks) and an intensity normalisation (``Intensity``). MONAI bundles and
nnU-Net folders bring their own classes (``models/sources``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Mapping, Protocol

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ScaleIntensityRange, Spacing

from agg2exp_core.errors import InputError

AIR_HU = -1024.0
CT_MAX_HU = 3071.0   # the top of a 12-bit CT scale: the range of an unclipped normalisation
NORMALIZATIONS = ("window", "zscore", "ct", "none", "image")
ORIENTATIONS = ("RAS", "LPS", None)  # None: the voxel order as stored


@dataclass(frozen=True)
class Intensity:
    """HU -> network input values, and back.

    ``window``: clip to ``[lo, hi]``, map linearly to ``[b_min, b_max]`` (MONAI's
    ``ScaleIntensityRange``); ``zscore``: ``(x - mean) / std``; ``ct``: nnU-Net's CT
    normalisation, clip to ``[lo, hi]`` (its 0.5 / 99.5 foreground percentiles), then
    ``(x - mean) / std``; ``none``: HU as they are; ``image``: statistics of each image
    (not invertible: the air value falls back to the image's minimum).
    """

    kind: str = "window"
    lo: float = -1024.0
    hi: float = 1024.0
    mean: float = 0.0
    std: float = 1.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True

    def __post_init__(self):
        if self.kind not in NORMALIZATIONS:
            raise InputError("normalization", f"expected one of {', '.join(NORMALIZATIONS)}, got {self.kind!r}")
        if self.kind in ("window", "ct") and not self.hi > self.lo:
            raise InputError("hu_window", f"expected lo < hi, got ({self.lo}, {self.hi})")
        if self.kind in ("zscore", "ct") and not self.std > 0:
            raise InputError("std", f"expected a positive standard deviation, got {self.std}")

    def apply(self, hu: torch.Tensor) -> torch.Tensor:
        if self.kind == "window":
            scale = ScaleIntensityRange(a_min=self.lo, a_max=self.hi, b_min=self.b_min, b_max=self.b_max, clip=self.clip)
            out = scale(hu)
            return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)  # no MetaTensor
        if self.kind == "ct":
            return (hu.clamp(self.lo, self.hi) - self.mean) / self.std
        if self.kind == "zscore":
            return (hu - self.mean) / self.std
        if self.kind == "none":
            return hu
        return (hu - hu.mean()) / hu.std().clamp_min(1e-8)

    def to_hu(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """HU of network input values (inside the clipping range; per-image scaling: as given)."""
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "window":
            return (x - self.b_min) / (self.b_max - self.b_min) * (self.hi - self.lo) + self.lo
        if self.kind in ("ct", "zscore"):
            return x * self.std + self.mean
        return x

    def air(self, image: torch.Tensor | None = None) -> float:
        """-1024 HU in the network's input space (per-image scaling: the image's minimum)."""
        if self.kind == "image":
            if image is None:
                raise InputError("baseline", "the model scales every image by its own statistics: give a baseline")
            return float(torch.as_tensor(image).min())
        return float(self.apply(torch.tensor(AIR_HU, dtype=torch.float64)))

    def value_range(self, image: torch.Tensor | None = None) -> tuple[float, float]:
        """(low, high) intensities a preprocessed CT may take in the network's input space.

        Clipping normalisations: their clip range; unclipped ones: the CT range -1024..3071 HU
        mapped through them; per-image scaling: the image's own range.
        """
        if self.kind == "image":
            if image is None:
                raise InputError("baseline", "the model scales every image by its own statistics: give a baseline")
            image = torch.as_tensor(image)
            return float(image.min()), float(image.max())
        if self.kind == "window":
            return float(min(self.b_min, self.b_max)), float(max(self.b_min, self.b_max))
        lo, hi = (self.lo, self.hi) if self.kind == "ct" else (AIR_HU, CT_MAX_HU)
        ends = self.apply(torch.tensor([lo, hi], dtype=torch.float64))
        return float(ends.min()), float(ends.max())

    def display_window(self) -> tuple[float, float]:
        """The HU range the network distinguishes (what artefacts should show)."""
        return (self.lo, self.hi) if self.kind in ("window", "ct") else (-1024.0, 1024.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Intensity":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class ModelPreprocessing(Protocol):
    """What ``load_case``, the explainers and the artefacts need from a model's preprocessing."""

    def image(self, volume: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]: ...
    def labels(self, volume: np.ndarray, affine: np.ndarray) -> torch.Tensor: ...
    def air_value(self, image: torch.Tensor | None = None) -> float: ...
    def value_range(self, image: torch.Tensor | None = None) -> tuple[float, float]: ...
    def to_hu(self, image: torch.Tensor) -> np.ndarray: ...
    def display_window(self) -> tuple[float, float]: ...
    def to_dict(self) -> dict: ...

    @property
    def target_spacing(self) -> tuple[float, ...] | None:
        """Voxel size in mm the scan is resampled to (None: unknown or kept), for size limits."""


class IntensityViews:
    """What every model preprocessing answers from its ``intensity`` (the model's intensity space):
    the air baseline, HU for display and the default display window."""

    intensity: Intensity

    def air_value(self, image: torch.Tensor | None = None) -> float:
        return self.intensity.air(image)

    def value_range(self, image: torch.Tensor | None = None) -> tuple[float, float]:
        return self.intensity.value_range(image)

    def to_hu(self, image: torch.Tensor) -> np.ndarray:
        return self.intensity.to_hu(torch.as_tensor(image)[0].numpy())

    def display_window(self) -> tuple[float, float]:
        return self.intensity.display_window()


@dataclass(frozen=True)
class Preprocessing(IntensityViews):
    """MONAI's preprocessing: orientation, target spacing, intensity normalisation.

    ``normalization="window"`` maps ``hu_window`` to [0, 1] (the default, our checkpoints);
    ``"zscore"`` uses ``mean``/``std``; ``"ct"`` clips to ``hu_window`` and then uses them.
    """

    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    hu_window: tuple[float, float] = (-1024.0, 1024.0)
    orientation: str | None = "RAS"
    normalization: str = "window"
    mean: float = 0.0
    std: float = 1.0

    @property
    def target_spacing(self) -> tuple[float, float, float] | None:
        return self.spacing

    def __post_init__(self):
        if self.orientation not in ORIENTATIONS:
            raise InputError("orientation", f"expected RAS, LPS or null (as stored), got {self.orientation!r}")
        self.intensity  # validates the normalisation

    @property
    def intensity(self) -> Intensity:
        lo, hi = self.hu_window
        return Intensity(self.normalization, float(lo), float(hi), float(self.mean), float(self.std))

    def to_dict(self) -> dict:
        return {"kind": "monai", "spacing": list(self.spacing) if self.spacing else None,
                "hu_window": list(self.hu_window), "orientation": self.orientation,
                "normalization": self.normalization, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocessing":
        spacing = d.get("spacing")
        return cls(tuple(float(s) for s in spacing) if spacing else None,
                   tuple(float(h) for h in d.get("hu_window", (-1024.0, 1024.0))),
                   d.get("orientation", "RAS"), d.get("normalization", "window"),
                   float(d.get("mean", 0.0)), float(d.get("std", 1.0)))

    def image(self, volume: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Network input ``[1, X, Y, Z]`` (float32) and the affine of its grid, from HU and affine."""
        resampled = self._resample(volume, affine, mode="bilinear")
        scaled = self.intensity.apply(resampled.as_tensor().float())
        return scaled.float(), np.asarray(resampled.affine, dtype=np.float64)

    def labels(self, volume: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        """An integer label map (or a mask) on the grid of ``image``: ``[X, Y, Z]`` int64."""
        return self._resample(volume, affine, mode="nearest").as_tensor()[0].round().long()

    def _resample(self, volume: np.ndarray, affine: np.ndarray, mode: str) -> MetaTensor:
        """``[1, X, Y, Z]`` MetaTensor in the orientation at the target spacing (affine tracked by MONAI)."""
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None],
                            affine=torch.as_tensor(affine))
        if self.orientation is not None:
            tensor = Orientation(axcodes=self.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
        if self.spacing is not None:
            current = np.linalg.norm(np.asarray(tensor.affine)[:3, :3], axis=0)
            if not np.allclose(current, self.spacing, rtol=1e-3):
                tensor = Spacing(pixdim=self.spacing, mode=mode)(tensor)
        return tensor


@dataclass
class GridMemo:
    """The model grids of the last few scans, keyed by the scan's shape and affine.

    ``load_case`` preprocesses the image first and then its label map and RoI masks,
    which lie on the same scan grid; a preprocessing whose grid depends on the image's
    voxels (nnU-Net's crop to non-zero, a bundle's foreground crop) remembers it here.
    """

    size: int = 8
    grids: OrderedDict = field(default_factory=OrderedDict)

    @staticmethod
    def key(volume: np.ndarray, affine: np.ndarray) -> tuple:
        return tuple(np.shape(volume)), np.round(np.asarray(affine, dtype=np.float64), 6).tobytes()

    def put(self, volume: np.ndarray, affine: np.ndarray, grid) -> None:
        self.grids[self.key(volume, affine)] = grid
        while len(self.grids) > self.size:
            self.grids.popitem(last=False)

    def get(self, volume: np.ndarray, affine: np.ndarray):
        grid = self.grids.get(self.key(volume, affine))
        if grid is None:
            raise InputError("preprocessing", "a label map or mask must follow its image through the "
                             "model's preprocessing (its grid depends on the image)")
        return grid

"""How a scan becomes network input; a model source brings its own (see ``models``).

MONAI transforms do the work: orientation to RAS, resampling to the target spacing
(bilinear for intensities, nearest for label maps and masks), HU window to [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ScaleIntensityRange, Spacing


@dataclass(frozen=True)
class Preprocessing:
    """How a scan becomes network input: RAS orientation, target spacing, HU window to [0, 1]."""

    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    hu_window: tuple[float, float] = (-1024.0, 1024.0)

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing) if self.spacing else None, "hu_window": list(self.hu_window)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocessing":
        spacing = d.get("spacing")
        return cls(tuple(float(s) for s in spacing) if spacing else None,
                   tuple(float(h) for h in d.get("hu_window", (-1024.0, 1024.0))))

    def image(self, volume: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Network input ``[1, X, Y, Z]`` (float32) and the affine of its grid, from HU and affine."""
        resampled = self._resample(volume, affine, mode="bilinear")
        lo, hi = self.hu_window
        scaled = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(resampled)
        return scaled.as_tensor().float(), np.asarray(resampled.affine, dtype=np.float64)

    def labels(self, volume: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        """An integer label map (or a mask) on the grid of ``image``: ``[X, Y, Z]`` int64."""
        return self._resample(volume, affine, mode="nearest").as_tensor()[0].round().long()

    def _resample(self, volume: np.ndarray, affine: np.ndarray, mode: str) -> MetaTensor:
        """``[1, X, Y, Z]`` MetaTensor in RAS at the target spacing (affine tracked by MONAI)."""
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None],
                            affine=torch.as_tensor(affine))
        tensor = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
        if self.spacing is not None:
            current = np.linalg.norm(np.asarray(tensor.affine)[:3, :3], axis=0)
            if not np.allclose(current, self.spacing, rtol=1e-3):
                tensor = Spacing(pixdim=self.spacing, mode=mode)(tensor)
        return tensor

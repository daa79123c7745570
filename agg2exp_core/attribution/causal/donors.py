"""Donor content of a causal intervention: what a region's voxels are replaced with.

- ``constant``: one value (``baseline``, default 0.0 = the scaled air value -1024 HU), or a
  ``[*S]`` volume given as ``baseline``: deterministic, one evaluation per region.
- ``mean``: the voxel-wise mean of ``donors``: deterministic.
- ``images``: Monte-Carlo over ``donors`` (volumes on the image's grid, preprocessed like
  it), drawn without replacement in a seeded order per region, as PdCR draws replacement
  patches from other images: the expectation is over the donor distribution.

A donor of another shape, or of another intensity scale (e.g. HU given where the image
is scaled to [0, 1]), is a one-line ``InputError``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from agg2exp_core.attribution import options
from agg2exp_core.errors import InputError

DONORS = ("constant", "mean", "images")


@dataclass(frozen=True)
class DonorSet:
    """The replacement volumes of one explanation: ``volumes[k]`` is a scalar or ``[*S]`` tensor."""

    kind: str
    volumes: tuple

    @property
    def deterministic(self) -> bool:
        return self.kind != "images"

    @property
    def size(self) -> int:
        return len(self.volumes)

    def order(self, seed: int | None, region: int = 0) -> np.ndarray:
        """The donors of a region in the order they are drawn: one order for every region of a
        seed (``region`` is ignored), so a region's estimate does not depend on which other
        regions are explained, and regions that draw n donors draw the same n. Sums of effects
        over regions then have per-donor sums to take their standard error from."""
        if self.deterministic:
            return np.zeros(1, np.int64)
        rng = np.random.default_rng([0 if seed is None else int(seed), 1])
        return rng.permutation(self.size)


def donor_set(image: torch.Tensor, donor: str = "constant", donors: Sequence | None = None,
              baseline=0.0) -> DonorSet:
    """Check the donor parameters against the image and collect the replacement volumes."""
    if donor not in DONORS:
        raise InputError("donor", f"unknown donor '{donor}' (use {', '.join(DONORS)})")
    if donor == "constant":
        if donors is not None and len(donors):
            raise InputError("donors", "donor='constant' takes no donor images (use donor='images' or 'mean')")
        options.check_baseline(baseline, image)
        base = torch.as_tensor(baseline, dtype=torch.float32)
        return DonorSet("constant", (base if base.dim() == 0 else base.reshape(image.shape[1:]),))
    volumes = check_donors(image, donors)
    if donor == "mean":
        return DonorSet("mean", (torch.stack(volumes).mean(dim=0),))
    return DonorSet("images", tuple(volumes))


def check_donors(image: torch.Tensor, donors: Sequence | None) -> list[torch.Tensor]:
    """Donor volumes ``[*S]`` (float32): same grid as the image, same intensity scale."""
    if donors is None or isinstance(donors, (torch.Tensor, np.ndarray)) and np.ndim(donors) == image.dim() - 1:
        raise InputError("donors", "expected a list of donor volumes on the image's grid")
    volumes = []
    low, high = _scale_bounds(image)
    shape = tuple(image.shape[1:])
    for k, raw in enumerate(donors):
        volume = torch.as_tensor(np.asarray(raw) if not torch.is_tensor(raw) else raw).detach().cpu()
        if volume.dim() == len(shape) + 1 and volume.shape[0] == 1:
            volume = volume[0]
        if tuple(volume.shape) != shape:
            raise InputError("donors", f"donor {k} has shape {list(volume.shape)}, expected {list(shape)} "
                             "(the image's grid: resample or crop donors to it)")
        if not volume.is_floating_point() or not torch.isfinite(volume).all():
            raise InputError("donors", f"donor {k} must hold finite floating-point intensities")
        lo, hi = float(volume.min()), float(volume.max())
        if lo < low or hi > high:
            raise InputError("donors", f"donor {k} has intensities in [{lo:g}, {hi:g}], outside the image's scale "
                             f"[{low:g}, {high:g}]: preprocess donors like the image")
        volumes.append(volume.float())
    if not volumes:
        raise InputError("donors", "donor='images' needs at least one donor volume")
    return volumes


def _scale_bounds(image: torch.Tensor) -> tuple[float, float]:
    """Intensities a donor preprocessed like the image may take.

    The core's CT scale is [0, 1] (HU window); an image inside it admits donors inside it.
    Otherwise a donor may exceed the image's range by at most that range's width.
    """
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    span = max(hi - lo, 1e-6)
    return lo - span, hi + span

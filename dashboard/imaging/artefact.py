"""The slice artefact of a case (its npz keys, read in one place) and the planes one view draws from it:
the stored full-resolution attribution plane at the class's stored slice, elsewhere the block-averaged
attribution volume interpolated."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from agg2exp_core.store import artifacts
from dashboard.imaging.slices import (AXIS_KEYS, VIEWS, AttributionScale, ViewPlanes, attribution_scale,
                                      attribution_unit, cut, orient)


@dataclass(frozen=True)
class CaseArtifact:
    """Typed view of one npz artefact (the format is ``agg2exp_core.store.artifacts``)."""

    arrays: dict

    @property
    def ct(self) -> np.ndarray:
        return self.arrays["ct"]

    @property
    def pred(self) -> np.ndarray | None:
        return self.arrays.get("pred")

    @property
    def gt(self) -> np.ndarray | None:
        return self.arrays.get("gt")

    @property
    def spacing(self) -> tuple[float, float, float]:
        spacing = self.arrays.get("spacing")
        return tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)

    def class_index(self, channel: int) -> np.ndarray | None:
        """Slice indices (x, y, z) of the class's largest cross-sections, if stored."""
        index = self.arrays.get(artifacts.index_key(channel))
        return None if index is None else np.asarray(index, dtype=int)

    def attribution(self, channel: int, view: str) -> np.ndarray | None:
        """The stored attribution plane of a class for a view (display orientation, float32), if any."""
        plane = self.arrays.get(artifacts.plane_key(channel, AXIS_KEYS[VIEWS[view]]))
        return None if plane is None else orient(plane.astype(np.float32))

    def attribution_volume(self, channel: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(block-averaged attribution volume, voxels per block along x, y, z) of a class, if stored."""
        volume = self.arrays.get(artifacts.volume_key(channel))
        if volume is None:
            return None
        block = self.arrays.get("attrvol_block")
        block = np.ones(3, int) if block is None else np.asarray(block, dtype=int)
        return np.asarray(volume, dtype=np.float32), block

    def explained_channels(self) -> list[int]:
        return artifacts.explained_channels(self.arrays)

    def extra_rois(self) -> list[str]:
        return artifacts.extra_rois(self.arrays)


def sample_volume(volume: np.ndarray, block, voxels: np.ndarray) -> np.ndarray:
    """Trilinear values of a block-averaged volume at points given in voxel coordinates ``[n, 3]``
    of the full grid (block k covers voxels k·b … k·b + b − 1, its centre at k·b + (b − 1)/2)."""
    block = np.asarray(block, dtype=float)
    coords = (np.asarray(voxels, dtype=float) - (block - 1) / 2) / block
    return ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), coords.T, order=1, mode="nearest")


def volume_plane(artifact: CaseArtifact, channel: int, view: str, index: int) -> np.ndarray | None:
    """The class's attribution at any slice, interpolated from the block-averaged volume (display
    orientation, on the voxel grid of the plane), or None without a stored volume."""
    stored = artifact.attribution_volume(channel)
    if stored is None:
        return None
    volume, block = stored
    shape = artifact.ct.shape
    axis = VIEWS[view]
    grids = [np.arange(n) for n in shape]
    grids[axis] = np.array([int(index)])
    points = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)
    values = sample_volume(volume, block, points).reshape([1 if a == axis else n for a, n in enumerate(shape)])
    return orient(np.take(values, 0, axis=axis))


def view_planes(artifact: CaseArtifact, view: str, index: int, channel: int | None) -> ViewPlanes:
    """Planes of one view at ``index``: the stored attribution plane at the class's stored slice,
    elsewhere the block-averaged attribution volume when the artefact has one."""
    axis = VIEWS[view]
    pred = None if artifact.pred is None else cut(artifact.pred, view, index)
    gt = None if artifact.gt is None else cut(artifact.gt, view, index)
    attr, note, exact = None, "", True
    stored = None if channel is None else artifact.class_index(channel)
    if channel is None or stored is None:
        note = "no attribution stored for this class"
    elif int(stored[axis]) == int(index) and artifact.attribution(channel, view) is not None:
        attr = artifact.attribution(channel, view)
    else:
        attr = volume_plane(artifact, channel, view, index)
        if attr is None:
            note = f"attribution stored at slice {int(stored[axis])} only"
        else:
            exact = False
            block = "×".join(str(int(b)) for b in artifact.attribution_volume(channel)[1])
            note = (f"attribution from the {block}-voxel block-averaged volume (exact plane at slice "
                    f"{int(stored[axis])})")
    if attr is not None and not np.isfinite(attr).all():
        bad = int((~np.isfinite(attr)).sum())
        note = (note + "; " if note else "") + (f"{bad} stored value(s) are not finite (an artefact written "
                                                "as float16 overflowed): left out; recompute the run")
    return ViewPlanes(cut(artifact.ct, view, index), pred, gt, attr, note, exact)


# --- what a view shows of a class ----------------------------------------------------------------

def class_scale(artifact: CaseArtifact, channel: int | None, percentile: float,
                exact: bool = True) -> AttributionScale:
    """One attribution scale per class and resolution, so a colour means the same value in every
    view: from the class's stored full-resolution planes (``exact``), else from its block-averaged
    volume (whose block means are smaller than single voxels' values)."""
    if channel is None:
        return attribution_scale([], percentile)
    planes = [p for p in (artifact.attribution(channel, view) for view in VIEWS) if p is not None]
    volume = artifact.attribution_volume(channel)
    if (not exact or not planes) and volume is not None:
        planes = [volume[0]]
    return attribution_scale(planes, percentile)


def colorbar_title(method: str, params: dict, scale: AttributionScale, exact: bool = True) -> str:
    unit, _ = attribution_unit(method, params)
    return (f"{unit}{'' if exact else ' (block means)'} · |v| < {scale.threshold:.3g} hidden "
            f"(P{scale.percentile:g})")


def start_voxel(artifact: CaseArtifact, channel: int | None) -> tuple[int, int, int]:
    """The class's largest cross-sections (x, y, z), else the volume's centre."""
    stored = artifact.class_index(channel) if channel is not None else None
    if stored is None:
        stored = np.asarray(artifact.ct.shape) // 2
    return tuple(int(v) for v in stored)


def region_voxel(artifact: CaseArtifact, channel: int | None = None,
                 roi_name: str | None = None) -> tuple[int, int, int] | None:
    """The voxel (x, y, z) of a region's largest cross-sections: a predicted class (``channel``) or an
    extra RoI mask stored as ``roi_<name>``; None when the artefact does not hold it or it is empty."""
    if channel is not None and artifact.pred is not None:
        mask = artifact.pred == channel
    elif roi_name is not None and artifacts.roi_key(roi_name) in artifact.arrays:
        mask = artifact.arrays[artifacts.roi_key(roi_name)].astype(bool)
    else:
        return None
    if not mask.any():
        return None
    return tuple(int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3))

"""Slice artefacts of a case for the Case viewer: compact arrays in one npz (see docs/ARCHITECTURE.md).

The case lives on its model's grid (for nnU-Net in nnU-Net's axis order); artefacts are
always written in RAS+ voxel order ``[X, Y, Z]`` (an exact permutation and flip of the
arrays, from the grid's affine), and the CT in HU through the model's preprocessing. Besides
CT, prediction, labels and RoI masks: attribution planes through each class's largest
cross-section and block-averaged attribution volumes. numpy and nibabel only (the Case is
only a type here), so the dashboard's tests build artefacts with the same functions. The
format itself (keys, durable writer, validating reader) is ``store.artifacts``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import nibabel as nib
import numpy as np

from agg2exp_core.store.artifacts import AXES, index_key, plane_key, relevance_key, roi_key, volume_key
from agg2exp_core.store.artifacts import write_artifact  # noqa: F401 - where callers found it before

if TYPE_CHECKING:
    from agg2exp_core.io.images import Case

ATTRVOL_MAX_SIDE = 32     # voxels per side of the downsampled attribution volumes in an artefact


def block_factors(shape: Sequence[int], max_side: int = ATTRVOL_MAX_SIDE) -> np.ndarray:
    """Voxels per block along each axis so that no side of the block-averaged volume exceeds ``max_side``."""
    return np.maximum(1, -(-np.asarray(shape, dtype=int) // int(max_side))).astype(np.int32)


def block_mean(volume: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Mean over non-overlapping blocks (float32); edge blocks average only the voxels they hold."""
    volume = np.asarray(volume, dtype=np.float64)
    block = [int(b) for b in block]
    pad = [(0, -s % b) for s, b in zip(volume.shape, block)]
    split = [n for s, b in zip(np.add(volume.shape, [p[1] for p in pad]), block) for n in (s // b, b)]
    sums = np.pad(volume, pad).reshape(split).sum(axis=(1, 3, 5))
    counts = np.pad(np.ones(volume.shape), pad).reshape(split).sum(axis=(1, 3, 5))
    return (sums / counts).astype(np.float32)


def attribution_slices(volume: np.ndarray, index: Sequence[int]) -> dict[str, np.ndarray]:
    """The three planes through ``index`` (x, y, z), float32: KernelSHAP logit sums overflow float16."""
    return {axis: np.take(volume, int(index[a]), axis=a).astype(np.float32) for a, axis in enumerate(AXES)}



def largest_cross_sections(mask: np.ndarray) -> np.ndarray:
    """Slice index along x, y, z where a mask's cross-section is largest (centre if empty)."""
    if not mask.any():
        return np.array(mask.shape) // 2
    return np.array([mask.sum(axis=tuple(a for a in range(3) if a != axis)).argmax() for axis in range(3)])


def ras_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel's orientation that brings a grid with this affine to RAS+ voxel order."""
    return nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))


def to_ras(volume: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """``[*S]`` (or ``[k, *S]``) arrays in RAS+ voxel order (identity for a RAS grid)."""
    if volume.ndim == 4:
        return np.stack([to_ras(v, orientation) for v in volume])
    return np.ascontiguousarray(nib.orientations.apply_orientation(volume, orientation))


def slice_artifact(case: Case, pred: np.ndarray, attributions: np.ndarray, classes: Sequence[int],
                   preprocessing=None, volume_max_side: int = ATTRVOL_MAX_SIDE) -> dict:
    """Compact arrays for the case viewer (see docs/ARCHITECTURE.md, "Slice artefacts").

    ``preprocessing``: the model's (``to_hu``, ``display_window``); without it the image is
    taken as the default [0, 1] HU window.
    """
    orientation = ras_orientation(case.affine)
    hu = preprocessing.to_hu(case.image) if preprocessing is not None else case.hu()
    window = preprocessing.display_window() if preprocessing is not None else (-1024.0, 1024.0)
    spacing = np.asarray(case.spacing, dtype=np.float32)[orientation[:, 0].astype(int).argsort()]
    pred = to_ras(pred, orientation)
    arrays = {"ct": np.clip(np.round(to_ras(hu, orientation)), -1024, 3071).astype(np.int16),
              "pred": pred.astype(np.uint8), "spacing": spacing,
              "ct_window": np.asarray(window, dtype=np.float32)}
    if case.label is not None:
        arrays["gt"] = to_ras(case.label.numpy(), orientation).astype(np.uint8)
    for name, mask in case.rois.items():
        arrays[roi_key(name)] = to_ras(mask, orientation).astype(np.uint8)
    block = block_factors(pred.shape, volume_max_side)
    arrays["attrvol_block"] = block
    for row, c in enumerate(classes):
        index = largest_cross_sections(pred == c)
        arrays[index_key(c)] = index.astype(np.int32)
        volume = to_ras(attributions[row], orientation)
        for axis, plane in attribution_slices(volume, index).items():
            arrays[plane_key(c, axis)] = plane
        arrays[volume_key(c)] = block_mean(volume, block)
    return arrays


def relevance_arrays(masks: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Relevance masks per class channel as artefact arrays."""
    return {relevance_key(c): np.asarray(mask, bool).astype(np.uint8) for c, mask in masks.items()}


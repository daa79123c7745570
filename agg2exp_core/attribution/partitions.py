"""Interpretable units (supervoxels) for KernelSHAP on 3D volumes.

A partition is an integer label map ``[*S]`` with unit ids ``0..M-1`` (every id used,
every voxel covered). Four constructions, following Agg2Exp (cubes, semantic) and the
efficient-KernelSHAP paper (FCC, hybrid):

- ``cubes``: a regular grid, ``n_per_axis`` blocks along each axis (voxel space).
- ``semantic``: one unit per class present in ``labels`` (the predicted label map).
- ``fcc``: Voronoi cells of a face-centred-cubic lattice laid out in physical
  millimetres, so cells are (nearly) isotropic even under anisotropic spacing. The FCC
  lattice is the densest sphere packing; its cells (rhombic dodecahedra) are rounder
  than cubes, which keeps units compact.
- ``hybrid``: FCC cells split along ``labels``: each unique (cell, label) pair becomes
  one unit, so no unit mixes two organs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from agg2exp_core.errors import InputError

PARTITIONS = ("cubes", "semantic", "fcc", "hybrid")
DEFAULT_SCALE_MM = 30.0


def make_partition(name: str, shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   labels: np.ndarray | None = None, n_per_axis: int | Sequence[int] = 4,
                   scale_mm: float = DEFAULT_SCALE_MM,
                   offset_mm: Sequence[float] | None = None,
                   exclude_labels: Sequence[int] = ()) -> np.ndarray:
    """Build a partition of a volume into interpretable units.

    Args:
        name: one of ``cubes``, ``semantic``, ``fcc``, ``hybrid``.
        shape: spatial shape ``S`` of the volume (any number of axes; FCC needs 3).
        spacing: voxel size in mm per axis (used by ``fcc`` and ``hybrid``).
        labels: integer label map ``[*S]`` (predicted classes); needed by ``semantic``
            and ``hybrid``.
        n_per_axis: number of blocks per axis for ``cubes`` (int or one per axis).
        scale_mm: FCC nearest-neighbour distance between cell centres in mm; one cell
            holds ``scale_mm**3 / sqrt(2)`` mm^3.
        offset_mm: position of one lattice point in mm (default: the volume centre).
        exclude_labels: for ``semantic``/``hybrid``, labels whose voxels belong to no
            unit (id ``-1``, never perturbed), e.g. ``(0,)`` for the efficient-KernelSHAP
            paper's "background excluded" organ and hybrid units.

    Returns:
        int64 array ``[*S]`` of unit ids ``0..M-1`` (and ``-1`` for excluded voxels),
        numbered in order of first appearance along the flattened (C-order) volume for
        fcc/hybrid, by label value for semantic, by block index for cubes.
    """
    shape = tuple(int(s) for s in shape)
    if name == "cubes":
        return cube_partition(shape, n_per_axis)
    if name == "fcc":
        return fcc_partition(shape, spacing, scale_mm, offset_mm)
    if name not in PARTITIONS:
        raise InputError("partition", f"unknown partition '{name}' (use {', '.join(PARTITIONS)})")
    labels = _need_labels(name, labels, shape)
    if name == "semantic":
        units = semantic_partition(labels)
    else:
        units = hybrid_partition(labels, spacing, scale_mm, offset_mm)
    return _exclude(units, labels, exclude_labels)


def _exclude(units: np.ndarray, labels: np.ndarray, exclude_labels: Sequence[int]) -> np.ndarray:
    """Set the voxels of ``exclude_labels`` to -1 and renumber the other units 0..M-1."""
    if not len(exclude_labels):
        return units
    out = np.where(np.isin(labels, list(exclude_labels)), -1, units)
    ids, values = relabel(out)
    return ids - 1 if values[0] == -1 else ids


def cube_partition(shape: Sequence[int], n_per_axis: int | Sequence[int] = 4) -> np.ndarray:
    """Regular grid ``[*S]``: block ``i`` along an axis of size ``s`` holds ``floor(k*n/s) == i``."""
    shape = tuple(int(s) for s in shape)
    n = _per_axis(n_per_axis, len(shape))
    n = tuple(max(1, min(k, s)) for k, s in zip(n, shape))  # never more blocks than voxels
    index = [np.arange(s) * k // s for s, k in zip(shape, n)]
    grids = np.meshgrid(*index, indexing="ij")
    return np.ravel_multi_index(grids, n).astype(np.int64)


def semantic_partition(labels: np.ndarray) -> np.ndarray:
    """One unit per label present, numbered by increasing label value: ``[*S]``."""
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return inverse.reshape(np.shape(labels)).astype(np.int64)


def fcc_partition(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  scale_mm: float = DEFAULT_SCALE_MM,
                  offset_mm: Sequence[float] | None = None) -> np.ndarray:
    """Nearest-FCC-lattice-point cells in physical space: ``[*S]`` unit ids.

    The FCC lattice is ``(a/2) * D3`` with ``D3 = {z in Z^3 : z1+z2+z3 even}`` and cubic
    edge ``a = scale_mm * sqrt(2)``. The nearest D3 point is found exactly with Conway
    and Sloane's rule: round every coordinate; if the sum is odd, re-round the coordinate
    with the largest rounding error the other way.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError("partition", f"fcc needs a 3-D shape, got {shape}")
    if not scale_mm > 0:
        raise InputError("partition", f"scale_mm must be positive, got {scale_mm}")
    spacing = np.asarray(spacing, dtype=np.float64)
    half_edge = scale_mm / np.sqrt(2.0)  # a / 2
    centre = (np.asarray(shape) - 1) / 2.0 * spacing if offset_mm is None else np.asarray(offset_mm, float)
    axes = [(np.arange(s) * sp - c) / half_edge for s, sp, c in zip(shape, spacing, centre)]
    u = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # [*S, 3] lattice coordinates
    point = nearest_d3(u.reshape(-1, 3))
    return _relabel_rows(point).reshape(shape)


def nearest_d3(u: np.ndarray) -> np.ndarray:
    """Nearest point of ``D3`` (integer vectors with even sum) to each row of ``u [N, 3]``."""
    r = np.rint(u)
    odd = (r.sum(axis=1) % 2) != 0
    if odd.any():
        err = u[odd] - r[odd]
        k = np.abs(err).argmax(axis=1)
        rows = np.flatnonzero(odd)
        # re-round the worst-rounded coordinate the other way (one step toward u)
        step = np.where(err[np.arange(len(k)), k] >= 0, 1.0, -1.0)
        r[rows, k] += step
    return r.astype(np.int64)


def hybrid_partition(labels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                     scale_mm: float = DEFAULT_SCALE_MM,
                     offset_mm: Sequence[float] | None = None) -> np.ndarray:
    """FCC cells split by label: unique (cell, label) pairs, numbered consecutively ``[*S]``."""
    labels = np.asarray(labels)
    cells = fcc_partition(labels.shape, spacing, scale_mm, offset_mm)
    return refine(cells, labels)


def refine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Common refinement of two partitions: one unit per unique ``(a, b)`` pair ``[*S]``."""
    pairs = np.stack([np.asarray(a).ravel(), np.asarray(b).ravel().astype(np.int64)], axis=1)
    return _relabel_rows(pairs).reshape(np.shape(a))


def relabel(partition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive ids for an arbitrary integer map: ``(ids [*S], original_values [M])``."""
    values, inverse = np.unique(np.asarray(partition), return_inverse=True)
    return inverse.reshape(np.shape(partition)).astype(np.int64), values


def unit_sizes(partition: np.ndarray) -> np.ndarray:
    """Voxel count per unit ``[M]``."""
    return np.bincount(np.asarray(partition).ravel())


def _relabel_rows(rows: np.ndarray) -> np.ndarray:
    """Consecutive ids of the distinct rows of ``rows [N, k]``, in order of first appearance."""
    rows = rows - rows.min(axis=0)
    extent = rows.max(axis=0) + 1
    key = np.ravel_multi_index(rows.T, extent) if np.prod(extent.astype(float)) < 2**62 else None
    if key is None:  # astronomically large lattice: fall back to row-unique
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique value by first appearance
    return order[inverse.ravel()].astype(np.int64)


def _per_axis(n: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if np.isscalar(n):
        return (int(n),) * ndim
    n = tuple(int(k) for k in n)
    if len(n) != ndim:
        raise InputError("partition", f"n_per_axis has {len(n)} entries for {ndim} axes")
    return n


def _need_labels(name: str, labels: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if labels is None:
        raise InputError("partition", f"'{name}' needs a label map (the predicted classes)")
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise InputError("partition", f"label map shape {labels.shape} does not match {shape}")
    return labels

"""Slice-artefact arrays: attribution planes and block-averaged attribution volumes (numpy only).

A leaf module (no torch), so the pipeline writes and the dashboard's tests build artefacts
with the same functions. The format is in docs/ARCHITECTURE.md ("Slice artefacts").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

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
    return {"x": volume[index[0], :, :].astype(np.float32), "y": volume[:, index[1], :].astype(np.float32),
            "z": volume[:, :, index[2]].astype(np.float32)}

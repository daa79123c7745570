"""Slice artefacts of a case for the Case viewer: compact arrays in one npz (see docs/ARCHITECTURE.md)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from agg2exp_core.io.images import Case


def largest_cross_sections(mask: np.ndarray) -> np.ndarray:
    """Slice index along x, y, z where a mask's cross-section is largest (centre if empty)."""
    if not mask.any():
        return np.array(mask.shape) // 2
    return np.array([mask.sum(axis=tuple(a for a in range(3) if a != axis)).argmax() for axis in range(3)])


def slice_artifact(case: Case, pred: np.ndarray, attributions: np.ndarray, classes: Sequence[int]) -> dict:
    """Compact arrays for the case viewer (see docs/ARCHITECTURE.md)."""
    arrays = {"ct": np.clip(np.round(case.hu()), -1024, 3071).astype(np.int16),
              "pred": pred.astype(np.uint8), "spacing": np.asarray(case.spacing, dtype=np.float32)}
    if case.label is not None:
        arrays["gt"] = case.label.numpy().astype(np.uint8)
    for name, mask in case.rois.items():
        arrays[f"roi_{name}"] = mask.astype(np.uint8)
    for row, c in enumerate(classes):
        index = largest_cross_sections(pred == c)
        arrays[f"index_{c}"] = index.astype(np.int32)
        volume = attributions[row]
        arrays[f"attr_{c}_x"] = volume[index[0], :, :].astype(np.float16)
        arrays[f"attr_{c}_y"] = volume[:, index[1], :].astype(np.float16)
        arrays[f"attr_{c}_z"] = volume[:, :, index[2]].astype(np.float16)
    return arrays


def relevance_key(channel: int) -> str:
    """npz key of a class's supervoxel relevance mask (uint8 ``[X, Y, Z]``, 1 = relevant)."""
    return f"relevance_{int(channel)}"


def relevance_arrays(masks: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Relevance masks per class channel as artefact arrays."""
    return {relevance_key(c): np.asarray(mask, bool).astype(np.uint8) for c, mask in masks.items()}


def write_artifact(arrays: dict, path: Path) -> None:
    """Write an npz atomically, so a crash never leaves a half-written artefact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)

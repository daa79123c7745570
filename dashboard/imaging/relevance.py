"""A CT plane with a class's relevance mask tinted (the causal runs' minimal supporting regions)."""
from __future__ import annotations

import numpy as np

from agg2exp_core.store.artifacts import relevance_key
from dashboard.imaging import artefact, slices

RELEVANCE_RGB = np.array([46.0, 204.0, 113.0])


def relevance_planes(artifact: artefact.CaseArtifact, channel: int, view: str, index: int,
                     width: float = 350.0, level: float = 50.0) -> np.ndarray | None:
    """RGB of a CT plane with the class's relevance mask tinted (None without a stored mask)."""
    mask = artifact.arrays.get(relevance_key(channel))
    if mask is None:
        return None
    grey = slices.window(slices.cut(artifact.ct, view, index), width, level)[..., None] * 255.0
    inside = slices.cut(mask, view, index).astype(bool)[..., None]
    rgb = np.where(inside, 0.55 * grey + 0.45 * RELEVANCE_RGB, grey)
    if artifact.pred is not None:
        edge = slices.boundaries((slices.cut(artifact.pred, view, index) == channel).astype(int))
        rgb[edge] = 255.0
    return np.clip(rgb, 0, 255).astype(np.uint8)

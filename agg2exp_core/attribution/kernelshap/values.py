"""Value functions of the KernelSHAP game: logits of a perturbed input -> one number per class.

- ``logit`` (default, Agg2Exp Eq. 2): ``sum_{x in R, P0(x)=c} z_c(x)``, the class-c logit
  summed over the voxels predicted ``c`` on the clean image (``aggregation="mean"`` divides
  by their count). ``R`` defaults to the whole volume.
- ``tp`` / ``fp`` / ``dice`` / ``softdice``: Eqs. 3-6 of the efficient-KernelSHAP paper,
  restricted to an ROI ``R``; default ``R`` = the class's clean predicted mask dilated by
  ``roi_margin`` voxels (Chebyshev), so that new false positives next to the object count
  (with ``R = P0`` exactly, FP would be identically 0).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from agg2exp_core.errors import InputError

VALUES = ("logit", "tp", "fp", "dice", "softdice")
DICE_EPS = 1e-6


def coalition_values(logits: torch.Tensor, classes: Sequence[int], p0: torch.Tensor,
                     rois: torch.Tensor, value: str = "logit", aggregation: str = "sum") -> torch.Tensor:
    """Value of each (coalition, class) from logits on the output region.

    Args:
        logits: ``[B, l, *r]`` logits of perturbed inputs on the output region.
        classes: the ``C`` explained class ids (channels).
        p0: ``[*r]`` int clean (unperturbed) argmax prediction on the region.
        rois: ``[C, *r]`` bool ROI per class.
        value: ``logit``, ``tp``, ``fp``, ``dice`` or ``softdice``.
        aggregation: for ``logit``: ``sum`` (Agg2Exp) or ``mean`` over the voxels summed.

    Returns:
        ``[B, C]`` float64 values.
    """
    logits = logits.to(torch.float64)
    b = logits.shape[0]
    flat = logits.reshape(b, logits.shape[1], -1)
    p0 = p0.reshape(-1)
    rois = rois.reshape(len(classes), -1)
    pm = flat.argmax(dim=1) if value != "logit" else None  # [B, V]
    out = torch.zeros((b, len(classes)), dtype=torch.float64)
    for i, c in enumerate(classes):
        r = rois[i]
        base = (p0 == c) & r           # baseline mask inside the ROI
        z = flat[:, c]                 # [B, V] target logit
        n_roi = max(int(r.sum()), 1)
        if value == "logit":
            total = (z * base).sum(dim=1)
            out[:, i] = total / max(int(base.sum()), 1) if aggregation == "mean" else total
            continue
        pos = (pm == c) & r            # perturbed prediction inside the ROI
        if value == "tp":
            out[:, i] = (z * (pos & base)).sum(dim=1) / n_roi
        elif value == "fp":
            out[:, i] = -(z * (pos & ~base)).sum(dim=1) / n_roi
        elif value == "dice":
            inter = (pos & base).sum(dim=1).to(torch.float64)
            out[:, i] = 2 * inter / (pos.sum(dim=1) + base.sum() + DICE_EPS)
        elif value == "softdice":
            sign = base.to(torch.float64) * 2 - 1
            out[:, i] = (z * pos * sign).sum(dim=1) / n_roi
        else:
            raise InputError("value", f"unknown value function '{value}' (use {', '.join(VALUES)})")
    return out


def default_rois(prediction: np.ndarray, classes: Sequence[int], value: str,
                 roi: np.ndarray | None = None, roi_margin: int = 3) -> np.ndarray:
    """ROI per class ``[C, *S]`` bool (see module docstring for the defaults).

    ``roi`` may be one mask ``[*S]`` shared by all classes or one per class ``[C, *S]``.
    """
    shape = prediction.shape
    if roi is not None:
        roi = np.asarray(roi).astype(bool)
        if roi.shape == shape:
            return np.broadcast_to(roi, (len(classes), *shape)).copy()
        if roi.shape == (len(classes), *shape):
            return roi
        raise InputError("roi", f"shape {roi.shape} is neither {shape} nor {(len(classes), *shape)}")
    if value == "logit":
        return np.ones((len(classes), *shape), bool)
    size = 2 * int(roi_margin) + 1
    return np.stack([ndimage.maximum_filter(prediction == c, size=size) if roi_margin > 0 else prediction == c
                     for c in classes])

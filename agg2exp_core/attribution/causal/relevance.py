"""The global binary relevance mask over supervoxels (KernelSHAP for Swin UNETR, seed 002).

From a supervoxel attribution (KernelSHAP's Shapley values or the causal ATE, one value
per unit): the smallest set of units holding a chosen share (e.g. 80 %) of the cumulative
positive mass, as a binary mask of the volume. Greedy by decreasing value is optimal for
"fewest units reaching the share". Its faithfulness: the Dice of the class's prediction
(against the clean one) when only the mask is kept (the rest set to the baseline) and when
the mask is removed; a faithful mask keeps Dice high in the first case and low in the second.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from agg2exp_core.attribution import options
from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import WindowSpec, infer_logits

DEFAULT_SHARE = 0.8


def check_share(share) -> float:
    share = options.finite_number("relevance_share", share)
    if not 0.0 < share <= 1.0:
        raise InputError("relevance_share", f"expected a share in (0, 1], got {share!r}")
    return share


def relevance_units(values, share: float = DEFAULT_SHARE) -> np.ndarray:
    """Indices of the fewest units whose positive values sum to at least ``share`` of all
    positive mass, most relevant first (empty when no unit is positive)."""
    share = check_share(share)
    values = np.asarray(values, dtype=np.float64).ravel()
    positive = np.clip(np.nan_to_num(values), 0.0, None)
    total = positive.sum()
    if total <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-positive, kind="stable")
    reached = np.cumsum(positive[order]) >= share * total * (1 - 1e-12)
    return order[:int(np.argmax(reached)) + 1].astype(np.int64)


def unit_values(attribution: np.ndarray, partition: np.ndarray) -> np.ndarray:
    """Per-unit value ``[M]`` of a supervoxel map ``[*S]`` (constant per unit): its mean over
    the unit's voxels; ``partition`` holds unit ids ``0..M-1`` (-1: no unit)."""
    a, p = np.asarray(attribution, np.float64).ravel(), np.asarray(partition).ravel()
    if a.shape != p.shape:
        raise InputError("partition", f"shape {np.shape(partition)} does not match the map {np.shape(attribution)}")
    inside = p >= 0
    m = int(p.max()) + 1 if inside.any() else 0
    return np.bincount(p[inside], weights=a[inside], minlength=m) / np.maximum(np.bincount(p[inside], minlength=m), 1)


def relevance_mask(values, partition: np.ndarray, share: float = DEFAULT_SHARE) -> np.ndarray:
    """Binary mask ``[*S]`` of the relevant units (values ``[M]`` over ``partition``'s ids)."""
    chosen = relevance_units(values, share)
    return np.isin(np.asarray(partition), chosen) & (np.asarray(partition) >= 0)


def mask_faithfulness(model: Callable, image: torch.Tensor, masks: np.ndarray, classes: Sequence[int],
                      prediction: np.ndarray, baseline: float = 0.0,
                      window: WindowSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dice of each class's prediction vs the clean one, keeping only / removing its mask.

    ``masks``: ``[C, *S]`` bool, one relevance mask per class of ``classes``; ``prediction``:
    the clean label map. Returns ``(dice_keep [C], dice_remove [C])`` (NaN when the class is
    predicted neither on the clean nor on the perturbed image).
    """
    network, own = options.split_model(model)
    window = window if window is not None else own
    image = options.check_image(image).detach().cpu()
    masks = np.asarray(masks, bool)
    if masks.shape != (len(classes), *image.shape[1:]):
        raise InputError("masks", f"expected shape {[len(classes), *image.shape[1:]]}, got {list(masks.shape)}")
    keep, remove = np.zeros(len(classes)), np.zeros(len(classes))
    for i, c in enumerate(classes):
        region = torch.from_numpy(masks[i])
        x = torch.stack([torch.where(region, image[0], baseline), torch.where(region, baseline, image[0])])
        labels = infer_logits(network, x[:, None].float(), window).argmax(1).numpy()
        keep[i], remove[i] = (dice(labels[k] == c, np.asarray(prediction) == c) for k in (0, 1))
    return keep, remove


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total

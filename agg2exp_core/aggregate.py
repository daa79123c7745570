"""RoI-importance matrices (Eq. 7 of the Agg2Exp paper): where the attribution mass lies.

For target class a and RoI b, ``e_{b->a} = ||e_a * R_b||_1 / ||e_a||_1``; the ``pos`` and
``neg`` variants use only the positive or only the negative part of ``e_a``. The ``lift``
kind divides the absolute mass by the region's share of the volume, ``e_{b->a} / (|R_b|/|V|)``:
for any diffuse map the raw mass of b is about b's volume share, so raw masses compare volumes
as much as explanations; the lift is 1 where a region holds exactly its volume's share.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from agg2exp_core.vocabulary import FRACTION_KINDS, MASS_KINDS

KINDS = tuple(MASS_KINDS)


def _evidence(attributions: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "abs":
        return attributions.abs()
    if kind == "pos":
        return attributions.clamp(min=0)
    if kind == "neg":
        return (-attributions).clamp(min=0)
    raise ValueError(f"unknown kind '{kind}' (choose from {', '.join(FRACTION_KINDS)})")


def volume_shares(rois, shape, n_rois: int | None = None) -> np.ndarray:
    """Each RoI's share of the volume ``|R_b| / |V|`` ``[r]`` (label map or boolean stack, as ``roi_importance``)."""
    roi = torch.as_tensor(np.asarray(rois) if not torch.is_tensor(rois) else rois).cpu()
    n_voxels = float(np.prod(shape))
    if roi.dtype == torch.bool:
        return roi.flatten(1).sum(1).to(torch.float64).numpy() / n_voxels
    r = int(n_rois if n_rois is not None else roi.max() + 1)
    return np.bincount(roi.flatten().long().numpy(), minlength=r)[:r].astype(float) / n_voxels


def lift(mass_abs: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Volume-adjusted mass ``mass / share`` (``[..., r]`` by ``[r]``); NaN for an empty region."""
    shares = np.asarray(shares, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shares > 0, np.asarray(mass_abs, dtype=float) / np.where(shares > 0, shares, 1.0), np.nan)


def roi_importance(attributions, rois, kind: str = "abs", n_rois: int | None = None) -> np.ndarray:
    """Mass fractions ``[l, r]`` of each class's attribution inside each RoI.

    attributions: ``[l, *S]`` (tensor or array). rois: an integer label map ``[*S]`` (RoI id
    per voxel; ``r = n_rois`` or max id + 1) or a boolean stack ``[r, *S]`` (RoIs may
    overlap). Rows sum to 1 when the RoIs partition the volume; a class whose attribution
    is all zero gets a NaN row rather than a division error.
    """
    attr = torch.as_tensor(np.asarray(attributions) if not torch.is_tensor(attributions) else attributions)
    attr = attr.detach().to(torch.float64).cpu()
    roi = torch.as_tensor(np.asarray(rois) if not torch.is_tensor(rois) else rois).cpu()
    if kind == "lift":
        return lift(roi_importance(attr, roi, "abs", n_rois), volume_shares(roi, attr.shape[1:], n_rois))
    if roi.dtype == torch.bool:
        if roi.shape[1:] != attr.shape[1:]:
            raise ValueError(f"RoI stack shape {tuple(roi.shape)} does not match attributions {tuple(attr.shape)}")
        mass = _stack_mass(_evidence(attr, kind), roi)
    else:
        if roi.shape != attr.shape[1:]:
            raise ValueError(f"RoI label map shape {tuple(roi.shape)} does not match attributions {tuple(attr.shape)}")
        mass = _labelmap_mass(_evidence(attr, kind), roi.long(), n_rois)
    total = _evidence(attr, kind).flatten(1).sum(1, keepdim=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = (mass / total).numpy()
    fractions[(total <= 0).squeeze(1).numpy()] = np.nan
    return fractions


def _labelmap_mass(evidence: torch.Tensor, labels: torch.Tensor, n_rois: int | None) -> torch.Tensor:
    """Per-class sums of evidence by label, all classes in one index_add."""
    r = int(n_rois if n_rois is not None else labels.max() + 1)
    if labels.min() < 0 or labels.max() >= r:
        raise ValueError(f"RoI ids must lie in 0..{r - 1}")
    out = torch.zeros(evidence.shape[0], r, dtype=evidence.dtype)
    return out.index_add_(1, labels.flatten(), evidence.flatten(1))


def _stack_mass(evidence: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
    return evidence.flatten(1) @ stack.flatten(1).to(evidence.dtype).T


def local_matrices(attributions, pred_labels, n_classes: int,
                   extra_rois: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Matrices ``[l, n_classes + len(extra)]`` of every kind (abs/pos/neg/lift): predicted class
    RoIs, then extra masks; plus ``"volume"``, the RoIs' volume shares ``[n_classes + len(extra)]``."""
    pred = torch.as_tensor(np.asarray(pred_labels)).long()
    stack = (torch.stack([torch.as_tensor(np.asarray(m, dtype=bool)) for m in extra_rois.values()])
             if extra_rois else None)
    out = {}
    for kind in FRACTION_KINDS:
        parts = [roi_importance(attributions, pred, kind, n_rois=n_classes)]
        if stack is not None:
            parts.append(roi_importance(attributions, stack, kind))
        out[kind] = np.concatenate(parts, axis=1)
    shares = [volume_shares(pred, pred.shape, n_classes)]
    if stack is not None:
        shares.append(volume_shares(stack, pred.shape))
    out["volume"] = np.concatenate(shares)
    out["lift"] = lift(out["abs"], out["volume"])
    return out


def context_mass(matrix: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """``1 - e_{a->a}`` per explained class ``[C]``: evidence outside the class's own predicted region.

    ``matrix`` is ``[C, r]`` (or ``[n, C, r]``) as ``local_matrices`` returns it: one row per
    explained class, the model's class RoIs as its first columns (column ``c`` = class ``c``).
    ``classes``: the class id of each row (default ``0..C-1``, i.e. all classes explained);
    with a subset, row ``i`` is read at column ``classes[i]``, not ``i``.
    """
    matrix = np.asarray(matrix)
    rows = matrix.shape[-2]
    classes = list(range(rows)) if classes is None else [int(c) for c in classes]
    if len(classes) != rows:
        raise ValueError(f"{len(classes)} class ids for a matrix of {rows} rows")
    if classes and (min(classes) < 0 or max(classes) >= matrix.shape[-1]):
        raise ValueError(f"class ids must lie in 0..{matrix.shape[-1] - 1}")
    return 1.0 - matrix[..., np.arange(rows), classes]


def global_matrix(local: np.ndarray) -> np.ndarray:
    """Mean of local matrices ``[n, l, r] -> [l, r]`` over a cohort (NaN rows ignored)."""
    local = np.asarray(local, dtype=float)
    if local.ndim != 3 or local.shape[0] == 0:
        raise ValueError(f"expected a non-empty stack [n, l, r], got shape {local.shape}")
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(local), axis=0)
        sums = np.nansum(local, axis=0)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def region_mean_attribution(attributions, labels, n_rois: int) -> np.ndarray:
    """Mean absolute attribution of each class per voxel of each region ``[l, n_rois]``.

    The ``{a}_explanation_in_{b}_mean`` of the paper's published aggregates: ``Σ_{v in b} |e_a(v)|``
    divided by the voxel count of region b (``labels``: an integer label map ``[*S]``); NaN
    where a region has no voxel.
    """
    attr = torch.as_tensor(np.asarray(attributions) if not torch.is_tensor(attributions) else attributions)
    label_map = torch.as_tensor(np.asarray(labels)).long()
    sums = _labelmap_mass(attr.detach().to(torch.float64).cpu().abs(), label_map, n_rois).numpy()
    voxels = np.bincount(label_map.flatten().numpy(), minlength=n_rois)[:n_rois].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(voxels > 0, sums / voxels, np.nan)


def sampling_noise(samples, pred_labels, n_classes: int,
                   extra_rois: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Standard error ``[k, r]`` per mass kind of ``local_matrices`` of the mean of n noisy samples.

    ``samples``: ``[n, k, *S]``, each SmoothGrad sample's attribution (or any common positive
    multiple of them, e.g. the weighted terms ``a_s / n``: mass fractions do not change with
    the scale). Delete-one jackknife: ``θ_s`` = the matrix of the leave-one-out mean
    ``(Σ a − a_s) / (n − 1)``, ``SE² = (n − 1)/n · Σ_s (θ_s − θ̄)²``; for a fraction that is
    linear in the mean this is exactly ``std(θ of each sample, ddof=1) / √n``. One class row at
    a time, so the float64 copies are ``[n, *S]``. NaN where a leave-one-out row has no mass.
    """
    samples = torch.as_tensor(np.asarray(samples) if not torch.is_tensor(samples) else samples)
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"the sampling noise needs at least 2 samples, got {n}")
    rows: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    for j in range(samples.shape[1]):
        row = samples[:, j].detach().to(torch.float64).cpu()
        leave_one_out = (row.sum(0, keepdim=True) - row) / (n - 1)  # [n, *S]
        thetas = local_matrices(leave_one_out, pred_labels, n_classes, extra_rois)
        for kind in KINDS:
            theta = thetas[kind]
            spread = ((theta - theta.mean(0)) ** 2).sum(0)
            rows[kind].append(np.sqrt((n - 1) / n * spread))
    return {kind: np.stack(r) for kind, r in rows.items()}

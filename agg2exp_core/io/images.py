"""Scans of one case: NIfTI read with nibabel, reoriented, resampled and scaled by MONAI.

Every problem with a user's files is raised as an ``InputError`` naming the file and the
problem, before any result is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.io.limits import check_voxels
from agg2exp_core.io.manifest import ROI_PREFIX
from agg2exp_core.io.preprocessing import Preprocessing


@dataclass
class Case:
    """One preprocessed case. Arrays in RAS+ ``[X, Y, Z]`` on the preprocessed grid."""

    case_id: str
    image: torch.Tensor                    # [1, X, Y, Z] float32, HU window scaled to [0, 1]
    affine: np.ndarray                     # 4x4 voxel -> world (RAS mm) of the preprocessed grid
    label: torch.Tensor | None = None      # [X, Y, Z] int64 ground truth, if given
    rois: dict[str, np.ndarray] = field(default_factory=dict)  # extra RoI masks, bool [X, Y, Z]
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def hu(self, window: tuple[float, float] = (-1024.0, 1024.0)) -> np.ndarray:
        lo, hi = window
        return (self.image[0].numpy() * (hi - lo) + lo).astype(np.float32)


def load_nifti(path: str | Path, target_spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """(3-D float array, affine) of a NIfTI file; corrupt, non-3-D or non-finite data raise.

    The header's size (and, with ``target_spacing``, the resampled size) is checked against
    ``io.limits`` before any voxel is read.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise _unreadable(path, err) from None
    check_voxels(path, img.shape, img.affine, target_spacing)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise _unreadable(path, err) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D volume, got shape {data.shape}")
    if min(data.shape) < 2:
        raise InputError(path, f"degenerate volume shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(path, f"{int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    affine = img.affine
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "invalid affine")
    return data, np.asarray(affine, dtype=np.float64)


def _unreadable(path: Path, err: Exception) -> InputError:
    return InputError(path, f"cannot read NIfTI ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'corrupt'})")


def load_case(row: Mapping, preprocessing: Preprocessing = Preprocessing(),
              n_labels: int | None = None) -> Case:
    """Load one manifest row: validate, reorient to RAS, resample, scale HU to [0, 1]."""
    image, affine = load_nifti(row["image"], preprocessing.target_spacing)
    label = _load_label(row, image, affine, n_labels) if row.get("label") else None
    rois = {}
    for column in [c for c in row.keys() if str(c).startswith(ROI_PREFIX)]:
        if row[column]:
            rois[column[len(ROI_PREFIX):]] = _load_mask(row[column], image, affine)
    image_t, grid = preprocessing.image(image, affine)
    case = Case(case_id=str(row["case_id"]), image=image_t, affine=grid,
                meta={k: row.get(k) for k in ("dataset", "split", "sex", "age", "image", "label")})
    if label is not None:
        case.label = preprocessing.labels(label, affine).long()
    case.rois = {name: preprocessing.labels(m, affine).numpy() > 0 for name, m in rois.items()}
    return case


def _load_label(row: Mapping, image: np.ndarray, affine: np.ndarray, n_labels: int | None) -> np.ndarray:
    path = row["label"]
    label, label_affine = load_nifti(path)
    _check_same_grid(path, label, label_affine, image, affine)
    if (label != np.round(label)).any() or label.min() < 0:
        raise InputError(path, "label values must be non-negative integers")
    if n_labels is not None and label.max() >= n_labels:
        raise InputError(path, f"label value {int(label.max())} outside the label set 0..{n_labels - 1}")
    return label


def _load_mask(path: str, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    mask, mask_affine = load_nifti(path)
    _check_same_grid(path, mask, mask_affine, image, affine)
    return mask > 0


def _check_same_grid(path, data, data_affine, image, image_affine) -> None:
    if data.shape != image.shape:
        raise InputError(path, f"shape {data.shape} does not match the image's {image.shape}")
    if not np.allclose(data_affine, image_affine, atol=1e-3):
        raise InputError(path, "affine does not match the image's affine")


def save_nifti(volume: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write a volume as NIfTI with its affine as both qform and sform (units: mm)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(volume), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def save_like(volume: np.ndarray, case: Case, path: str | Path, dtype=np.float32) -> Path:
    """Write an array on the case's preprocessed grid as NIfTI; world-aligned with the scan."""
    return save_nifti(np.asarray(volume, dtype=dtype), case.affine, path)

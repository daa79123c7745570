"""Scans of one case: NIfTI (nibabel), NRRD / MHA (SimpleITK) or a DICOM series folder
(pydicom + MONAI), reoriented, resampled and scaled by the model's ``Preprocessing``.

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
from agg2exp_core.io.headers import (FORMATS, ITK_SUFFIXES, NIFTI_SUFFIXES, check_case_headers, first_line,
                                     itk_affine, itk_header, itk_kind, nifti_header, on_image_grid)
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




def load_volume(path: str | Path, target_spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """``(array [X, Y, Z] float32, RAS affine 4x4)`` of a scan: a NIfTI, NRRD or MHA file or a
    DICOM series folder. Orientation and spacing are kept (the affine maps voxels to RAS mm).

    The stored size (and, with ``target_spacing``, the size after resampling) is checked
    against ``io.limits`` before any voxel is read. Each problem (unreadable file, too large,
    4-D data, non-finite voxels, degenerate shape, invalid affine, a broken DICOM series) is
    one ``InputError`` naming the path.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        from agg2exp_core.io.dicom import read_dicom_series

        data, affine = read_dicom_series(path, target_spacing)
    elif name.endswith(tuple(ITK_SUFFIXES)):
        data, affine = _read_itk(path, itk_kind(name), target_spacing)
    elif name.endswith(".dcm"):
        raise InputError(path, "a DICOM file holds one slice; give the folder of its series")
    else:
        data, affine = _read_nifti(path, target_spacing)
    return _checked(path, data, affine)


def load_nifti(path: str | Path, target_spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """(3-D float array, affine) of a NIfTI file; corrupt, too large, non-3-D or non-finite data raise."""
    path = Path(path)
    return _checked(path, *_read_nifti(path, target_spacing))


def _read_nifti(path: Path, target_spacing=None) -> tuple[np.ndarray, np.ndarray | None]:
    img = nifti_header(path, target_spacing)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            raise InputError(path, f"not a readable scan (expected {FORMATS})") from None
        raise InputError(path, f"cannot read NIfTI ({type(err).__name__}: {first_line(err)})") from None
    return data, img.affine


def _read_itk(path: Path, kind: str, target_spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """NRRD / MetaImage by SimpleITK: its LPS ``(z, y, x)`` image as a RAS ``[X, Y, Z]`` array."""
    import SimpleITK as sitk

    reader = itk_header(path, kind, target_spacing)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(path, f"cannot read {kind} ({first_line(err)})") from None
    dim = image.GetDimension()
    data = sitk.GetArrayFromImage(image).astype(np.float32).transpose(tuple(range(dim))[::-1])  # -> [X, Y, Z(, T)]
    return data, itk_affine(image)


def _checked(path: Path, data: np.ndarray, affine) -> tuple[np.ndarray, np.ndarray]:
    """The checks every format shares; a 4-D volume with one frame is a 3-D one."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D volume, got shape {data.shape}")
    if min(data.shape) < 2:
        raise InputError(path, f"degenerate volume shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(path, f"{int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "invalid affine")
    return np.ascontiguousarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64)


def load_case(row: Mapping, preprocessing: Preprocessing = Preprocessing(),
              n_labels: int | None = None) -> Case:
    """Load one manifest row: validate, reorient to RAS, resample, scale HU to [0, 1].

    The headers of the label and RoI masks are compared with the image's before any voxel is read.
    """
    check_case_headers(row, preprocessing.target_spacing)
    image, affine = load_volume(row["image"], preprocessing.target_spacing)
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
    label = on_image_grid(path, *load_volume(path), image, affine)
    if (label != np.round(label)).any() or label.min() < 0:
        raise InputError(path, "label values must be non-negative integers")
    if n_labels is not None and label.max() >= n_labels:
        raise InputError(path, f"label value {int(label.max())} outside the label set 0..{n_labels - 1}")
    return label


def _load_mask(path: str, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return on_image_grid(path, *load_volume(path), image, affine) > 0


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

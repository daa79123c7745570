"""Scan headers, read and checked before any voxel: size limits, voxel sizes, value types,
detached data files (``io.files``), and whether a label map or RoI mask lies on the grid of
its image. ``load_case`` compares every header of a case before it reads one voxel, so a
mismatched (or huge) mask is refused without being read.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from agg2exp_core.errors import InputError
from agg2exp_core.io.files import check_data_size, check_regular, detached_data_file
from agg2exp_core.io.limits import check_voxels
from agg2exp_core.io.manifest import ROI_PREFIX

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
FORMATS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"
SIZE_SLACK_BYTES = 1 << 20  # headers, extensions, gzip framing
GRID_TOLERANCE_MM = 1e-3


def itk_kind(name: str) -> str:
    return ITK_SUFFIXES[next(s for s in ITK_SUFFIXES if name.lower().endswith(s))]


def nifti_header(path: Path, target_spacing=None):
    """The nibabel image of a NIfTI file, its header checked and no voxel read yet."""
    check_regular(path)
    try:
        img = nib.load(str(path))
        with nib.openers.ImageOpener(str(path)) as f:  # nibabel's loaded header has pixdim 0 replaced by 1
            raw = img.header_class.from_fileobj(f, check=False)
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise InputError(path, f"cannot read NIfTI ({type(err).__name__}: {first_line(err)})") from None
    if "pixdim" in raw:
        zooms = np.asarray(raw["pixdim"][1:1 + min(3, len(img.shape))], dtype=float)
        if not (np.isfinite(zooms).all() and (zooms != 0).all()):
            raise InputError(path, f"voxel size (pixdim) {', '.join(f'{z:g}' for z in zooms)} mm is not a size; "
                                   "fix the header (nibabel would read it as 1 mm)")
    if np.dtype(img.get_data_dtype()).kind == "c":
        raise InputError(path, f"complex voxels ({img.get_data_dtype()}); a scan holds real values")
    check_voxels(path, img.shape, img.affine, target_spacing)
    _check_file_size(path, math.prod(img.shape) * np.dtype(img.get_data_dtype()).itemsize)
    return img


def _check_file_size(path: Path, declared_bytes: int) -> None:
    """A file far larger than its header's voxels (uncompressed, or deflated: never larger) is refused
    before it is hashed or read: gigabytes behind a small header are not a scan."""
    size = os.stat(path).st_size
    if size > declared_bytes * 1.1 + SIZE_SLACK_BYTES:
        raise InputError(path, f"holds {size:,} bytes, far more than the {declared_bytes:,} bytes of voxels its "
                               "header declares; not read")


def itk_header(path: Path, kind: str, target_spacing=None):
    """A SimpleITK reader of a NRRD / MetaImage file, its header (and data file) checked, no voxel read."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError(path, f"reading {kind} needs SimpleITK (pip install SimpleITK==2.5.7)") from None
    check_regular(path)
    data_file = detached_data_file(path)  # before SimpleITK opens whatever the header names
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: check the size before the voxels
    except RuntimeError as err:
        raise InputError(path, f"cannot read {kind} ({first_line(err)})") from None
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel:
        raise InputError(path, f"complex voxels ({pixel}); a scan holds real values")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, f"expected one value per voxel, got {reader.GetNumberOfComponents()} components")
    check_voxels(path, reader.GetSize(), np.diag([*reader.GetSpacing()[:3], 1.0]), target_spacing)
    if data_file is not None:
        bits = int(re.search(r"(\d+)-bit", pixel).group(1))
        check_data_size(path, data_file, math.prod(reader.GetSize()) * bits // 8)
    return reader


def itk_affine(image) -> np.ndarray | None:
    """The RAS affine of a SimpleITK image or reader (LPS direction, spacing, origin); None below 3-D."""
    dim = len(image.GetSize())
    if dim < 3:
        return None
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)[:3]
    lps[:3, 3] = np.asarray(image.GetOrigin(), dtype=float)[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def scan_header(path: str | Path, target_spacing=None) -> tuple[tuple[int, ...], np.ndarray | None]:
    """``(shape, RAS affine)`` of a scan file or DICOM folder from its header(s), checked, no voxel read.
    ``shape`` is as stored ([X, Y, Z] and any further axes)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        from agg2exp_core.io.dicom import dicom_header

        return dicom_header(path, target_spacing)
    if name.endswith(tuple(ITK_SUFFIXES)):
        reader = itk_header(path, itk_kind(name), target_spacing)
        return tuple(int(s) for s in reader.GetSize()), itk_affine(reader)
    if name.endswith(".dcm"):
        raise InputError(path, "a DICOM file holds one slice; give the folder of its series")
    img = nifti_header(path, target_spacing)
    return tuple(int(s) for s in img.shape), img.affine


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The [X, Y, Z] of a stored shape (a 4-D volume with one frame is a 3-D one)."""
    return tuple(shape[:3]) if len(shape) == 4 and shape[3] == 1 else tuple(shape)


def grid_transform(path, shape, affine, image_shape, image_affine):
    """How a label or mask of ``shape``/``affine`` is reoriented onto the image's grid (None: as
    stored); it may be stored with its axes permuted or flipped (a NIfTI label of a DICOM image,
    say) as long as it is the same grid. A different grid is one ``InputError``."""
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    shape, image_shape = _spatial(tuple(shape)), _spatial(tuple(image_shape))
    if affine is None or len(shape) != 3:
        raise InputError(path, f"expected a 3-D volume, got shape {shape}")
    if shape == image_shape and np.allclose(affine, image_affine, atol=GRID_TOLERANCE_MM):
        return None
    transform = ornt_transform(io_orientation(affine), io_orientation(image_affine))
    moved_shape = tuple(int(shape[int(axis)]) for axis in np.argsort(transform[:, 0]))
    moved_affine = affine @ inv_ornt_aff(transform, shape)
    if moved_shape == image_shape and np.allclose(moved_affine, image_affine, atol=GRID_TOLERANCE_MM):
        return transform
    if shape != image_shape:
        raise InputError(path, f"shape {shape} does not match the image's {image_shape}")
    raise InputError(path, "affine does not match the image's affine")


def on_image_grid(path, data: np.ndarray, data_affine: np.ndarray, image: np.ndarray,
                  image_affine: np.ndarray) -> np.ndarray:
    """A label map or mask (read) in the image's voxel order (see ``grid_transform``)."""
    from nibabel.orientations import apply_orientation

    transform = grid_transform(path, data.shape, data_affine, image.shape, image_affine)
    return data if transform is None else np.ascontiguousarray(apply_orientation(data, transform))


def check_case_headers(row: Mapping, target_spacing=None) -> None:
    """The image's header (size limits) and those of its label and RoI masks (the image's grid),
    compared before any voxel of the case is read."""
    image_shape, image_affine = scan_header(row["image"], target_spacing)
    if image_affine is None or len(_spatial(image_shape)) != 3:
        return  # load_volume says what is wrong with the image itself
    columns = ["label", *[c for c in row.keys() if str(c).startswith(ROI_PREFIX)]]
    for column in (c for c in columns if row.get(c)):
        shape, affine = scan_header(row[column])
        grid_transform(row[column], shape, affine, image_shape, image_affine)


def first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else "corrupt"

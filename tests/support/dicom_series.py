"""Write a volume as a CT DICOM series with pydicom (one file per slice), for the scan tests.

The volume ``[I, J, K]`` with its RAS affine is written as slices along K: a slice's
columns run along I, its rows along J (the order MONAI's PydicomReader reads back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INTERCEPT = -1024.0


def write_ct_series(folder: Path, hu: np.ndarray, affine: np.ndarray, *, series_uid: str | None = None,
                    skip: tuple[int, ...] = (), shear_mm: float = 0.0, first_number: int = 1,
                    gantry_tilt: float | None = None, headers: dict | None = None) -> Path:
    """Integer HU ``hu`` as stored values ``hu - INTERCEPT`` (uint16) with RescaleIntercept.

    ``skip``: slice indices left out (a missing slice); ``shear_mm``: shift of each slice
    along the column direction per slice (a tilted gantry); ``gantry_tilt``: the tag's value;
    ``headers``: more tags by keyword (Manufacturer, KVP, ...) set on every slice.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import DSfloat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    col_step, row_step = lps[:3, 0], lps[:3, 1]           # voxel steps along I (columns) and J (rows)
    dc, dr = np.linalg.norm(col_step), np.linalg.norm(row_step)
    orientation = [*(col_step / dc), *(row_step / dr)]
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    ds_ = lambda values: [DSfloat(float(v), auto_format=True) for v in values]  # noqa: E731
    for k in range(hu.shape[2]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "phantom"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.InstanceNumber = first_number + k
        position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3] + k * shear_mm * row_step / dr
        ds.ImagePositionPatient = ds_(position)
        ds.ImageOrientationPatient = ds_(orientation)
        ds.PixelSpacing = ds_([dr, dc])                   # [between rows, between columns]
        ds.SliceThickness = DSfloat(float(np.linalg.norm(lps[:3, 2])), auto_format=True)
        ds.RescaleSlope, ds.RescaleIntercept = DSfloat(1.0), DSfloat(INTERCEPT)
        if gantry_tilt is not None:
            ds.GantryDetectorTilt = DSfloat(gantry_tilt, auto_format=True)
        for keyword, value in (headers or {}).items():
            setattr(ds, keyword, value)
        stored = np.round(hu[:, :, k] - INTERCEPT).astype(np.uint16).T  # rows = J, columns = I
        ds.set_pixel_data(np.ascontiguousarray(stored), photometric_interpretation="MONOCHROME2", bits_stored=16)
        ds.save_as(folder / f"slice_{k:04d}.dcm", enforce_file_format=True)
    return folder


def oblique_affine(spacing: tuple[float, float, float], degrees: tuple[float, float] = (20.0, 10.0),
                   origin=(-120.0, 95.0, -60.0)) -> np.ndarray:
    """A RAS affine rotated about z then x (an oblique acquisition)."""
    a, b = np.radians(degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine

"""Cohort IO and preprocessing: manifest CSV, NIfTI loading with nibabel, MONAI transforms.

Every problem with a user's files is raised as an ``InputError`` naming the file (or the
manifest row) and the problem, before any result is written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ScaleIntensityRange, Spacing

from agg2exp_core.errors import InputError

REQUIRED_COLUMNS = ("case_id", "image")
OPTIONAL_COLUMNS = ("label", "sex", "age", "dataset", "split")
ROI_PREFIX = "roi:"
SEX_CODES = {"F": "F", "M": "M", "FEMALE": "F", "MALE": "M"}
AGE_RANGE = (0.0, 120.0)
SPLITS = {"train", "val", "test", ""}


@dataclass(frozen=True)
class Preprocessing:
    """How a scan becomes network input: RAS orientation, target spacing, HU window to [0, 1]."""

    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    hu_window: tuple[float, float] = (-1024.0, 1024.0)

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing) if self.spacing else None, "hu_window": list(self.hu_window)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocessing":
        spacing = d.get("spacing")
        return cls(tuple(float(s) for s in spacing) if spacing else None,
                   tuple(float(h) for h in d.get("hu_window", (-1024.0, 1024.0))))


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


# ---------------------------------------------------------------- manifest
def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a cohort manifest; paths become absolute (relative to the manifest)."""
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    for column in OPTIONAL_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.fillna("")
    frame["case_id"] = frame["case_id"].astype(str).str.strip()
    _check_case_ids(path, frame["case_id"])
    frame["sex"] = [_sex(path, cid, s) for cid, s in zip(frame.case_id, frame.sex)]
    frame["age"] = [_age(path, cid, a) for cid, a in zip(frame.case_id, frame.age)]
    frame["dataset"] = frame["dataset"].astype(str).str.strip().replace("", "default")
    frame["split"] = [_split(path, cid, s) for cid, s in zip(frame.case_id, frame.split)]
    for column in ["image", "label", *roi_columns(frame)]:
        frame[column] = [_resolve(path, cid, column, p, required=(column == "image"))
                         for cid, p in zip(frame.case_id, frame[column])]
    return frame


def roi_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(ROI_PREFIX)]


def read_metadata(path: str | Path) -> pd.DataFrame:
    """A metadata CSV (case_id, sex, age) to join onto cases, validated like a manifest."""
    path = Path(path)
    frame = _read_csv(path)
    if "case_id" not in frame.columns:
        raise InputError(path, "missing column case_id")
    frame = frame.fillna("")
    frame["case_id"] = frame["case_id"].astype(str).str.strip()
    _check_case_ids(path, frame["case_id"])
    if "sex" in frame.columns:
        frame["sex"] = [_sex(path, cid, s) for cid, s in zip(frame.case_id, frame.sex)]
    if "age" in frame.columns:
        frame["age"] = [_age(path, cid, a) for cid, a in zip(frame.case_id, frame.age)]
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV ({type(err).__name__})") from None


def _check_case_ids(path: Path, ids: pd.Series) -> None:
    if (ids == "").any():
        raise InputError(path, f"empty case_id in row {int((ids == '').to_numpy().argmax()) + 2}")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(path, f"duplicate case_id '{dup.iloc[0]}'")


def _sex(path: Path, case_id: str, value) -> str | None:
    text = str(value).strip().upper()
    if text == "":
        return None
    if text not in SEX_CODES:
        raise InputError(path, f"case '{case_id}': unknown sex code '{value}' (use F, M or empty)")
    return SEX_CODES[text]


def _age(path: Path, case_id: str, value) -> float | None:
    text = str(value).strip()
    if text == "":
        return None
    try:
        age = float(text)
    except ValueError:
        raise InputError(path, f"case '{case_id}': age '{value}' is not a number") from None
    if not (math.isfinite(age) and AGE_RANGE[0] <= age <= AGE_RANGE[1]):
        raise InputError(path, f"case '{case_id}': impossible age {value} (expected {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years)")
    return age


def _split(path: Path, case_id: str, value) -> str:
    text = str(value).strip().lower()
    if text not in SPLITS:
        raise InputError(path, f"case '{case_id}': unknown split '{value}' (use train, val, test or empty)")
    return text


def _resolve(path: Path, case_id: str, column: str, value, required: bool) -> str:
    text = str(value).strip()
    if text == "":
        if required:
            raise InputError(path, f"case '{case_id}': empty '{column}' path")
        return ""
    resolved = (path.parent / text).resolve()
    if not resolved.is_file():
        raise InputError(path, f"case '{case_id}': {column} file not found: {text}")
    return str(resolved)


# ---------------------------------------------------------------- NIfTI
def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(3-D float array, affine) of a NIfTI file; corrupt, non-3-D or non-finite data raise."""
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for truncated/corrupt files
        raise InputError(path, f"cannot read NIfTI ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'corrupt'})") from None
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


def load_case(row: Mapping, preprocessing: Preprocessing = Preprocessing(),
              n_labels: int | None = None) -> Case:
    """Load one manifest row: validate, reorient to RAS, resample, scale HU to [0, 1]."""
    image, affine = load_nifti(row["image"])
    label = _load_label(row, image, affine, n_labels) if row.get("label") else None
    rois = {}
    for column in [c for c in row.keys() if str(c).startswith(ROI_PREFIX)]:
        if row[column]:
            rois[column[len(ROI_PREFIX):]] = _load_mask(row[column], image, affine)
    image_t = _resample(image, affine, preprocessing, mode="bilinear")
    lo, hi = preprocessing.hu_window
    scaled = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(image_t)
    case = Case(case_id=str(row["case_id"]), image=scaled.as_tensor().float(),
                affine=np.asarray(image_t.affine, dtype=np.float64),
                meta={k: row.get(k) for k in ("dataset", "split", "sex", "age", "image", "label")})
    if label is not None:
        case.label = _resample(label, affine, preprocessing, mode="nearest").as_tensor()[0].round().long()
    case.rois = {name: _resample(m.astype(np.float32), affine, preprocessing, mode="nearest").as_tensor()[0].numpy() > 0.5
                 for name, m in rois.items()}
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


def _resample(volume: np.ndarray, affine: np.ndarray, preprocessing: Preprocessing, mode: str) -> MetaTensor:
    """[1, X, Y, Z] MetaTensor in RAS at the target spacing (affine tracked by MONAI)."""
    tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume))[None].float(), affine=torch.as_tensor(affine))
    tensor = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
    if preprocessing.spacing is not None:
        current = np.linalg.norm(np.asarray(tensor.affine)[:3, :3], axis=0)
        if not np.allclose(current, preprocessing.spacing, rtol=1e-3):
            tensor = Spacing(pixdim=preprocessing.spacing, mode=mode)(tensor)
    return tensor


def save_like(volume: np.ndarray, case: Case, path: str | Path, dtype=np.float32) -> Path:
    """Write an array on the case's preprocessed grid as NIfTI; world-aligned with the scan."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=dtype), case.affine), str(path))
    return path

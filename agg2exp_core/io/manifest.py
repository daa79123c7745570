"""The cohort manifest (one CSV row per case) and metadata CSVs, validated before any work.

``image``, ``label`` and ``roi:*`` name a scan file (NIfTI, NRRD, MHA) or a DICOM series
folder, relative to the manifest's folder. Every path must resolve (symlinks followed)
inside the cohort root (default: the manifest's folder), so that a manifest from someone
else cannot make the tool read, and show, any file the user can read; ``allow_outside_root``
lifts that for cohorts spread over several folders.

Every problem is raised as an ``InputError`` naming the file and the row's case id.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from agg2exp_core.errors import InputError
from agg2exp_core.io.case_fields import ROI_PREFIX, check_header, manifest_fields

REQUIRED_COLUMNS = ("case_id", "image")
OPTIONAL_COLUMNS = ("label", "sex", "age", "dataset", "split")
SEX_CODES = {"F": "F", "M": "M", "FEMALE": "F", "MALE": "M"}
AGE_RANGE = (0.0, 120.0)
SPLITS = {"train", "val", "test", ""}
# Case ids name files (artefacts, NIfTI exports): letters, digits, '.', '_', '-', no leading dot,
# so an id can never leave its folder ('../x', '/tmp/x') or hide a file ('.x').
CASE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
CASE_ID_RULE = "use letters, digits, '.', '_' and '-', not starting with '.'"
# An id names files like '<id>_<label>.nii.gz'; most file systems allow 255 bytes per name.
MAX_CASE_ID = 128


def read_manifest(path: str | Path, cohort_root: str | Path | None = None,
                  allow_outside_root: bool = False) -> pd.DataFrame:
    """Read and validate a cohort manifest; paths become absolute (relative to the manifest).

    Paths resolving outside ``cohort_root`` (default: the manifest's folder) are refused
    unless ``allow_outside_root``.
    """
    path = Path(path)
    root = Path(cohort_root if cohort_root is not None else path.parent).resolve()
    if not root.is_dir():
        raise InputError("--cohort-root", f"{root} is not a folder")
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
    manifest_fields(path, frame)  # every other column is case metadata: refused here when bad (io.case_fields)
    frame["sex"] = [_sex(path, cid, s) for cid, s in zip(frame.case_id, frame.sex)]
    frame["age"] = [_age(path, cid, a) for cid, a in zip(frame.case_id, frame.age)]
    frame["dataset"] = frame["dataset"].astype(str).str.strip().replace("", "default")
    frame["split"] = [_split(path, cid, s) for cid, s in zip(frame.case_id, frame.split)]
    for column in ["image", "label", *roi_columns(frame)]:
        frame[column] = [_resolve(path, row + 2, cid, column, p, required=(column == "image"),
                                  root=None if allow_outside_root else root)
                         for row, (cid, p) in enumerate(zip(frame.case_id, frame[column]))]
    return frame


def roi_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(ROI_PREFIX)]


def read_metadata(path: str | Path) -> pd.DataFrame:
    """A metadata CSV (case_id, sex, age, any other column a field) to join onto cases, validated like a manifest."""
    path = Path(path)
    frame = _read_csv(path)
    if "case_id" not in frame.columns:
        raise InputError(path, "missing column case_id")
    frame = frame.fillna("")
    frame["case_id"] = frame["case_id"].astype(str).str.strip()
    _check_case_ids(path, frame["case_id"])
    manifest_fields(path, frame)
    if "sex" in frame.columns:
        frame["sex"] = [_sex(path, cid, s) for cid, s in zip(frame.case_id, frame.sex)]
    if "age" in frame.columns:
        frame["age"] = [_age(path, cid, a) for cid, a in zip(frame.case_id, frame.age)]
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "file not found")
    text = _utf8_text(path)
    check_header(path, text)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"not a readable CSV ({type(err).__name__})") from None


def _utf8_text(path: Path) -> str:
    """The file as UTF-8 text (a leading byte-order mark allowed); else where it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        guess = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise InputError(path, f"not UTF-8 text: byte 0x{data[err.start]:02x} on line {line}{guess}; "
                               "save the CSV as UTF-8") from None


def _check_case_ids(path: Path, ids: pd.Series) -> None:
    if (ids == "").any():
        raise InputError(path, f"empty case_id in row {int((ids == '').to_numpy().argmax()) + 2}")
    bad = ids[~ids.map(lambda c: CASE_ID.fullmatch(c) is not None)]
    if len(bad):
        raise InputError(path, f"case_id {bad.iloc[0]!r} in row {int(bad.index[0]) + 2} is not a safe file name "
                               f"({CASE_ID_RULE})")
    long = ids[ids.str.len() > MAX_CASE_ID]
    if len(long):
        raise InputError(path, f"case_id in row {int(long.index[0]) + 2} has {len(long.iloc[0])} characters, "
                               f"more than {MAX_CASE_ID} (it names files)")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(path, f"duplicate case_id '{dup.iloc[0]}'")
    folded = ids.str.lower()
    clash = folded[folded.duplicated()]
    if len(clash):
        first = ids[folded == clash.iloc[0]]
        raise InputError(path, f"case ids '{first.iloc[0]}' (row {int(first.index[0]) + 2}) and '{first.iloc[1]}' "
                               f"(row {int(first.index[1]) + 2}) differ only in letter case; their files would "
                               "collide on a case-insensitive file system")


def file_safe_name(name: str) -> str:
    """``name`` as one file-name component: characters outside ``[A-Za-z0-9._-]`` become '_',
    a leading dot too (label names of a checkpoint are not trusted as paths)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))
    return "_" + safe[1:] if safe.startswith(".") else (safe or "_")


def check_roi_names(manifest: str | Path, frame: pd.DataFrame, class_names: Sequence[str],
                    model: str | Path = "model") -> list[str]:
    """The manifest's extra RoI names, after checking that every RoI has its own name.

    Duplicate label names of the model or a ``roi:<name>`` column named like one of its
    classes would give two RoIs one name in the store: one ``InputError`` up front.
    """
    seen: dict[str, int] = {}
    for channel, name in enumerate(class_names):
        if name in seen:
            raise InputError(model, f"duplicate label name '{name}' (channels {seen[name]} and {channel})")
        seen[name] = channel
    extra = [str(c)[len(ROI_PREFIX):] for c in roi_columns(frame)]
    for name in extra:
        if not name.strip():
            raise InputError(manifest, f"RoI column '{ROI_PREFIX}' has no name (use '{ROI_PREFIX}<name>')")
        if name in seen:
            raise InputError(manifest, f"RoI column '{ROI_PREFIX}{name}' has the name of the model's class "
                                       f"'{name}'; rename the column")
    return extra


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


def _resolve(path: Path, row: int, case_id: str, column: str, value, required: bool, root: Path | None) -> str:
    text = str(value).strip()
    if text == "":
        if required:
            raise InputError(path, f"case '{case_id}': empty '{column}' path")
        return ""
    resolved = (path.parent / text).resolve()
    if not resolved.exists():
        raise InputError(path, f"case '{case_id}': {column} file not found: {text}")
    if root is not None and not resolved.is_relative_to(root):
        raise InputError(path, f"row {row} (case '{case_id}'), column {column}: {text} resolves to {resolved}, "
                               f"outside the cohort root {root} (--cohort-root DIR, or --allow-outside-root)")
    if resolved.is_dir():  # a DICOM series; its slices are checked when the case is loaded
        from agg2exp_core.io.dicom import holds_dicom

        if not holds_dicom(resolved):
            raise InputError(path, f"case '{case_id}': {column} folder holds no DICOM files: {text}")
    elif not resolved.is_file():
        raise InputError(path, f"case '{case_id}': {column} is not a regular file (a FIFO or device?): {text}")
    return str(resolved)

"""DICOM series folders: slice headers checked with pydicom, voxels read by MONAI's PydicomReader.

MONAI stacks the slices of a folder in ``InstanceNumber`` order and derives the slice
step from the first and last ``ImagePositionPatient``, i.e. it assumes one series, one
orientation and evenly spaced, untilted slices. Those assumptions are checked here
first, so that a folder which breaks them is one ``InputError`` naming the folder rather
than a volume whose voxels sit at the wrong place. pydicom is imported lazily.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from agg2exp_core.errors import InputError
from agg2exp_core.io.limits import check_voxels

STEP_TOLERANCE = 0.01       # relative deviation of a slice step from the median step
DIRECTION_TOLERANCE = 1e-4  # of unit direction cosines across slices
TILT_TOLERANCE_DEG = 0.1    # angle between the slice step and the slice normal


def pydicom_module(source):
    """pydicom, or an ``InputError`` saying how to get it."""
    try:
        import pydicom
    except ImportError:
        raise InputError(source, "reading DICOM needs pydicom (pip install pydicom==3.0.2)") from None
    return pydicom


def dicom_files(folder: Path) -> list[Path]:
    """The files of a folder that carry the DICOM preamble (as MONAI's reader selects them)."""
    is_dicom = pydicom_module(folder).misc.is_dicom
    return [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".") and is_dicom(f)]


def holds_dicom(folder: Path) -> bool:
    """Whether a folder has at least one DICOM file (a quick check for manifests)."""
    is_dicom = pydicom_module(folder).misc.is_dicom
    return any(f.is_file() and not f.name.startswith(".") and is_dicom(f) for f in folder.iterdir())


# Header fields a series contributes to the case's metadata (case_field, source 'dicom'), and which are numbers.
SERIES_FIELDS = ("Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "SliceThickness", "KVP",
                 "ContrastBolusAgent")
NUMERIC_SERIES_FIELDS = ("SliceThickness", "KVP")


def series_fields(folder: str | Path) -> dict[str, object]:
    """``SERIES_FIELDS`` of a series folder, as its first slice's header holds them (absent tags left out).

    Series-level tags, so one header suffices. A folder that cannot be read gives ``{}``: loading the case
    reports what is wrong with it, as one failure of that case.
    """
    pydicom = pydicom_module(folder)
    try:
        files = dicom_files(Path(folder))
        ds = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=list(SERIES_FIELDS))
    except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files; see the docstring
        return {}
    values = {name: ds.get(name) for name in SERIES_FIELDS}
    return {name: value for name, value in values.items() if value not in (None, "")}


def read_dicom_series(folder: str | Path, target_spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """``(array [X, Y, Z] float32, RAS affine 4x4)`` of the one series in ``folder``.

    X runs along a slice's columns, Y along its rows, Z across slices (MONAI's order);
    values are ``RescaleSlope · stored + RescaleIntercept`` (HU for CT). The series' size is
    checked against ``io.limits`` from its headers, before any pixel is read.
    """
    folder = Path(folder)
    dicom_header(folder, target_spacing)
    return _read_voxels(folder)


def dicom_header(folder: Path, target_spacing=None) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape [X, Y, Z], RAS affine)`` of the series in ``folder`` from its slice headers alone,
    checked (one series, even untilted slices, size limits) before any pixel is read."""
    headers = _headers(folder)
    _check_one_series(folder, headers)
    step = _check_geometry(folder, [h for _, h in headers])
    ordered = sorted((ds for _, ds in headers), key=lambda ds: int(ds.InstanceNumber))
    first = ordered[0]
    shape = (int(first.Columns), int(first.Rows), len(ordered))
    pixel = _numbers(first.PixelSpacing)  # [between rows, between columns]
    cosines = _numbers(first.ImageOrientationPatient)
    positions = np.asarray([_numbers(ds.ImagePositionPatient) for ds in ordered])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = cosines[:3] * pixel[1], cosines[3:] * pixel[0]
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(ordered) - 1)
    lps[:3, 3] = positions[0]
    # the measured step, not SliceThickness: a header may claim 1 mm for slices metres apart
    check_voxels(folder, shape, np.diag([pixel[1], pixel[0], step, 1.0]), target_spacing)
    return shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _headers(folder: Path) -> list[tuple[Path, object]]:
    pydicom = pydicom_module(folder)
    files = dicom_files(folder)
    if not files:
        raise InputError(folder, "no DICOM files in the folder")
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as err:  # pydicom raises many types for damaged files
            raise InputError(folder, f"cannot read DICOM file {f.name} ({type(err).__name__})") from None
        headers.append((f, ds))
    for f, ds in headers:
        missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "InstanceNumber",
                               "Rows", "Columns") if getattr(ds, t, None) in (None, "")]
        if missing:
            raise InputError(folder, f"{f.name} is not an image slice with a position (missing {', '.join(missing)})")
        _check_tags(folder, f, ds)
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(folder, f"{f.name} is a multi-frame DICOM; export the series as one file per slice")
    return headers


TAG_ARITY = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}


def _check_tags(folder: Path, f: Path, ds) -> None:
    """The geometry tags hold numbers of the right count, so later arithmetic cannot fail nameless."""
    for tag, arity in TAG_ARITY.items():
        values = _numbers(getattr(ds, tag))
        if values is None or len(values) != arity:
            count = "non-numeric values" if values is None else f"{len(values)} values"
            raise InputError(folder, f"{f.name}: {tag} has {count}, expected {arity}")
        if not np.isfinite(values).all():
            raise InputError(folder, f"{f.name}: {tag} holds non-finite values")
    spacing = _numbers(ds.PixelSpacing)
    if (spacing <= 0).any():
        raise InputError(folder, f"{f.name}: PixelSpacing {', '.join(f'{v:g}' for v in spacing)} is not a positive size")
    for tag in ("InstanceNumber", "Rows", "Columns"):
        try:
            int(getattr(ds, tag))
        except (TypeError, ValueError):
            raise InputError(folder, f"{f.name}: {tag} {str(getattr(ds, tag))!r} is not an integer") from None


def _numbers(value) -> np.ndarray | None:
    values = value if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, str) \
        else [value]
    try:
        return np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None


def _check_one_series(folder: Path, headers: list) -> None:
    series = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers})
    if len(series) > 1:
        raise InputError(folder, f"mixed series: {len(series)} SeriesInstanceUIDs in one folder "
                                 f"({', '.join(s or '(none)' for s in series[:3])}); put each series in its own folder")
    numbers = [int(ds.InstanceNumber) for _, ds in headers]
    if len(set(numbers)) != len(numbers):
        dup = next(n for n in numbers if numbers.count(n) > 1)
        raise InputError(folder, f"two slices share InstanceNumber {dup}")


def _check_geometry(folder: Path, headers: list) -> float:
    """One orientation and size, no gantry tilt, evenly spaced positions in InstanceNumber order;
    returns the slice step in mm, measured along the slice normal."""
    ordered = sorted(headers, key=lambda ds: int(ds.InstanceNumber))
    first = ordered[0]
    cosines = np.asarray(first.ImageOrientationPatient, dtype=float)
    for ds in ordered[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), cosines, atol=DIRECTION_TOLERANCE):
            raise InputError(folder, f"slice orientation changes at InstanceNumber {ds.InstanceNumber}")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns) or \
                not np.allclose(np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), rtol=1e-4):
            raise InputError(folder, f"slice size or pixel spacing changes at InstanceNumber {ds.InstanceNumber}")
    tilt = float(getattr(first, "GantryDetectorTilt", 0) or 0)
    if abs(tilt) > TILT_TOLERANCE_DEG:
        raise InputError(folder, f"gantry tilt of {tilt:g} degrees (GantryDetectorTilt); resample the series first")
    if len(ordered) < 2:
        raise InputError(folder, "a single slice is not a volume")
    normal = np.cross(cosines[:3], cosines[3:])
    positions = np.asarray([ds.ImagePositionPatient for ds in ordered], dtype=float)
    steps = np.diff(positions, axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    if (lengths < 1e-6).any():
        i = int(np.argmax(lengths < 1e-6))
        raise InputError(folder, f"InstanceNumber {ordered[i].InstanceNumber} and {ordered[i + 1].InstanceNumber} "
                                 "lie at the same position")
    angles = np.degrees(np.arccos(np.clip(np.abs(steps @ normal) / lengths, 0.0, 1.0)))
    if angles.max() > TILT_TOLERANCE_DEG:
        raise InputError(folder, f"gantry tilt: slices are sheared by {angles.max():.2f} degrees against their "
                                 "normal; resample the series first")
    along = steps @ normal
    if not ((along > 0).all() or (along < 0).all()):
        raise InputError(folder, "slice positions do not follow InstanceNumber order")
    median = float(np.median(np.abs(along)))
    off = np.abs(np.abs(along) - median) > STEP_TOLERANCE * median
    if off.any():
        i = int(np.argmax(off))
        raise InputError(folder, f"uneven slice spacing (missing slice?): {abs(along[i]):.4g} mm between "
                                 f"InstanceNumber {ordered[i].InstanceNumber} and {ordered[i + 1].InstanceNumber}, "
                                 f"{median:.4g} mm elsewhere")
    return median


def _read_voxels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import PydicomReader  # the reader itself: LoadImage would build every reader

    reader = PydicomReader(fname_regex=None)  # the files pydicom.misc.is_dicom accepts, as above
    try:
        data, meta = reader.get_data(reader.read(str(folder)))
    except Exception as err:  # noqa: BLE001 - undecodable pixel data and the like
        raise InputError(folder, f"cannot read the DICOM pixel data ({type(err).__name__}: "
                                 f"{str(err).strip().splitlines()[0] if str(err).strip() else 'corrupt'})") from None
    return np.asarray(data, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64)

"""Import published Agg2Exp aggregates (one CSV row per patient) as a run of the store.

The paper's repository publishes, per patient, the mass fractions
``{a}_explanation_in_{b}_mass`` and Dice ``{a}_dice`` of its SwinUNETR on the
TotalSegmentator v2 test set, and the mean absolute attribution per voxel of each region
``{a}_explanation_in_{b}_mean`` (stored beside the masses, in ``region_attribution``). They become a dataset and a SmoothGrad run of their own,
so the dashboard shows real results next to the demo.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.aggregate import lift
from agg2exp_core.io.case_fields import manifest_fields
from agg2exp_core.io.manifest import CASE_ID, CASE_ID_RULE, read_metadata
from agg2exp_core.errors import InputError
from agg2exp_core.labels import NAME_ALIASES, roi_specs

MASS_COLUMN = re.compile(r"^(?P<a>.+)_explanation_in_(?P<b>.+)_mass$")
MEAN_COLUMN = "{a}_explanation_in_{b}_mean"     # mean |attribution| of class a per voxel of region b
ROW_SUM_TOLERANCE = 1e-3
PUBLISHED_PARAMS = {"n_samples": 20, "sigma": 0.1, "aggregation": "sum",
                    "network": "SwinUNETR", "spacing_mm": 1.5,
                    "source": "MI2DataLab/agg2exp data/tsv2_test_aggregated_sg_explanations_with_dice.csv@0e9cb89"}
PUBLISHED_MODEL = "published:MI2DataLab/agg2exp-swinunetr-tsv2"


def label_names_from_columns(csv_path: Path, columns: list[str]) -> list[str]:
    """Class names in the file's channel order, read off the first explained class's masses."""
    pairs = [(m["a"], m["b"]) for c in columns if (m := MASS_COLUMN.match(c))]
    if not pairs:
        raise InputError(csv_path, "no '<a>_explanation_in_<b>_mass' columns; not an Agg2Exp aggregate CSV")
    first = pairs[0][0]
    names = [b for a, b in pairs if a == first]
    expected = {(a, b) for a in names for b in names}
    missing = sorted(expected - set(pairs))
    if missing:
        a, b = missing[0]
        raise InputError(csv_path, f"missing column '{a}_explanation_in_{b}_mass' ({len(missing)} mass columns missing)")
    return names


def read_published_csv(csv_path: str | Path) -> tuple[list[str], pd.DataFrame]:
    """Validated (label names as in the file, frame) of a published aggregate CSV."""
    csv_path = Path(csv_path)
    try:
        frame = pd.read_csv(csv_path, dtype={"patient": str})  # ids are names: 00123 stays 00123
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(csv_path, f"cannot read CSV ({type(err).__name__}: {err})") from None
    if "patient" not in frame.columns:
        raise InputError(csv_path, "missing column 'patient'")
    names = label_names_from_columns(csv_path, list(frame.columns))
    if frame.empty:
        raise InputError(csv_path, "no patient rows")
    empty = frame["patient"].isna() | (frame["patient"].astype(str).str.strip() == "")
    if empty.any():
        raise InputError(csv_path, f"empty patient id in row {int(empty.to_numpy().argmax()) + 2}")
    ids = frame["patient"].astype(str)
    if ids.duplicated().any():
        raise InputError(csv_path, f"duplicate patient id '{ids[ids.duplicated()].iloc[0]}'")
    unsafe = ids[~ids.map(lambda c: CASE_ID.fullmatch(c) is not None)]
    if len(unsafe):
        raise InputError(csv_path, f"patient id {unsafe.iloc[0]!r} is not a safe case id ({CASE_ID_RULE})")
    masses = mass_cube(csv_path, frame, names)
    missing = np.isnan(masses)
    partly = np.argwhere(missing.any(axis=2) & ~missing.all(axis=2))  # all-NaN: class absent
    if len(partly):
        i, a = partly[0]
        raise InputError(csv_path, f"patient '{ids.iloc[i]}': masses of class '{names[a]}' are partly missing")
    sums = masses.sum(axis=2)
    bad = np.argwhere(~np.isclose(sums, 1.0, atol=ROW_SUM_TOLERANCE) & ~np.isnan(sums))
    if len(bad):
        i, a = bad[0]
        raise InputError(csv_path, f"patient '{ids.iloc[i]}': masses of class '{names[a]}' sum to "
                                   f"{sums[i, a]:.4f}, not 1")
    if (masses < -ROW_SUM_TOLERANCE).any():
        raise InputError(csv_path, "negative mass fraction")
    return names, frame


def mass_cube(csv_path: Path, frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Masses as ``[patients, target a, source b]``."""
    columns = [f"{a}_explanation_in_{b}_mass" for a in names for b in names]
    try:
        values = frame[columns].apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as err:
        raise InputError(csv_path, f"non-numeric mass value ({err})") from None
    return values.reshape(len(frame), len(names), len(names))


def mean_cube(csv_path: Path, frame: pd.DataFrame, names: list[str]) -> np.ndarray | None:
    """The per-region mean attributions ``[patients, a, b]`` (None when the file has none of them)."""
    columns = [MEAN_COLUMN.format(a=a, b=b) for a in names for b in names]
    present = [c in frame.columns for c in columns]
    if not any(present):
        return None
    if not all(present):
        raise InputError(csv_path, f"missing column '{columns[present.index(False)]}' "
                                   f"({present.count(False)} mean-attribution columns missing)")
    try:
        values = frame[columns].apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as err:
        raise InputError(csv_path, f"non-numeric mean attribution ({err})") from None
    if (values < 0).any():
        raise InputError(csv_path, "negative mean attribution (the published means are of |attribution|)")
    return values.reshape(len(frame), len(names), len(names))


def volume_from_means(masses: np.ndarray, means: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(volume shares ``[patients, b]``, lifts ``[patients, a, b]``) from the published masses and means.

    ``mass_ab / mean_ab = |R_b| / ||e_a||_1``, so within a row the ratios are proportional to the
    region volumes, and the class regions partition the volume: ``share_b`` = ratio / row sum of
    ratios (the median over the explained classes a, which agree up to rounding). The lift is then
    ``mass / share``. All NaN when the file has no means: the lift of this import is absent.
    """
    shape = masses.shape
    if means is None:
        return np.full((shape[0], shape[2]), np.nan), np.full(shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(means > 0, masses / np.where(means > 0, means, 1.0), np.nan)
        per_row = ratios / np.nansum(ratios, axis=2, keepdims=True)
        shares = np.nanmedian(np.where(np.isfinite(per_row), per_row, np.nan), axis=1)
    return shares, np.stack([lift(masses[i], shares[i]) for i in range(shape[0])])


def region_rows(run_id: str, case_ids, ids: list[int], means: np.ndarray | None) -> list[list]:
    """Long rows of ``region_attribution`` (NaN means, e.g. of an empty region, are left out)."""
    if means is None:
        return []
    return [[run_id, case_id, int(a), int(b), float(means[i, j, k])]
            for i, case_id in enumerate(case_ids) for j, a in enumerate(ids) for k, b in enumerate(ids)
            if np.isfinite(means[i, j, k])]


def import_agg2exp_csv(csv_path: str | Path, db_path: str | Path, metadata: str | Path | None = None,
                       dataset: str = "tsv2", data_dir: str | Path | None = None) -> str:
    """Import a published aggregate CSV into the store; return the run id.

    The CSV (and a LICENSE beside it) is copied into ``data_dir`` when given. Rows are
    validated before anything is written; all rows land in one transaction.
    """
    csv_path = Path(csv_path)
    names, frame = read_published_csv(csv_path)
    canonical = [NAME_ALIASES.get(n, n) for n in names]
    cases = pd.DataFrame({"case_id": frame["patient"].astype(str), "dataset": dataset, "split": "test",
                          "image_path": None, "label_path": None, "pathologies": ""})
    meta = read_metadata(metadata) if metadata is not None else None
    if meta is not None:
        cases = join_metadata(cases, meta)
    if data_dir is not None:
        copy_with_licence(csv_path, Path(data_dir) / csv_path.parent.name)
    run_id = store.run_id_for("smoothgrad", PUBLISHED_PARAMS, PUBLISHED_MODEL, cohort=dataset)
    masses = mass_cube(csv_path, frame, names)
    means = mean_cube(csv_path, frame, names)
    with store.open_writer(db_path) as con:
        roi_ids = store.upsert_rois(con, roi_specs(canonical))
        ids = [roi_ids[n] for n in canonical]
        shares, lifts = volume_from_means(masses, means)
        rows = []
        for i, case_id in enumerate(cases.case_id):
            empty = np.full(masses[i].shape, np.nan)  # the published CSV has absolute masses only
            rows += store.importance_rows(run_id, case_id, ids, ids, masses[i], empty, empty, shares[i], lifts[i])
        store.ensure_run(con, run_id, "smoothgrad", PUBLISHED_PARAMS, PUBLISHED_MODEL, canonical,
                         source="import", description=f"Published Agg2Exp SmoothGrad aggregates ({csv_path.name})")
        store.write_imported_run(con, run_id, cases, rows, dice_rows(frame, names, ids),
                                 region_rows(run_id, cases.case_id, ids, means))
        if meta is not None:  # its other columns are the cases' fields (io.case_fields), replaced as given
            store.write_case_fields(con, manifest_fields(metadata, meta), cases.case_id)
    return run_id


def dice_rows(frame: pd.DataFrame, names: list[str], ids: list[int]) -> list[list]:
    rows = []
    for name, roi_id in zip(names, ids):
        column = f"{name}_dice"
        if column not in frame.columns:
            continue
        for case_id, value in zip(frame["patient"].astype(str), pd.to_numeric(frame[column], errors="coerce")):
            if pd.notna(value):
                rows.append([PUBLISHED_MODEL, case_id, roi_id, float(value)])
    return rows


def join_metadata(cases: pd.DataFrame, metadata: pd.DataFrame) -> pd.DataFrame:
    """Attach sex/age (and any dataset/split given) by case id; unknown ids are ignored."""
    meta = metadata.set_index("case_id")
    for column in ("sex", "age"):
        if column in meta.columns:
            cases[column] = cases.case_id.map(meta[column])
    return cases


def copy_with_licence(csv_path: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    for source in (csv_path, csv_path.parent / "LICENSE", csv_path.parent / "README.md"):
        if source.exists() and source.resolve() != (target_dir / source.name).resolve():
            shutil.copyfile(source, target_dir / source.name)



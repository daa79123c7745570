"""The metadata fields of a manifest's cases: its extra columns and their DICOM series' header fields.

Typed over the whole manifest (``io.case_fields``), so that choosing ``--cases`` does not change a
field's kind; the manifest's value wins over a header's for the same name.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from agg2exp_core.io.case_fields import combine, header_fields, manifest_fields


def cohort_fields(manifest: str | Path, cohort: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """``case_field`` rows of the ``selected`` cases of a read manifest (``cohort``: all of its rows)."""
    ids = set(selected.case_id.astype(str))
    from_manifest = manifest_fields(manifest, cohort)
    return combine(dicom_fields(selected), from_manifest[from_manifest.case_id.isin(ids)])


def dicom_fields(frame: pd.DataFrame) -> pd.DataFrame:
    """Header fields of the cases whose image is a DICOM series folder."""
    parts = []
    for case_id, image in zip(frame.case_id.astype(str), frame.image.astype(str)):
        if image and Path(image).is_dir():
            from agg2exp_core.io.dicom import NUMERIC_SERIES_FIELDS, series_fields  # pydicom only when needed

            parts.append(header_fields(case_id, series_fields(image), NUMERIC_SERIES_FIELDS))
    return combine(*parts)

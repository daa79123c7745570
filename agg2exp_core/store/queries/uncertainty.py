"""Reads of the model's own uncertainty per case and class (``case_uncertainty``).

Written by ``pipeline.uncertainty_stage`` (feature names in ``agg2exp_core.models.uncertainty``),
keyed by the model's checksum like ``dice``: every run of one model shares them.
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db


def uncertainty_features(con: duckdb.DuckDBPyConnection, model_sha256: str,
                         case_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """``case_id, class_id`` and one float column per feature (NaN where a feature is undefined),
    one row per (case, class) with any feature, sorted; empty (just the keys) without rows or table."""
    if not db.has_table(con, "case_uncertainty"):
        return pd.DataFrame(columns=["case_id", "class_id"])
    long = db.fetch(con, "SELECT case_id, class_id, feature, value FROM case_uncertainty WHERE model_sha256 = ?",
                    [model_sha256])
    if case_ids is not None:
        long = long[long.case_id.isin(list(case_ids))]
    if long.empty:
        return pd.DataFrame(columns=["case_id", "class_id"])
    wide = long.pivot_table(index=["case_id", "class_id"], columns="feature", values="value", aggfunc="first",
                            dropna=False)
    wide.columns.name = None
    wide = wide.reset_index().sort_values(["case_id", "class_id"], ignore_index=True)
    wide["class_id"] = wide["class_id"].astype(int)
    return wide


def cases_with_uncertainty(con: duckdb.DuckDBPyConnection, model_sha256: str) -> set[str]:
    """The cases whose features this model already has (a rerun reuses them)."""
    if not db.has_table(con, "case_uncertainty"):
        return set()
    rows = db.fetch(con, "SELECT DISTINCT case_id FROM case_uncertainty WHERE model_sha256 = ?", [model_sha256])
    return set(rows.case_id)

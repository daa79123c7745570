"""Reads of the cases' metadata fields beyond the cases table (``case_field``).

Extra manifest columns (scanner, site, kernel, BMI, ...) and DICOM header fields, one row per
case and field. ``case_fields`` pivots them to one column per field (numeric fields as floats,
categorical ones as text, missing as NaN / None), the form the cohort filter, the CSV exports
and the failure-slice search use.
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db

NUMERIC = "numeric"
CATEGORICAL = "categorical"
FIELD_KINDS = (CATEGORICAL, NUMERIC)


def field_catalog(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """``name, kind, source, n_cases, n_values`` of every field, by name (empty on an older store)."""
    if not db.has_table(con, "case_field"):
        return pd.DataFrame(columns=["name", "kind", "source", "n_cases", "n_values"])
    return db.fetch(con, """
        SELECT name, any_value(kind) AS kind, any_value(source) AS source, count(*) AS n_cases,
               count(DISTINCT value) AS n_values
        FROM case_field WHERE case_id IN (SELECT case_id FROM cases)  -- fields of cases not computed yet wait
        GROUP BY name ORDER BY name""")


def case_fields(con: duckdb.DuckDBPyConnection, case_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """``case_id`` and one column per field (numeric: float, categorical: text), one row per case.

    ``case_ids``: only these cases, in this order (cases without any field get an all-missing row).
    """
    catalog = field_catalog(con)
    if case_ids is None:
        ids = db.fetch(con, "SELECT case_id FROM cases ORDER BY case_id").case_id.tolist()
    else:
        ids = [str(c) for c in case_ids]
    wide = pd.DataFrame({"case_id": ids})
    if catalog.empty or not ids:
        return wide
    rows = db.fetch(con, """SELECT case_id, name, value, number FROM case_field
                            WHERE case_id IN (SELECT unnest(?::VARCHAR[]))""", [ids])
    for name, kind in zip(catalog.name, catalog.kind):
        of_field = rows[rows.name == name].set_index("case_id")
        column = "number" if kind == NUMERIC else "value"
        values = of_field[column].reindex(ids)
        wide[name] = values.astype(float).to_numpy() if kind == NUMERIC else \
            values.astype(object).where(values.notna(), None).to_numpy()
    return wide


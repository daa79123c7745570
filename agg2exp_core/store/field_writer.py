"""Writes of ``case_field``: a case's metadata fields (extra manifest columns, DICOM header fields).

A write replaces every field of the cases it names (a re-run with an edited manifest drops the
columns it no longer has), in one transaction. Rows for cases not (yet) in ``cases`` are kept but
never read: the reads (``queries.fields``) go through the cases table. A field is numeric only
while every case's value is a number: when a write would give one name two kinds (a manifest
that now says 'unknown' where it said 12), the field becomes categorical for every case.
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.writer import transaction

FIELD_COLUMNS = ("case_id", "name", "kind", "value", "number", "source")


def write_case_fields(con: duckdb.DuckDBPyConnection, fields: pd.DataFrame, case_ids: Sequence[str]) -> None:
    """Replace the fields of ``case_ids`` by ``fields`` (rows of ``FIELD_COLUMNS``), in one transaction."""
    ids = [str(c) for c in case_ids]
    rows = fields.reindex(columns=list(FIELD_COLUMNS))
    rows = rows[rows.case_id.astype(str).isin(ids)].astype(object)
    rows = rows.where(pd.notna(rows), None)
    with transaction(con):
        con.execute("DELETE FROM case_field WHERE case_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        if len(rows):
            con.register("_fields", rows)
            con.execute("INSERT INTO case_field SELECT case_id, name, kind, value, CAST(number AS DOUBLE), source "
                        "FROM _fields")
            con.unregister("_fields")
        con.execute("""UPDATE case_field SET kind = 'categorical', number = NULL WHERE name IN (
                           SELECT name FROM case_field GROUP BY name HAVING count(DISTINCT kind) > 1)""")


def write_new_case_fields(con: duckdb.DuckDBPyConnection, fields: pd.DataFrame, case_ids: Sequence[str]) -> None:
    """Fields of the cases the store does not know yet (call before registering them): like
    ``register_new_cases``, a command that only adds cases never rewrites another run's metadata."""
    known = {r[0] for r in con.execute("SELECT case_id FROM cases").fetchall()}
    write_case_fields(con, fields, [c for c in map(str, case_ids) if c not in known])

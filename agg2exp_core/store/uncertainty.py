"""Writes of ``case_uncertainty``: a case's features replace its earlier ones for that model.

``insert_uncertainty`` runs inside the caller's transaction (``write_case``: the features land with
the case's other results or not at all); ``write_uncertainty`` is its own transaction (backfill).
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

COLUMNS = ["model_sha256", "case_id", "class_id", "feature", "value"]


def insert_uncertainty(con: duckdb.DuckDBPyConnection, model_sha256: str, case_id: str,
                       rows: Sequence[Sequence]) -> None:
    """Replace the case's rows for this model (``rows``: model_sha256, case_id, class_id, feature, value)."""
    con.execute("DELETE FROM case_uncertainty WHERE model_sha256 = ? AND case_id = ?", [model_sha256, case_id])
    if len(rows):
        con.register("_uncertainty", pd.DataFrame(list(rows), columns=COLUMNS))
        con.execute("INSERT INTO case_uncertainty SELECT * FROM _uncertainty")
        con.unregister("_uncertainty")


def write_uncertainty(con: duckdb.DuckDBPyConnection, model_sha256: str, case_id: str,
                      rows: Sequence[Sequence]) -> None:
    """``insert_uncertainty`` in one transaction of its own (as ``writer.transaction``, which imports this
    module and so cannot be imported here)."""
    con.execute("BEGIN TRANSACTION")
    try:
        insert_uncertainty(con, model_sha256, case_id, rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise

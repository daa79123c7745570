"""Reads of the test-retest reliability of a run's cells (``retest_icc``)."""
from __future__ import annotations

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db

RETEST_COLUMNS = ["factor", "kind", "target_id", "source_id", "icc", "n_cases", "n_repeats"]


def retest_icc(con: duckdb.DuckDBPyConnection, run_id: str, factor: str | None = None,
               kind: str | None = None) -> pd.DataFrame:
    """``factor, kind, target_id, source_id, icc, n_cases, n_repeats`` of a run (empty on an older store)."""
    if not db.has_table(con, "retest_icc"):
        return pd.DataFrame(columns=RETEST_COLUMNS)
    return db.fetch(con, f"""SELECT {', '.join(RETEST_COLUMNS)} FROM retest_icc
        WHERE run_id = ? AND (? IS NULL OR factor = ?) AND (? IS NULL OR kind = ?)
        ORDER BY factor, kind, target_id, source_id""", [run_id, factor, factor, kind, kind])

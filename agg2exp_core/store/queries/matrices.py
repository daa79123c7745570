"""Importance matrices: the cohort's mean matrix, one case's matrix, many cases' matrices as one array.

Cohorts of 20,000 cases hold ≈ 6.5 M matrix rows per run, so the mean matrix is a GROUP BY
in DuckDB that returns a small frame; only tests over cases (the permutation test, the
analyses) read per-case matrices, as one numpy array (``local_cube``).
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.store.queries.cases import run_case_ids
from agg2exp_core.store.queries.cohort import ALL_CASES, CohortFilter, run_rows
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import mass_column


def global_matrix(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter = ALL_CASES,
                  kind: str = "abs") -> pd.DataFrame:
    """Mean local matrix of the cohort, long form: target_id, source_id, mean, n (non-NULL cases), sd
    (the standard deviation over the cases, for intervals of large cohorts; same scan)."""
    column = mass_column(kind)
    rows, params = run_rows(run_id, cohort)
    return db.fetch(con, f"""
        SELECT li.target_id, li.source_id, avg(li.{column}) AS mean, count(li.{column}) AS n,
               stddev_samp(li.{column}) AS sd
        {rows} GROUP BY li.target_id, li.source_id ORDER BY 1, 2""", params)


def case_matrix(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, kind: str = "abs") -> pd.DataFrame:
    """One case's local matrix, long form: target_id, source_id, value."""
    column = mass_column(kind)
    return db.fetch(con, f"SELECT target_id, source_id, {column} AS value FROM local_importance "
                      "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


def local_cube(con: duckdb.DuckDBPyConnection, run_id: str, case_ids: Sequence[str],
               kind: str = "abs") -> tuple[list[str], list[int], list[int], np.ndarray]:
    """Local matrices of the given cases as one array ``[cases, targets, sources]`` (NaN where missing).

    Cases sorted by id; cases without rows in the run are left out. Read with ``fetchnumpy``
    (integer positions, no strings per row) and scattered into place: ≈ 50 MB at 20,000 cases.
    """
    column = mass_column(kind)
    ids = sorted(set(map(str, case_ids)))
    result = db.fetch(con, f"""
        WITH chosen AS (SELECT unnest(?::VARCHAR[]) AS case_id, unnest(range(?)) AS position)
        SELECT chosen.position::INTEGER AS position, li.target_id, li.source_id, li.{column} AS value
        FROM local_importance li JOIN chosen USING (case_id) WHERE li.run_id = ?""",
                      [ids, len(ids), run_id], numpy=True)
    positions = np.asarray(result["position"], dtype=np.int64)
    if not len(positions):
        return [], [], [], np.full((0, 0, 0), np.nan)
    target_ids, target_index = _dense_ids(np.asarray(result["target_id"]))
    source_ids, source_index = _dense_ids(np.asarray(result["source_id"]))
    values = np.ma.filled(np.ma.asarray(result["value"], dtype=float), np.nan)
    cube = np.full((len(ids), len(target_ids), len(source_ids)), np.nan)
    cube[positions, target_index, source_index] = values
    present = np.bincount(positions, minlength=len(ids)) > 0
    return [c for c, keep in zip(ids, present) if keep], target_ids, source_ids, cube[present]


def local_matrices(con: duckdb.DuckDBPyConnection, run_id: str, kind: str = "abs",
                   case_ids: Sequence[str] | None = None) -> tuple[list[str], list[int], list[int], np.ndarray]:
    """``local_cube`` of the given cases, or of all the run's cases (the analyses' reader)."""
    return local_cube(con, run_id, run_case_ids(con, run_id) if case_ids is None else case_ids, kind)


def volume_shares(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[list[str], list[int], np.ndarray]:
    """(case ids, source ids, region volume shares ``[cases, sources]``) of a run (NaN where unknown)."""
    frame = db.fetch(con, "SELECT case_id, source_id, any_value(volume_share) AS v FROM local_importance "
                          "WHERE run_id = ? GROUP BY case_id, source_id", [run_id])
    cases, sources = sorted(frame.case_id.unique()), sorted(frame.source_id.unique().tolist())
    table = np.full((len(cases), len(sources)), np.nan)
    table[frame.case_id.map({c: i for i, c in enumerate(cases)}).to_numpy(),
          frame.source_id.map({s: i for i, s in enumerate(sources)}).to_numpy()] = frame.v.to_numpy(dtype=float)
    return cases, sources, table


def _dense_ids(ids: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(sorted distinct ids, index of each entry among them) for small non-negative integer ids."""
    ids = ids.astype(np.int64)
    distinct = np.flatnonzero(np.bincount(ids))
    lookup = np.zeros(int(distinct[-1]) + 1, dtype=np.int64)
    lookup[distinct] = np.arange(len(distinct))
    return distinct.tolist(), lookup[ids]

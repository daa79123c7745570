"""Reads of cases: a run's cases, the cohort's cases with their metadata, Dice of a model."""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries.cohort import ALL_CASES, RUN_CASES, CohortFilter, where_clause
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)


def run_case_ids(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[str, ...]:
    """The run's case ids, sorted (a scan of the run's matrix rows: callers that filter often keep it)."""
    return tuple(db.fetch(con, RUN_CASES + " ORDER BY 1", [run_id, run_id]).case_id)


def done_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    """Cases the run finished (``case_status``)."""
    return set(db.fetch(con, "SELECT case_id FROM case_status WHERE run_id = ?", [run_id]).case_id)


def cohort_cases(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter = ALL_CASES,
                 members: Sequence[str] | None = None) -> pd.DataFrame:
    """The run's cases passing the filter: case_id, dataset, split, sex, age, pathologies.

    ``members``: the run's case ids when the caller already has them (``run_case_ids``).
    """
    members = run_case_ids(con, run_id) if members is None else members
    condition, params = where_clause(cohort, "c")
    frame = db.fetch(con, f"""
        SELECT case_id, dataset, split, sex, age, coalesce(pathologies, '') AS pathologies FROM cases c
        WHERE c.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition} ORDER BY case_id""",
                     [list(members)] + params)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    return frame


def case_metadata(con: duckdb.DuckDBPyConnection, case_ids: Sequence[str]) -> pd.DataFrame:
    """``case_id, dataset, split, sex, age`` of the given cases, in their order (KeyError for an unknown one)."""
    frame = db.fetch(con, "SELECT case_id, dataset, split, sex, age FROM cases "
                          "WHERE case_id IN (SELECT unnest(?::VARCHAR[]))", [list(map(str, case_ids))])
    return frame.set_index("case_id").loc[list(case_ids)].reset_index()


def dice_of_model(con: duckdb.DuckDBPyConnection, model_sha256: str) -> pd.DataFrame:
    """``case_id, target_id, dice`` of one model."""
    return db.fetch(con, "SELECT case_id, class_id AS target_id, dice FROM dice WHERE model_sha256 = ?",
                    [model_sha256])

"""Reads of the outlier analysis: anomaly scores and rankings, their tests, the reasons behind a score."""
from __future__ import annotations

from typing import Sequence

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.store.queries.cohort import CohortFilter, where_clause
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import empty, has_table
from agg2exp_core.vocabulary import AVERAGE_TARGET


def anomaly_targets(con: duckdb.DuckDBPyConnection, run_id: str) -> list[int]:
    """Targets that have anomaly scores in the run (``AVERAGE_TARGET``: averaged over classes)."""
    return db.fetch(con, "SELECT DISTINCT target_id FROM anomaly WHERE run_id = ? ORDER BY 1",
                    [run_id]).target_id.astype(int).tolist()


def anomaly_scores(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """``case_id, target_id, score, is_outlier`` of a run."""
    return db.fetch(con, "SELECT case_id, target_id, score, is_outlier FROM anomaly WHERE run_id = ? "
                         "ORDER BY case_id, target_id", [run_id])


def anomaly_ranking(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter,
                    target_id: int) -> pd.DataFrame:
    """Cohort cases ranked by anomaly score for one target, with Dice and metadata."""
    condition, params = where_clause(cohort, "c")
    dice_of_case = ("(SELECT avg(d.dice) FROM dice d WHERE d.case_id = a.case_id AND d.model_sha256 = m.sha)"
                    if int(target_id) == AVERAGE_TARGET else
                    "(SELECT d.dice FROM dice d WHERE d.case_id = a.case_id AND d.class_id = a.target_id "
                    "AND d.model_sha256 = m.sha)")
    frame = db.fetch(con, f"""
        WITH m AS (SELECT model_sha256 AS sha FROM runs WHERE run_id = ?)
        SELECT a.case_id, a.score, a.is_outlier, {dice_of_case} AS dice, c.sex, c.age, c.dataset, c.split,
               c.pathologies
        FROM anomaly a JOIN cases c USING (case_id), m
        WHERE a.run_id = ? AND a.target_id = ? AND {condition} ORDER BY a.score DESC, a.case_id""",
                     [run_id, run_id, int(target_id)] + params)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def mean_anomaly_by_case(con: duckdb.DuckDBPyConnection, run_id: str, target_ids: Sequence[int]) -> pd.DataFrame:
    """``case_id, score, pathologies, dataset``: each case's anomaly score averaged over ``target_ids``."""
    return db.fetch(con, """
        SELECT a.case_id, avg(a.score) AS score, any_value(c.pathologies) AS pathologies,
               any_value(c.dataset) AS dataset
        FROM anomaly a JOIN cases c USING (case_id)
        WHERE a.run_id = ? AND a.target_id IN (SELECT unnest(?::INTEGER[])) GROUP BY a.case_id""",
                    [run_id, [int(t) for t in target_ids]])


def anomaly_dice(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Spearman anomaly-vs-Dice per target (as analysed on the whole run)."""
    return db.fetch(con, "SELECT target_id, spearman_rho, p_value, n FROM anomaly_dice WHERE run_id = ? "
                         "ORDER BY target_id", [run_id])


def outlier_tests(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Inlier-vs-outlier tests per target and variable (sex, age)."""
    return db.fetch(con, "SELECT target_id, variable, test, statistic, p_value, n_inliers, n_outliers "
                         "FROM outlier_tests WHERE run_id = ? ORDER BY target_id, variable", [run_id])


def outlier_reasons(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, target_id: int,
                    limit: int = 8) -> pd.DataFrame:
    """The cells that push one case's anomaly score for one class most (``AVERAGE_TARGET``: over every class)."""
    if not has_table(con, "outlier_reasons"):
        return empty(["target_id", "source_id", "contribution"])
    return db.fetch(con, """
        SELECT target_id, source_id, contribution FROM outlier_reasons
        WHERE run_id = ? AND case_id = ? AND (? = ? OR target_id = ?)
        ORDER BY contribution DESC, target_id, source_id LIMIT ?""",
                    [run_id, case_id, int(target_id), AVERAGE_TARGET, int(target_id), int(limit)])

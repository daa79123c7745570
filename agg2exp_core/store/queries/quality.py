"""Reads of the quality control (``agg2exp_core.analysis.quality``): the expected-Dice ablation, risk-coverage
curves, flagged cells and their contributions. A store without one of these tables gives an empty frame."""
from __future__ import annotations

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db
from agg2exp_core.store.queries.connection import empty, has_table


def quality_ablation(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """``feature_set, scope, metric, value, n`` of a run's expected-Dice ablation."""
    if not has_table(con, "quality_ablation"):
        return empty(["feature_set", "scope", "metric", "value", "n"])
    return db.fetch(con, "SELECT feature_set, scope, metric, value, n FROM quality_ablation WHERE run_id = ? "
                         "ORDER BY scope, feature_set, metric", [run_id])


def risk_coverage(con: duckdb.DuckDBPyConnection, run_id: str, scope: str) -> pd.DataFrame:
    """``ranking, position, coverage, risk`` of a run's risk-coverage curves in one scope."""
    if not has_table(con, "risk_coverage"):
        return empty(["ranking", "position", "coverage", "risk"])
    return db.fetch(con, "SELECT ranking, position, coverage, risk FROM risk_coverage WHERE run_id = ? AND scope = ? "
                         "ORDER BY ranking, position", [run_id, scope])


def flagged_cells(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Every (case, class) flagged a likely failure, lowest expected Dice first, with the true Dice where known."""
    columns = ["case_id", "dataset", "class_id", "estimate", "low", "high", "failure_below", "fitted", "dice"]
    if not has_table(con, "dice_estimate"):
        return empty(columns)
    return db.fetch(con, """
        SELECT e.case_id, c.dataset, e.class_id, e.estimate, e.low, e.high, e.failure_below, e.fitted, d.dice
        FROM dice_estimate e JOIN runs r USING (run_id) JOIN cases c USING (case_id)
        LEFT JOIN dice d ON d.model_sha256 = r.model_sha256 AND d.case_id = e.case_id AND d.class_id = e.class_id
        WHERE e.run_id = ? AND e.likely_failure AND e.class_id >= 0
        ORDER BY e.estimate, e.case_id, e.class_id""", [run_id])


def estimate_truth(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Expected beside true Dice of every labelled (case, class) of a run (class means excluded)."""
    columns = ["case_id", "dataset", "class_id", "estimate", "low", "high", "likely_failure", "fitted", "dice"]
    if not has_table(con, "dice_estimate"):
        return empty(columns)
    return db.fetch(con, """
        SELECT e.case_id, c.dataset, e.class_id, e.estimate, e.low, e.high, e.likely_failure, e.fitted, d.dice
        FROM dice_estimate e JOIN runs r USING (run_id) JOIN cases c USING (case_id)
        JOIN dice d ON d.model_sha256 = r.model_sha256 AND d.case_id = e.case_id AND d.class_id = e.class_id
        WHERE e.run_id = ? AND e.class_id >= 0 AND d.dice IS NOT NULL ORDER BY e.case_id, e.class_id""", [run_id])


def quality_contributions(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, class_id: int) -> pd.DataFrame:
    """``feature, feature_group, value, contribution`` of one flagged cell, largest |contribution| first."""
    if not has_table(con, "quality_contribution"):
        return empty(["feature", "feature_group", "value", "contribution"])
    return db.fetch(con, "SELECT feature, feature_group, value, contribution FROM quality_contribution "
                         "WHERE run_id = ? AND case_id = ? AND class_id = ? ORDER BY abs(contribution) DESC, feature",
                    [run_id, case_id, int(class_id)])

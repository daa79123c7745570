"""Reads of the analyses beyond the paper (``agg2exp_core.analysis``: drift, quality, uncertainty,
agreement, paper parity, SmoothGrad's sampling noise). Their tables are newer than the store
format's first version: a store without one gives an empty frame, never an error."""
from __future__ import annotations

import duckdb
import pandas as pd

from agg2exp_core.store.queries.cohort import CohortFilter, where_clause
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import empty, has_column, has_table
from agg2exp_core.vocabulary import AVERAGE_TARGET


def drift_tests(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per dataset and class: energy statistic, p, q (BH), n_ref, n_new, reference dataset."""
    if not has_table(con, "drift"):
        return empty(["dataset", "target_id", "statistic", "p_value", "q_value", "n_ref", "n_new", "reference",
                      "n_permutations", "kind", "p_value_raw", "q_value_raw"])
    # kind / raw p and q: stores written before the volume-adjusted mass have none
    details = ("kind, p_value_raw, q_value_raw" if has_column(con, "drift", "kind")
               else "'abs' AS kind, p_value AS p_value_raw, q_value AS q_value_raw")   # one of two fixed fragments
    return db.fetch(con, "SELECT dataset, target_id, statistic, p_value, q_value, n_ref, n_new, reference, "
                         f"n_permutations, {details} FROM drift WHERE run_id = ? ORDER BY dataset, target_id",
                    [run_id])


def drift_cells(con: duckdb.DuckDBPyConnection, run_id: str, dataset: str, limit: int = 30) -> pd.DataFrame:
    """The cells that moved most (by |Hedges' g| among q < 0.05 first) for one dataset."""
    return db.fetch(con, """
        SELECT target_id, source_id, mean_ref, mean_new, difference, effect_size, p_value, q_value
        FROM drift_cells WHERE run_id = ? AND dataset = ?
        ORDER BY (q_value < 0.05) DESC, abs(effect_size) DESC NULLS LAST, target_id, source_id LIMIT ?""",
                    [run_id, dataset, int(limit)])


def drift_cases(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter, target_id: int,
                limit: int = 25) -> pd.DataFrame:
    """The cohort's cases that drift most for one class (AVERAGE_TARGET: averaged over classes)."""
    condition, params = where_clause(cohort, "c")
    return db.fetch(con, f"""
        SELECT d.case_id, d.score, c.dataset, c.split, c.sex, c.age, c.pathologies
        FROM drift_cases d JOIN cases c USING (case_id)
        WHERE d.run_id = ? AND d.target_id = ? AND {condition} ORDER BY d.score DESC, d.case_id LIMIT ?""",
                    [run_id, int(target_id)] + params + [int(limit)])


def dice_estimates(con: duckdb.DuckDBPyConnection, run_id: str, class_id: int) -> pd.DataFrame:
    """Expected Dice of every case of the run for one class (AVERAGE_TARGET: the mean over classes)."""
    if not has_table(con, "dice_estimate"):
        return empty(["case_id", "estimate", "low", "high", "level", "likely_failure", "fitted"])
    return db.fetch(con, "SELECT case_id, estimate, low, high, level, likely_failure, fitted FROM dice_estimate "
                         "WHERE run_id = ? AND class_id = ? ORDER BY case_id", [run_id, int(class_id)])


def case_dice_estimates(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's expected Dice per class (and AVERAGE_TARGET) beside its true Dice where known."""
    if not has_table(con, "dice_estimate"):
        return empty(["class_id", "estimate", "low", "high", "level", "likely_failure", "fitted", "dice"])
    return db.fetch(con, """
        SELECT e.class_id, e.estimate, e.low, e.high, e.level, e.likely_failure, e.fitted,
               CASE WHEN e.class_id = ? THEN (SELECT avg(d.dice) FROM dice d WHERE d.case_id = e.case_id
                                                AND d.model_sha256 = r.model_sha256)
                    ELSE (SELECT d.dice FROM dice d WHERE d.case_id = e.case_id AND d.class_id = e.class_id
                          AND d.model_sha256 = r.model_sha256) END AS dice
        FROM dice_estimate e JOIN runs r USING (run_id) WHERE e.run_id = ? AND e.case_id = ? ORDER BY e.class_id""",
                    [AVERAGE_TARGET, run_id, case_id])


def dice_estimate_quality(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """How well the estimate did where the truth is known: scope, metric, value, n."""
    if not has_table(con, "dice_estimate_quality"):
        return empty(["scope", "metric", "value", "n"])
    return db.fetch(con, "SELECT scope, metric, value, n FROM dice_estimate_quality WHERE run_id = ? "
                         "ORDER BY scope, metric", [run_id])


def stored_intervals(con: duckdb.DuckDBPyConnection, run_id: str, cohort_name: str, kind: str) -> pd.DataFrame:
    """Bootstrap intervals the analysis stored for a cohort (``*`` or a dataset) and kind."""
    if not has_table(con, "bootstrap_ci"):
        return empty(["target_id", "source_id", "estimate", "low", "high", "n", "n_boot", "level"])
    return db.fetch(con, "SELECT target_id, source_id, estimate, low, high, n, n_boot, level FROM bootstrap_ci "
                         "WHERE run_id = ? AND cohort = ? AND kind = ? ORDER BY 1, 2", [run_id, cohort_name, kind])


def sampling_noise(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's SmoothGrad sampling noise per cell and kind: SE, interval, noise samples behind it."""
    if not has_table(con, "sampling_noise"):
        return empty(["target_id", "source_id", "kind", "se", "low", "high", "n_samples"])
    return db.fetch(con, "SELECT target_id, source_id, kind, se, low, high, n_samples FROM sampling_noise "
                         "WHERE run_id = ? AND case_id = ? ORDER BY kind, target_id, source_id", [run_id, case_id])


def method_agreement(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Agreement of the run with the other runs over the same cases, per class (AVERAGE_TARGET: pooled)."""
    if not has_table(con, "method_agreement"):
        return empty(["other_run_id", "target_id", "spearman_mean", "spearman_low", "spearman_high",
                      "spearman_median", "n_cases", "kind", "null_mean", "null_high"])
    # kind / the volume-only null: stores written before the volume-adjusted mass have none
    details = ("kind, null_mean, null_high" if has_column(con, "method_agreement", "null_mean")
               else "'abs' AS kind, NULL::DOUBLE AS null_mean, NULL::DOUBLE AS null_high")   # fixed fragments
    return db.fetch(con, f"""
        SELECT other_run_id, target_id, spearman_mean, spearman_low, spearman_high, spearman_median, n_cases,
               {details}
        FROM method_agreement WHERE run_id = ? ORDER BY other_run_id, target_id""", [run_id])


def method_disagreement(con: duckdb.DuckDBPyConnection, run_id: str, other_run_id: str,
                        limit: int = 20) -> pd.DataFrame:
    """The cells where two runs differ most on the same cases."""
    return db.fetch(con, """
        SELECT target_id, source_id, mean_run, mean_other, difference, mean_abs_difference FROM method_disagreement
        WHERE run_id = ? AND other_run_id = ? ORDER BY mean_abs_difference DESC, target_id, source_id LIMIT ?""",
                    [run_id, other_run_id, int(limit)])


def paper_parity(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """The paper's Table 2 beside this run's Spearman rho per class (AVERAGE_TARGET last)."""
    if not has_table(con, "paper_parity"):
        return empty(["target_id", "label", "spearman_rho", "p_value", "paper_rho", "paper_p_value", "n"])
    return db.fetch(con, "SELECT target_id, label, spearman_rho, p_value, paper_rho, paper_p_value, n "
                         "FROM paper_parity WHERE run_id = ? ORDER BY target_id = ?, target_id",
                    [run_id, AVERAGE_TARGET])

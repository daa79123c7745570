"""Reads of the sanity checks (``sanity_check``): rows, curves per method and verdicts per class.

A class passes the randomisation check (``mprt``) of a run when, at the run's deepest step (the fully
randomised model), its similarity lies below the baseline on every case checked; ``random_logit`` and
``edge`` are judged the same way at their single step.
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import empty, has_table

ROW_COLUMNS = ["run_id", "method", "case_id", "class_id", "check", "step", "layer", "metric", "value", "baseline",
               "passed"]
CURVE_COLUMNS = ["run_id", "method", "step", "depth", "layer", "mean", "low", "high", "baseline_low",
                 "baseline_high", "n"]
VERDICT_COLUMNS = ["run_id", "method", "class_id", "check", "value", "baseline", "passed", "n_cases"]


def sanity_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs with sanity checks, sorted."""
    if not has_table(con, "sanity_check"):
        return []
    return sorted(db.fetch(con, "SELECT DISTINCT run_id FROM sanity_check").run_id)


def sanity_rows(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Every stored row (with the run's method), ordered by run, check, case, class, step, metric."""
    if not has_table(con, "sanity_check"):
        return empty(ROW_COLUMNS)
    return db.fetch(con, """
        SELECT s.run_id, r.method, s.case_id, s.class_id, s."check", s.step, s.layer, s.metric, s.value,
               s.baseline, s.passed
        FROM sanity_check s JOIN runs r USING (run_id)
        WHERE ? IS NULL OR s.run_id IN (SELECT unnest(?::VARCHAR[]))
        ORDER BY 1, 5, 3, 4, 6, 8""", [None if run_ids is None else 1, list(run_ids or [])])


def sanity_curves(con: duckdb.DuckDBPyConnection, metric: str) -> pd.DataFrame:
    """The randomisation curve of every run for ``metric``: per cascading step, the mean similarity over
    the checked cases and classes with its range, and the range of the classes' baselines; ``depth`` =
    step / the run's deepest step (1 = fully randomised)."""
    if not has_table(con, "sanity_check"):
        return empty(CURVE_COLUMNS)
    return db.fetch(con, """
        WITH rows AS (
            SELECT s.*, max(s.step) OVER (PARTITION BY s.run_id) AS last
            FROM sanity_check s WHERE s."check" = 'mprt' AND s.metric = ?)
        SELECT r.run_id, runs.method, r.step, r.step / greatest(any_value(r.last), 1) AS depth,
               any_value(r.layer) AS layer, avg(r.value) AS mean, min(r.value) AS low, max(r.value) AS high,
               min(r.baseline) AS baseline_low, max(r.baseline) AS baseline_high, count(r.value) AS n
        FROM rows r JOIN runs USING (run_id)
        GROUP BY r.run_id, runs.method, r.step ORDER BY 1, 3""", [metric])


def sanity_verdicts(con: duckdb.DuckDBPyConnection, metric: str) -> pd.DataFrame:
    """Per run, class and check: the mean similarity at the deciding step, the mean baseline, whether the
    class passed on every case checked (NULL where a value was undefined) and the cases checked."""
    if not has_table(con, "sanity_check"):
        return empty(VERDICT_COLUMNS)
    return db.fetch(con, """
        WITH last AS (
            SELECT run_id, max(step) AS step FROM sanity_check WHERE "check" = 'mprt' GROUP BY run_id),
        deciding AS (
            SELECT s.* FROM sanity_check s LEFT JOIN last l USING (run_id)
            WHERE s.metric = ? AND (s."check" <> 'mprt' OR s.step = l.step))
        SELECT d.run_id, runs.method, d.class_id, d."check", avg(d.value) AS value, avg(d.baseline) AS baseline,
               CASE WHEN count(d.passed) < count(*) THEN NULL ELSE bool_and(d.passed) END AS passed,
               count(DISTINCT d.case_id) AS n_cases
        FROM deciding d JOIN runs USING (run_id)
        GROUP BY d.run_id, runs.method, d.class_id, d."check" ORDER BY 1, 4, 3""", [metric])

"""Reads of the attribution-method evaluation (``method_eval``, ``perturbation_curve``).

Evaluation runs (runs.source = 'evaluate') have no case_status or matrix rows: their cases
are filtered through the cases table and the cohort filter alone, not through a run's cases.
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries.cohort import CohortFilter, where_clause
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)


def method_eval_summary(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], cohort: CohortFilter) -> pd.DataFrame:
    """Per run, dataset and metric over the cohort's evaluated (case, target) pairs: mean, std, n,
    the number of cases and the median."""
    condition, params = where_clause(cohort, "c")
    return db.fetch(con, f"""
        SELECT e.run_id, c.dataset, e.metric, avg(e.value) AS mean, stddev_samp(e.value) AS std,
               count(e.value) AS n, count(DISTINCT e.case_id) AS n_cases, median(e.value) AS median
        FROM method_eval e JOIN cases c USING (case_id)
        WHERE e.run_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}
        GROUP BY e.run_id, c.dataset, e.metric ORDER BY 1, 2, 3""", [list(run_ids)] + params)


def perturbation_summary(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str],
                         cohort: CohortFilter) -> pd.DataFrame:
    """MoRF/LeRF curves: median and IQR per run, ordering and step over the cohort's (case, class)
    curves, each normalised as the nAOPC/nABPC are: ``(s - s_min) / (s(0) - s_min)``, ``s(0)`` the
    clean score and ``s_min`` the fully perturbed one (MoRF's last step), so that classes of
    different sizes and logit scales share one axis (1 = clean, 0 = all removed). Curves whose
    span is zero drop out, as they do from the normalised metrics."""
    condition, params = where_clause(cohort, "c")
    return db.fetch(con, f"""
        WITH curves AS (
            SELECT p.run_id, p.case_id, p.target_id, lower(p.ordering) AS ordering, p.step, p.fraction, p.value
            FROM perturbation_curve p JOIN cases c USING (case_id)
            WHERE p.run_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}),
        ends AS (
            SELECT run_id, case_id, target_id, arg_min(value, step) AS clean, arg_max(value, step) AS removed
            FROM curves WHERE ordering = 'morf' GROUP BY run_id, case_id, target_id),
        normalised AS (
            SELECT k.run_id, k.ordering, k.step, k.fraction, (k.value - e.removed) / (e.clean - e.removed) AS value
            FROM curves k JOIN ends e USING (run_id, case_id, target_id)
            WHERE abs(e.clean - e.removed) > 1e-12)
        SELECT run_id, ordering, step, avg(fraction) AS fraction, median(value) AS median,
               quantile_cont(value, 0.25) AS q25, quantile_cont(value, 0.75) AS q75, count(value) AS n
        FROM normalised GROUP BY run_id, ordering, step ORDER BY 1, 2, 3""", [list(run_ids)] + params)


def evaluated_case_count(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> int:
    """Distinct cases with evaluation rows in any of the runs (before the cohort filter)."""
    frame = db.fetch(con, """
        SELECT count(DISTINCT case_id) AS n FROM (
            SELECT case_id FROM method_eval WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
            UNION ALL SELECT case_id FROM perturbation_curve WHERE run_id IN (SELECT unnest(?::VARCHAR[])))""",
                     [list(run_ids), list(run_ids)])
    return int(frame.n.iloc[0])


def evaluated_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs that have method_eval or perturbation_curve rows."""
    frame = db.fetch(con, "SELECT DISTINCT run_id FROM method_eval "
                          "UNION SELECT DISTINCT run_id FROM perturbation_curve")
    return sorted(frame.run_id.tolist())


def has_method_evaluation(con: duckdb.DuckDBPyConnection) -> bool:
    return int(db.fetch(con, "SELECT count(*) AS n FROM method_eval").n.iloc[0]) > 0

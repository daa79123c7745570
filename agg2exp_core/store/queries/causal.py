"""Reads of causal runs: effects of replacing regions, of ablating network components, relevance masks.
Their tables are newer than the store format's first version: older stores give empty frames."""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries.cases import run_case_ids
from agg2exp_core.store.queries.cohort import CohortFilter, cohort_cte
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import empty, has_table


def _members(con, run_id: str, members: Sequence[str] | None) -> Sequence[str]:
    return run_case_ids(con, run_id) if members is None else members


def causal_summary(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter,
                   members: Sequence[str] | None = None) -> pd.DataFrame:
    """Per target and source over the cohort: mean ATE, std and n of cases, mean per-case SE."""
    if not has_table(con, "causal_effect"):
        return empty(["target_id", "source_id", "mean", "std", "n", "mean_se"])
    cte, params = cohort_cte(_members(con, run_id, members), cohort)
    return db.fetch(con, cte + """
        SELECT e.target_id, e.source_id, avg(e.ate) AS mean, stddev_samp(e.ate) AS std, count(e.ate) AS n,
               avg(e.se) AS mean_se
        FROM causal_effect e JOIN cohort USING (case_id) WHERE e.run_id = ?
        GROUP BY e.target_id, e.source_id ORDER BY 1, 2""", params + [run_id])


def causal_target_values(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter, target_id: int,
                         members: Sequence[str] | None = None) -> pd.DataFrame:
    """Every case's effects on one target: case_id, source_id, ate, se, n, dataset."""
    if not has_table(con, "causal_effect"):
        return empty(["case_id", "source_id", "ate", "se", "n", "dataset"])
    cte, params = cohort_cte(_members(con, run_id, members), cohort)
    return db.fetch(con, cte + """
        SELECT e.case_id, e.source_id, e.ate, e.se, e.n, c.dataset
        FROM causal_effect e JOIN cohort c USING (case_id) WHERE e.run_id = ? AND e.target_id = ?
        ORDER BY e.source_id, e.case_id""", params + [run_id, int(target_id)])


def causal_case(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's effects: target_id, source_id, ate, se, n."""
    if not has_table(con, "causal_effect"):
        return empty(["target_id", "source_id", "ate", "se", "n"])
    return db.fetch(con, "SELECT target_id, source_id, ate, se, n FROM causal_effect "
                         "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


def component_effects(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter,
                      case_id: str | None = None, members: Sequence[str] | None = None) -> pd.DataFrame:
    """Component effects per target and component: mean ATE, std, n cases, mean SE (one case or the cohort)."""
    if not has_table(con, "component_effect"):
        return empty(["target_id", "component", "position", "mean", "std", "n", "mean_se"])
    cte, params = cohort_cte(_members(con, run_id, members), cohort)
    return db.fetch(con, cte + """
        SELECT e.target_id, e.component, min(e.position) AS position, avg(e.ate) AS mean,
               stddev_samp(e.ate) AS std, count(e.ate) AS n, avg(e.se) AS mean_se
        FROM component_effect e JOIN cohort USING (case_id)
        WHERE e.run_id = ? AND (CAST(? AS VARCHAR) IS NULL OR e.case_id = ?)
        GROUP BY e.target_id, e.component ORDER BY 1, 3""", params + [run_id, case_id, case_id])


def relevance_masks(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> pd.DataFrame:
    """A case's relevance masks: target_id, share, n_units, n_voxels, dice_keep, dice_remove."""
    if not has_table(con, "relevance_mask"):
        return empty(["target_id", "share", "n_units", "n_voxels", "dice_keep", "dice_remove"])
    return db.fetch(con, "SELECT target_id, share, n_units, n_voxels, dice_keep, dice_remove "
                         "FROM relevance_mask WHERE run_id = ? AND case_id = ? ORDER BY 1", [run_id, case_id])

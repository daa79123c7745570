"""Distributions over the cohort as box statistics plus the points outside the whiskers.

A box plot of 20,000 cases is drawn from its statistics and the points outside its whiskers,
both computed here in one pass over the cohort's rows. Tukey's rule, as Plotly's
``boxpoints="outliers"``: the whiskers end at the most extreme values within 1.5 IQR of the
quartiles; quartiles are DuckDB's ``quantile_cont`` (linear interpolation, as numpy's
default). Skewed masses put thousands of cases outside the whiskers, so only the
``points_per_side`` most extreme per box and side come back (``n_low``/``n_high`` count all).
``values`` (rows: group columns, value, case_id), ``groups`` and ``details`` are fixed SQL
text of this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries.cases import run_case_ids
from agg2exp_core.store.queries.cohort import CohortFilter, run_rows, where_clause
from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import mass_column

POINTS_PER_SIDE = 100


@dataclass(frozen=True)
class Distribution:
    """Box statistics per group and the cases drawn as points outside the whiskers."""

    boxes: pd.DataFrame     # groups, n, mean, q1, median, q3, lowerfence, upperfence, n_low, n_high
    points: pd.DataFrame    # groups, value, case_id (+ details)

    @property
    def n_outside(self) -> int:
        return int(self.boxes.n_low.sum() + self.boxes.n_high.sum()) if len(self.boxes) else 0


_BOX_COLUMNS = ["n", "mean", "q1", "median", "q3", "lowerfence", "upperfence", "n_low", "n_high"]


def _distribution(con: duckdb.DuckDBPyConnection, values: str, groups: str, params: list, points_per_side: int,
                  details: str = "SELECT * FROM points", detail_params: list | tuple = ()) -> Distribution:
    frame = db.fetch(con, f"""
        WITH v AS MATERIALIZED ({values}),
        f AS (SELECT {groups}, count(value) AS n, avg(value) AS mean, quantile_cont(value, [0.25, 0.5, 0.75]) AS q
              FROM v WHERE value IS NOT NULL AND NOT isnan(value) GROUP BY {groups}),
        marked AS (SELECT v.*, f.q[1] - 1.5 * (f.q[3] - f.q[1]) AS lo, f.q[3] + 1.5 * (f.q[3] - f.q[1]) AS hi
                   FROM v JOIN f USING ({groups})),
        w AS (SELECT {groups}, min(value) FILTER (WHERE value >= lo) AS lowerfence,
                     max(value) FILTER (WHERE value <= hi) AS upperfence,
                     count(*) FILTER (WHERE value < lo) AS n_low, count(*) FILTER (WHERE value > hi) AS n_high
              FROM marked GROUP BY {groups}),
        points AS (SELECT * EXCLUDE (lo, hi) FROM marked WHERE value < lo OR value > hi
                   QUALIFY row_number() OVER (PARTITION BY {groups}, value > hi
                                              ORDER BY CASE WHEN value > hi THEN -value ELSE value END, case_id) <= ?)
        SELECT 'box' AS part, {groups}, n, mean, q[1] AS q1, q[2] AS median, q[3] AS q3, lowerfence, upperfence,
               n_low, n_high
        FROM f JOIN w USING ({groups})
        UNION ALL BY NAME
        SELECT 'point' AS part, * FROM ({details})""", params + [int(points_per_side)] + list(detail_params))
    keys = [g.strip() for g in groups.split(",")]
    boxes = frame[frame.part == "box"]
    boxes = boxes[keys + _BOX_COLUMNS].astype({"n": int, "n_low": int, "n_high": int})
    points = frame[frame.part == "point"].drop(columns=["part"] + _BOX_COLUMNS)
    return Distribution(boxes.sort_values(keys).reset_index(drop=True),
                        points.sort_values(keys + ["value"]).reset_index(drop=True))


def source_distribution(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter, target_id: int,
                        kind: str = "abs", points_per_side: int = POINTS_PER_SIDE) -> Distribution:
    """e_{b->a} over the cohort for every source b of target a; points with case metadata and Dice."""
    column = mass_column(kind)
    rows, params = run_rows(run_id, cohort)
    details = """SELECT p.*, c.dataset, c.sex, c.age, c.pathologies, d.dice FROM points p JOIN cases c USING (case_id)
                 LEFT JOIN dice d ON d.case_id = p.case_id AND d.class_id = ?
                      AND d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)"""
    return _distribution(con, f"SELECT li.source_id, li.{column} AS value, li.case_id {rows} AND li.target_id = ?",
                         "source_id", params + [int(target_id)], points_per_side, details, [int(target_id), run_id])


def context_mass_distribution(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter,
                              points_per_side: int = POINTS_PER_SIDE) -> Distribution:
    """Context mass 1 - e_{a->a} (absolute) per target and dataset."""
    rows, params = run_rows(run_id, cohort)
    return _distribution(con, f"SELECT li.target_id, c.dataset, 1 - li.mass_abs AS value, li.case_id {rows} "
                              "AND li.target_id = li.source_id", "target_id, dataset", params, points_per_side)


def dice_distribution(con: duckdb.DuckDBPyConnection, run_id: str, cohort: CohortFilter,
                      members: Sequence[str] | None = None, points_per_side: int = POINTS_PER_SIDE) -> Distribution:
    """Dice (of the run's model) per class over the cohort's cases (``members``: the run's case ids, if known)."""
    members = run_case_ids(con, run_id) if members is None else members
    condition, params = where_clause(cohort, "c")
    return _distribution(con, f"""SELECT d.class_id, d.dice AS value, d.case_id FROM dice d JOIN cases c USING (case_id)
                                  WHERE d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)
                                  AND d.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}""",
                         "class_id", [run_id, list(members)] + params, points_per_side)

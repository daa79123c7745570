"""Reads of the failure-slice search (``analysis.slices``): its inputs and its tables.

Inputs: the cases' metadata with their pathologies, the expected Dice of every class. Tables:
``failure_slice`` (ranked per class), ``failure_slice_member``, ``failure_slice_cell``; beside them
the Dice in and out of a slice and its members' mean outlier reasons (read from outlier_reasons).
"""
from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db
from agg2exp_core.store.queries.connection import has_table
from agg2exp_core.vocabulary import AVERAGE_TARGET

SLICE_TABLE_COLUMNS = ["slice_id", "class_id", "source", "description", "members", "n", "effect", "p_value",
                       "q_value", "uses_labels", "rank"]


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


def slice_case_metadata(con: duckdb.DuckDBPyConnection, case_ids: Sequence[str]) -> pd.DataFrame:
    """``case_id, dataset, split, sex, age, pathologies`` of the given cases, in their order."""
    frame = db.fetch(con, "SELECT case_id, dataset, split, sex, age, pathologies FROM cases "
                          "WHERE case_id IN (SELECT unnest(?::VARCHAR[]))", [list(map(str, case_ids))])
    return frame.set_index("case_id").reindex(list(case_ids)).reset_index()


def expected_dice_table(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """``case_id, class_id, estimate`` of every class of a run (AVERAGE_TARGET: the case mean)."""
    if not has_table(con, "dice_estimate"):
        return _empty(["case_id", "class_id", "estimate"])
    return db.fetch(con, "SELECT case_id, class_id, estimate FROM dice_estimate WHERE run_id = ? "
                         "ORDER BY case_id, class_id", [run_id])


def failure_slices(con: duckdb.DuckDBPyConnection, run_id: str, class_id: int | None = None) -> pd.DataFrame:
    """The run's failure slices (one class, or all), by class and rank."""
    if not has_table(con, "failure_slice"):
        return _empty(SLICE_TABLE_COLUMNS)
    return db.fetch(con, f"""
        SELECT {', '.join(SLICE_TABLE_COLUMNS)} FROM failure_slice
        WHERE run_id = ? AND (? OR class_id = ?) ORDER BY class_id, rank""",
                    [run_id, class_id is None, int(class_id if class_id is not None else AVERAGE_TARGET)])


def failure_slice_classes(con: duckdb.DuckDBPyConnection, run_id: str) -> list[int]:
    """Classes with at least one failure slice (AVERAGE_TARGET first)."""
    return sorted(int(c) for c in failure_slices(con, run_id).class_id.unique())


def failure_slice_members(con: duckdb.DuckDBPyConnection, run_id: str, slice_id: int) -> pd.DataFrame:
    """``case_id, dataset, sex, age`` of a slice's members."""
    if not has_table(con, "failure_slice_member"):
        return _empty(["case_id", "dataset", "sex", "age"])
    return db.fetch(con, """
        SELECT m.case_id, c.dataset, c.sex, c.age FROM failure_slice_member m LEFT JOIN cases c USING (case_id)
        WHERE m.run_id = ? AND m.slice_id = ? ORDER BY m.case_id""", [run_id, int(slice_id)])


def failure_slice_cells(con: duckdb.DuckDBPyConnection, run_id: str, slice_id: int) -> pd.DataFrame:
    """The cells that differ between a slice and the rest, with RoI names, smallest p first."""
    if not has_table(con, "failure_slice_cell"):
        return _empty(["target_id", "target", "source_id", "source", "mean_in", "mean_out", "difference",
                       "p_value", "q_value"])
    return db.fetch(con, """
        SELECT f.target_id, t.name AS target, f.source_id, s.name AS source, f.mean_in, f.mean_out,
               f.difference, f.p_value, f.q_value
        FROM failure_slice_cell f LEFT JOIN rois t ON t.roi_id = f.target_id LEFT JOIN rois s ON s.roi_id = f.source_id
        WHERE f.run_id = ? AND f.slice_id = ? ORDER BY f.p_value, abs(f.difference) DESC""",
                    [run_id, int(slice_id)])


def failure_slice_dice(con: duckdb.DuckDBPyConnection, run_id: str, slice_id: int) -> pd.DataFrame:
    """``case_id, in_slice, dice`` over the cases the slice was scored on: true Dice where the slice used
    labels (the class mean over non-background classes for AVERAGE_TARGET), else expected Dice."""
    if not has_table(con, "failure_slice"):
        return _empty(["case_id", "in_slice", "dice"])
    return db.fetch(con, """
        WITH s AS (SELECT * FROM failure_slice WHERE run_id = ? AND slice_id = ?),
        r AS (SELECT model_sha256 FROM runs WHERE run_id = ?),
        true_dice AS (
            SELECT d.case_id, CASE WHEN s.class_id = ? THEN avg(d.dice) FILTER (WHERE o.name <> 'background')
                                   ELSE any_value(d.dice) FILTER (WHERE d.class_id = s.class_id) END AS dice
            FROM dice d JOIN r ON d.model_sha256 = r.model_sha256 JOIN rois o ON o.roi_id = d.class_id, s
            WHERE s.uses_labels GROUP BY d.case_id, s.class_id),
        expected AS (
            SELECT e.case_id, e.estimate AS dice FROM dice_estimate e, s
            WHERE e.run_id = ? AND e.class_id = s.class_id AND NOT s.uses_labels),
        scored AS (SELECT * FROM true_dice UNION ALL SELECT * FROM expected)
        SELECT scored.case_id, m.case_id IS NOT NULL AS in_slice, scored.dice
        FROM scored LEFT JOIN failure_slice_member m
             ON m.case_id = scored.case_id AND m.run_id = ? AND m.slice_id = ?
        WHERE scored.dice IS NOT NULL AND scored.case_id IN (SELECT case_id FROM case_status WHERE run_id = ?)
        ORDER BY in_slice DESC, scored.dice""",
                    [run_id, int(slice_id), run_id, AVERAGE_TARGET, run_id, run_id, int(slice_id), run_id])


def failure_slice_reasons(con: duckdb.DuckDBPyConnection, run_id: str, slice_id: int, limit: int = 5) -> pd.DataFrame:
    """The outlier reasons of a slice: its members' mean contribution per cell (the slice's class, or all)."""
    if not (has_table(con, "outlier_reasons") and has_table(con, "failure_slice")):
        return _empty(["target_id", "target", "source_id", "source", "contribution", "n_cases"])
    return db.fetch(con, """
        WITH s AS (SELECT class_id FROM failure_slice WHERE run_id = ? AND slice_id = ?)
        SELECT o.target_id, t.name AS target, o.source_id, r.name AS source, avg(o.contribution) AS contribution,
               count(*) AS n_cases
        FROM outlier_reasons o JOIN failure_slice_member m ON m.case_id = o.case_id AND m.run_id = o.run_id, s
             , rois t, rois r
        WHERE o.run_id = ? AND m.slice_id = ? AND (s.class_id = ? OR o.target_id = s.class_id)
              AND t.roi_id = o.target_id AND r.roi_id = o.source_id
        GROUP BY o.target_id, t.name, o.source_id, r.name
        ORDER BY contribution DESC, o.target_id, o.source_id LIMIT ?""",
                    [run_id, int(slice_id), run_id, int(slice_id), AVERAGE_TARGET, int(limit)])

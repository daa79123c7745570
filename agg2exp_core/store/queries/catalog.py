"""Store-level reads: runs, RoIs, the build's progress, a run's settings and artefacts."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from agg2exp_core.store.queries import connection as db  # db.fetch: the one runner (tests spy on it)
from agg2exp_core.store.queries.connection import empty, has_column, has_table, json_or_empty

# Every table the dashboard needs (all created by agg2exp_core.store.init_schema); newer ones are optional.
REQUIRED_TABLES = frozenset({"cases", "rois", "runs", "case_status", "local_importance", "dice", "artifacts",
                             "failures", "anomaly", "anomaly_dice", "outlier_tests", "method_eval",
                             "perturbation_curve"})
BUILD_COLUMNS = ["step", "position", "title", "state", "done", "total", "unit", "remaining_s", "run_id",
                 "started_at", "updated_at"]


def runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Runs with their number of cases, artefacts and whether signed masses and the volume-adjusted
    mass (lift) exist, newest first."""
    # a store written before the lift existed has no mass_lift column (it is read-only here)
    details = "count(mass_lift) > 0" if has_column(con, "local_importance", "mass_lift") else "FALSE"  # fixed
    frame = db.fetch(con, f"""
        SELECT r.run_id, r.method, CAST(r.params AS VARCHAR) AS params, r.model_sha256,
               CAST(r.label_names AS VARCHAR) AS label_names, r.code_version, r.source, r.description,
               r.created_at,
               coalesce(li.n_cases, 0) AS n_cases, coalesce(li.has_signed, FALSE) AS has_signed,
               coalesce(li.has_lift, FALSE) AS has_lift,
               coalesce(a.n_artifacts, 0) AS n_artifacts, coalesce(f.n_failures, 0) AS n_failures
        FROM runs r
        LEFT JOIN (SELECT run_id, count(DISTINCT case_id) AS n_cases, count(mass_pos) > 0 AS has_signed,
                          {details} AS has_lift
                   FROM local_importance GROUP BY run_id) li USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_artifacts FROM artifacts GROUP BY run_id) a USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_failures FROM failures GROUP BY run_id) f USING (run_id)
        ORDER BY r.created_at DESC NULLS LAST, r.run_id""")
    frame["params"] = frame["params"].map(json_or_empty)
    frame["label_names"] = frame["label_names"].map(lambda s: json_or_empty(s) or [])
    return frame


def matrix_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Runs with importance matrices: ``run_id, method, model_sha256, source, n_cases``, oldest first."""
    return db.fetch(con, """
        SELECT r.run_id, r.method, r.model_sha256, r.source, li.n_cases FROM runs r JOIN
        (SELECT run_id, count(DISTINCT case_id) AS n_cases FROM local_importance GROUP BY run_id) li USING (run_id)
        ORDER BY r.created_at, r.run_id""")


def run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    return db.fetch(con, "SELECT count(*) AS n FROM runs WHERE run_id = ?", [run_id]).n.iloc[0] > 0


def run_model(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The model checksum of a run (the key of its Dice rows)."""
    frame = db.fetch(con, "SELECT model_sha256 FROM runs WHERE run_id = ?", [run_id])
    return frame.model_sha256.iloc[0] if len(frame) else None


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    frame = db.fetch(con, "SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1")
    return frame.run_id.iloc[0] if len(frame) else None


def run_label_names(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """The run's class names in model channel order."""
    frame = db.fetch(con, "SELECT CAST(label_names AS VARCHAR) AS names FROM runs WHERE run_id = ?", [run_id])
    return list(json_or_empty(frame.names.iloc[0]) or []) if len(frame) else []


def rois(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """RoIs (roi_id, name, grp, color, is_class) ordered by id."""
    return db.fetch(con, "SELECT roi_id, name, grp, color, is_class FROM rois ORDER BY roi_id")


def roi_names(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    frame = rois(con)
    return dict(zip(frame.roi_id.astype(int), frame.name))


def class_roi_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    """RoI ids of model classes (not extra masks), in id order."""
    frame = rois(con)
    return frame.roi_id[frame.is_class.astype(bool)].astype(int).tolist()


def build_status(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The steps of a store built while it is read (the demo), in order; empty for other or older stores."""
    if not has_table(con, "build_status"):
        return empty(BUILD_COLUMNS)
    return db.fetch(con, f"SELECT {', '.join(BUILD_COLUMNS)} FROM build_status ORDER BY position, step")


def build_complete(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has a build plan and every step of it is done."""
    steps = build_status(con)
    return bool(len(steps)) and bool((steps.state == "done").all())


def analysis_settings(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The settings of the run's outlier analysis and its ``score_convention`` ({} before one ran, or in
    older stores): what the dashboard shows and what ``analysis`` rebuilds its forests from."""
    if not has_table(con, "analysis_settings"):
        return {}
    frame = db.fetch(con, "SELECT CAST(settings AS VARCHAR) AS settings, score_convention FROM analysis_settings "
                          "WHERE run_id = ?", [run_id])
    if frame.empty:
        return {}
    return {**json_or_empty(frame.settings.iloc[0]), "score_convention": frame.score_convention.iloc[0]}


def artifact_paths(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, str]:
    """case_id -> slice artefact path (relative to the store's folder) of a run."""
    frame = db.fetch(con, "SELECT case_id, path FROM artifacts WHERE run_id = ? ORDER BY case_id", [run_id])
    return dict(zip(frame.case_id, frame.path))


def store_folder(con: duckdb.DuckDBPyConnection) -> str:
    """Folder of the open store file (the base of artefact paths)."""
    frame = db.fetch(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    return str(Path(frame.path.iloc[0]).resolve().parent)

"""Reads of the store by the core (the dashboard has its own, read-only, in ``dashboard/data.py``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.vocabulary import MASS_KINDS


def done_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT case_id FROM case_status WHERE run_id = ?", [run_id]).fetchall()}


def local_matrices(con: duckdb.DuckDBPyConnection, run_id: str, kind: str = "abs",
                   case_ids: Sequence[str] | None = None) -> tuple[list[str], list[int], list[int], np.ndarray]:
    """Local matrices of a run as an array ``[cases, targets, sources]`` (NaN where missing)."""
    column = MASS_KINDS[kind]
    frame = con.execute(
        f"SELECT case_id, target_id, source_id, {column} AS v FROM local_importance WHERE run_id = ?",
        [run_id]).df()
    if case_ids is not None:
        frame = frame[frame.case_id.isin(list(case_ids))]
    if frame.empty:
        return [], [], [], np.full((0, 0, 0), np.nan)
    cases = sorted(frame.case_id.unique())
    targets = sorted(frame.target_id.unique().tolist())
    sources = sorted(frame.source_id.unique().tolist())
    cube = np.full((len(cases), len(targets), len(sources)), np.nan)
    ci = {c: i for i, c in enumerate(cases)}
    ti = {t: i for i, t in enumerate(targets)}
    si = {s: i for i, s in enumerate(sources)}
    cube[frame.case_id.map(ci).to_numpy(), frame.target_id.map(ti).to_numpy(),
         frame.source_id.map(si).to_numpy()] = frame.v.to_numpy(dtype=float)
    return cases, targets, sources, cube
def volume_shares(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[list[str], list[int], np.ndarray]:
    """(case ids, source ids, region volume shares ``[cases, sources]``) of a run (NaN where unknown)."""
    frame = con.execute("SELECT case_id, source_id, any_value(volume_share) AS v FROM local_importance "
                        "WHERE run_id = ? GROUP BY case_id, source_id", [run_id]).df()
    cases, sources = sorted(frame.case_id.unique()), sorted(frame.source_id.unique().tolist())
    table = np.full((len(cases), len(sources)), np.nan)
    table[frame.case_id.map({c: i for i, c in enumerate(cases)}).to_numpy(),
          frame.source_id.map({s: i for i, s in enumerate(sources)}).to_numpy()] = frame.v.to_numpy(dtype=float)
    return cases, sources, table


def class_roi_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    """RoI ids of model classes (not extra masks), in id order."""
    return [r[0] for r in con.execute("SELECT roi_id FROM rois WHERE is_class ORDER BY roi_id").fetchall()]


def case_metadata(con: duckdb.DuckDBPyConnection, case_ids: Sequence[str]) -> pd.DataFrame:
    """``case_id, dataset, split, sex, age`` of the given cases, in their order."""
    frame = con.execute("SELECT case_id, dataset, split, sex, age FROM cases").df().set_index("case_id")
    return frame.loc[list(case_ids)].reset_index()


def run_exists(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    return con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] > 0


def run_model(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The model checksum of a run (the key of its Dice rows)."""
    return con.execute("SELECT model_sha256 FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]


def latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()
    return row[0] if row else None


def dice_of_model(con: duckdb.DuckDBPyConnection, model_sha256: str) -> pd.DataFrame:
    """``case_id, target_id, dice`` of one model."""
    return con.execute("SELECT case_id, class_id AS target_id, dice FROM dice WHERE model_sha256 = ?",
                       [model_sha256]).df()


def mean_anomaly_by_case(con: duckdb.DuckDBPyConnection, run_id: str, target_ids: Sequence[int]) -> pd.DataFrame:
    """``case_id, score, pathologies, dataset``: each case's anomaly score averaged over ``target_ids``."""
    return con.execute(
        "SELECT a.case_id, avg(a.score) AS score, any_value(c.pathologies) AS pathologies, "
        "any_value(c.dataset) AS dataset FROM anomaly a JOIN cases c USING (case_id) "
        "WHERE a.run_id = ? AND a.target_id IN (SELECT unnest(?)) GROUP BY a.case_id",
        [run_id, list(target_ids)]).df()


def has_method_evaluation(con: duckdb.DuckDBPyConnection) -> bool:
    return con.execute("SELECT count(*) FROM method_eval").fetchone()[0] > 0


# --- reads of the analyses beyond the paper (agg2exp_core.analysis: drift, quality, reasons, ...) ----------

def anomaly_scores(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """``case_id, target_id, score, is_outlier`` of a run (target -1: averaged over classes)."""
    return con.execute("SELECT case_id, target_id, score, is_outlier FROM anomaly WHERE run_id = ? "
                       "ORDER BY case_id, target_id", [run_id]).df()


def artifact_paths(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, str]:
    """case_id -> slice artefact path (relative to the store's folder) of a run."""
    return dict(con.execute("SELECT case_id, path FROM artifacts WHERE run_id = ?", [run_id]).fetchall())


def store_folder(con: duckdb.DuckDBPyConnection) -> str:
    """Folder of the open store file (the base of artefact paths)."""
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    return str(Path(path).resolve().parent)


def matrix_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Runs with importance matrices: ``run_id, method, model_sha256, source, n_cases``."""
    return con.execute(
        "SELECT r.run_id, r.method, r.model_sha256, r.source, li.n_cases FROM runs r JOIN "
        "(SELECT run_id, count(DISTINCT case_id) AS n_cases FROM local_importance GROUP BY run_id) li USING (run_id) "
        "ORDER BY r.created_at, r.run_id").df()


def roi_names(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return dict(con.execute("SELECT roi_id, name FROM rois ORDER BY roi_id").fetchall())


def run_label_names(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """The run's class names in model channel order."""
    row = con.execute("SELECT CAST(label_names AS VARCHAR) FROM runs WHERE run_id = ?", [run_id]).fetchone()
    return list(json.loads(row[0])) if row and row[0] else []


def analysis_settings(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """The settings a run's outlier analysis was computed with ({} before one ran, or in older stores)."""
    row = con.execute("SELECT CAST(settings AS VARCHAR) FROM analysis_settings WHERE run_id = ?", [run_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def build_status(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The steps of the store's build in order (empty for a store not built step by step, or an older one)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'build_status' "
                       "AND database_name = current_database()").fetchone()[0]:
        return pd.DataFrame(columns=["step", "position", "title", "state", "done", "total", "unit", "remaining_s",
                                     "run_id", "started_at", "updated_at"])
    return con.execute("SELECT * FROM build_status ORDER BY position, step").df()


def build_complete(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store has a build plan and every step of it is done."""
    steps = build_status(con)
    return bool(len(steps)) and bool((steps.state == "done").all())

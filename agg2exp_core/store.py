"""The DuckDB store: schema, writes, and atomic publication for concurrent readers.

DuckDB lets one process write a file and no other process read it meanwhile. So a
writer never touches the published file: it works on ``<db>.writing`` (its own file,
which also makes it resumable after a crash) and ``publish`` copies a checkpointed
snapshot next to the target and renames it over the published file. Readers open
the published file read-only; a rename never disturbs a reader that has it open.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.errors import InputError
from agg2exp_core.labels import RoiSpec

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS cases(
    case_id VARCHAR PRIMARY KEY, dataset VARCHAR NOT NULL, split VARCHAR,
    sex VARCHAR, age DOUBLE, image_path VARCHAR, label_path VARCHAR,
    pathologies VARCHAR DEFAULT '');
CREATE TABLE IF NOT EXISTS rois(
    roi_id INTEGER PRIMARY KEY, name VARCHAR UNIQUE NOT NULL, grp VARCHAR NOT NULL,
    color VARCHAR NOT NULL, is_class BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    run_id VARCHAR PRIMARY KEY, method VARCHAR NOT NULL, params JSON,
    model_sha256 VARCHAR, label_names JSON, code_version VARCHAR,
    source VARCHAR, description VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS case_status(
    run_id VARCHAR, case_id VARCHAR, seconds DOUBLE, finished_at TIMESTAMP,
    PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS local_importance(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER,
    mass_abs DOUBLE, mass_pos DOUBLE, mass_neg DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS dice(
    model_sha256 VARCHAR, case_id VARCHAR, class_id INTEGER, dice DOUBLE,
    PRIMARY KEY(model_sha256, case_id, class_id));
CREATE TABLE IF NOT EXISTS artifacts(
    run_id VARCHAR, case_id VARCHAR, path VARCHAR, PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS failures(
    run_id VARCHAR, case_id VARCHAR, stage VARCHAR, message VARCHAR, failed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS anomaly(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, score DOUBLE, is_outlier BOOLEAN,
    PRIMARY KEY(run_id, case_id, target_id));
CREATE TABLE IF NOT EXISTS anomaly_dice(
    run_id VARCHAR, target_id INTEGER, spearman_rho DOUBLE, p_value DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, target_id));
CREATE TABLE IF NOT EXISTS outlier_tests(
    run_id VARCHAR, target_id INTEGER, variable VARCHAR, test VARCHAR,
    statistic DOUBLE, p_value DOUBLE, n_inliers INTEGER, n_outliers INTEGER,
    PRIMARY KEY(run_id, target_id, variable));
CREATE TABLE IF NOT EXISTS method_eval(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, metric VARCHAR, value DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, metric));
CREATE TABLE IF NOT EXISTS perturbation_curve(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, ordering VARCHAR,
    step INTEGER, fraction DOUBLE, value DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, ordering, step));
"""
# anomaly.target_id / anomaly_dice.target_id: -1 stands for "averaged over classes".
AVERAGE_TARGET = -1


def writing_path(db_path: str | Path) -> Path:
    """The writer's private file for a published store path."""
    return Path(str(db_path) + ".writing")


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    try:
        if read_only:
            return duckdb.connect(str(path), read_only=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(path))
    except (duckdb.Error, OSError) as err:  # not a DuckDB file, locked by another writer, bad folder
        raise InputError(path, f"cannot open the store ({str(err).splitlines()[0]})") from None
    init_schema(con)
    return con


@contextmanager
def open_writer(db_path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the writer's file (seeded from the published store if any); publish on exit.

    Bad input (``InputError``) publishes nothing, so a rejected command leaves the
    published store byte for byte as it was.
    """
    db_path = Path(db_path)
    work = writing_path(db_path)
    if db_path.exists() and not db_path.is_file():
        raise InputError(db_path, "not a store file (a folder?)")
    seeded = not work.exists() and db_path.exists()
    if seeded:  # copy then rename: a crash never leaves a half-copied writer file
        tmp = work.with_name(f".{work.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(db_path, tmp)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise InputError(db_path, f"cannot copy the store ({err.strerror or err})") from None
        os.replace(tmp, work)
    try:
        con = connect(work)
    except InputError:
        if seeded:
            work.unlink()
        raise
    bad_input = False
    try:
        yield con
    except InputError:
        bad_input = True
        raise
    finally:
        if not bad_input:
            publish(con, db_path)
        con.close()


def publish(con: duckdb.DuckDBPyConnection, db_path: str | Path) -> None:
    """Atomically replace the published store with a snapshot of the writer's file."""
    db_path = Path(db_path)
    con.execute("CHECKPOINT")
    work = Path(con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0])
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    shutil.copyfile(work, tmp)
    os.replace(tmp, db_path)


def init_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])


def upsert_rois(con: duckdb.DuckDBPyConnection, specs: Sequence[RoiSpec]) -> dict[str, int]:
    """Register RoIs by name (ids are stable across runs of one store); return name -> id."""
    known = dict(con.execute("SELECT name, roi_id FROM rois").fetchall())
    next_id = max(known.values(), default=-1) + 1
    for spec in specs:
        if spec.name in known:
            continue
        con.execute("INSERT INTO rois VALUES (?, ?, ?, ?, ?)",
                    [next_id, spec.name, spec.grp, spec.color, spec.is_class])
        known[spec.name] = next_id
        next_id += 1
    return {s.name: known[s.name] for s in specs}


CASE_COLUMNS = ("case_id", "dataset", "split", "sex", "age", "image_path", "label_path", "pathologies")


def upsert_cases(con: duckdb.DuckDBPyConnection, cases: pd.DataFrame) -> None:
    """Insert or update case metadata (columns of CASE_COLUMNS; missing ones become NULL)."""
    frame = cases.reindex(columns=list(CASE_COLUMNS)).astype(object)
    frame = frame.where(pd.notna(frame), None)
    frame["pathologies"] = frame["pathologies"].map(lambda p: p or "")
    con.executemany(f"INSERT OR REPLACE INTO cases VALUES ({', '.join('?' * len(CASE_COLUMNS))})",
                    frame.values.tolist())


def run_id_for(method: str, params: dict, model_sha256: str, cohort: str = "") -> str:
    """Deterministic run id, so a rerun of the same configuration resumes the same run."""
    key = json.dumps({"method": method, "params": params, "model": model_sha256, "cohort": cohort},
                     sort_keys=True, default=str)
    return f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def ensure_run(con: duckdb.DuckDBPyConnection, run_id: str, method: str, params: dict,
               model_sha256: str, label_names: Sequence[str], source: str,
               description: str = "", code_version: str = "") -> None:
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [run_id, method, json.dumps(params, sort_keys=True, default=str), model_sha256,
         json.dumps(list(label_names)), code_version or code_version_string(), source,
         description, datetime.now(timezone.utc).replace(tzinfo=None)])


def done_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT case_id FROM case_status WHERE run_id = ?", [run_id]).fetchall()}


def importance_rows(run_id: str, case_id: str, target_ids: Sequence[int], source_ids: Sequence[int],
                    mass_abs: np.ndarray, mass_pos: np.ndarray, mass_neg: np.ndarray) -> list[list]:
    """Long-format rows of one case's local matrices ``[len(target_ids), len(source_ids)]``."""
    rows = []
    for i, t in enumerate(target_ids):
        for j, s in enumerate(source_ids):
            rows.append([run_id, case_id, int(t), int(s), _num(mass_abs[i, j]),
                         _num(mass_pos[i, j]), _num(mass_neg[i, j])])
    return rows


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def write_case(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, rows: list[list],
               dice_rows: list[list] = (), artifact_path: str | None = None,
               seconds: float = 0.0, case_row: dict | None = None) -> None:
    """All results of one case in one transaction: either all land or none."""
    con.execute("BEGIN TRANSACTION")
    try:
        if case_row is not None:
            upsert_cases(con, pd.DataFrame([case_row]))
        con.execute("DELETE FROM local_importance WHERE run_id = ? AND case_id = ?", [run_id, case_id])
        if rows:
            con.executemany("INSERT INTO local_importance VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        if dice_rows:
            con.executemany("INSERT OR REPLACE INTO dice VALUES (?, ?, ?, ?)", list(dice_rows))
        if artifact_path is not None:
            con.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", [run_id, case_id, artifact_path])
        con.execute("DELETE FROM failures WHERE run_id = ? AND case_id = ?", [run_id, case_id])
        con.execute("INSERT OR REPLACE INTO case_status VALUES (?, ?, ?, ?)",
                    [run_id, case_id, seconds, datetime.now(timezone.utc).replace(tzinfo=None)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def record_failure(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, stage: str, message: str) -> None:
    """Record a case's failure (only its latest attempt is kept)."""
    con.execute("DELETE FROM failures WHERE run_id = ? AND case_id = ?", [run_id, case_id])
    con.execute("INSERT INTO failures VALUES (?, ?, ?, ?, ?)",
                [run_id, case_id, stage, " ".join(str(message).split()),
                 datetime.now(timezone.utc).replace(tzinfo=None)])


def replace_table_rows(con: duckdb.DuckDBPyConnection, table: str, run_id: str, frame: pd.DataFrame) -> None:
    """Replace a run's rows of an analysis table by ``frame`` (same column order as the table)."""
    if table not in {"anomaly", "anomaly_dice", "outlier_tests", "method_eval", "perturbation_curve"}:
        raise ValueError(f"not an analysis table: {table}")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        if len(frame):
            con.register("_frame", frame)
            con.execute(f"INSERT INTO {table} SELECT * FROM _frame")
            con.unregister("_frame")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def local_matrices(con: duckdb.DuckDBPyConnection, run_id: str, kind: str = "abs",
                   case_ids: Sequence[str] | None = None) -> tuple[list[str], list[int], list[int], np.ndarray]:
    """Local matrices of a run as an array ``[cases, targets, sources]`` (NaN where missing)."""
    column = {"abs": "mass_abs", "pos": "mass_pos", "neg": "mass_neg"}[kind]
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


def code_version_string() -> str:
    """The git commit of the code, when it runs from a checkout."""
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return ref[:12]
    except OSError:
        return "unknown"

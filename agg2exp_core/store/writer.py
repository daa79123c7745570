"""Writes of the store, the only place where the core writes SQL, and atomic publication.

DuckDB lets one process write a file and no other process read it meanwhile. So a
writer never touches the published file: it works on ``<db>.writing`` (its own file,
which also makes it resumable after a crash) and ``publish`` copies a checkpointed
snapshot next to the target and renames it over the published file. Readers open
the published file read-only; a rename never disturbs a reader that has it open.
"""
from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.errors import InputError
from agg2exp_core.labels import RoiSpec
from agg2exp_core.store.attempts import end_attempt
from agg2exp_core.store.lockdown import connect
from agg2exp_core.store.publication import (durable_copy, exclusive_lock, record_seed, refuse_linked_work_files,
                                            remove_leftover_temporaries, remove_work_files, seed_matches, writing_path)
from agg2exp_core.store.schema import ANALYSIS_TABLES, BUILD_STATES, CASE_RESULT_TABLES
from agg2exp_core.store.uncertainty import insert_uncertainty

log = logging.getLogger(__name__)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All statements of the block land together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@contextmanager
def open_writer(db_path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the writer's file (seeded from the published store if any); publish on exit.

    One writer per store: an exclusive lock (``<db>.lock``) is taken before anything else,
    and a second writer gets an ``InputError``. A ``.writing`` file left by an earlier
    writer is resumed only while the published store is the one it was seeded from (or
    last published); when the published file was replaced meanwhile (restored from a
    backup, copied in), the published file wins: the writer's file is seeded again from
    it (unpublished cases of the old copy are recomputed) and a warning says so.
    Bad input (``InputError``) publishes nothing, so a rejected command leaves the
    published store byte for byte as it was.
    """
    db_path = Path(db_path)
    work = writing_path(db_path)
    if db_path.exists() and not db_path.is_file():
        raise InputError(db_path, "not a store file (a folder?)")
    with exclusive_lock(db_path):
        refuse_linked_work_files(db_path)
        remove_leftover_temporaries(db_path)
        if work.exists() and not seed_matches(db_path):
            log.warning("%s: the published store changed since %s was made (replaced or restored?); "
                        "starting again from the published store", db_path, work.name)
            remove_work_files(db_path)
        seeded = not work.exists()
        if seeded and db_path.exists():  # copy then rename: a crash never leaves a half-copied writer file
            durable_copy(db_path, work, f"cannot copy the store to {work.name}: {{error}}")
        if seeded:
            record_seed(db_path)
        try:
            con = connect(work)
        except InputError:
            if seeded:
                remove_work_files(db_path)
            raise
        bad_input = False
        try:
            yield con
        except InputError:
            bad_input = True
            raise
        finally:
            try:
                if not bad_input:
                    publish(con, db_path)
            finally:
                con.close()


def publish(con: duckdb.DuckDBPyConnection, db_path: str | Path) -> None:
    """Atomically replace the published store with a snapshot of the writer's file.

    The snapshot is on disk (fsync) before the rename. When it cannot be written (disk
    full), the temporary copy is removed, the published store stays as it was and an
    ``InputError`` says why; the writer's file keeps every committed case.
    """
    db_path = Path(db_path)
    unpublished = "cannot publish the store: {error} (the published store is unchanged; rerun to publish)"
    try:
        con.execute("CHECKPOINT")  # a full disk may stop DuckDB itself; its log keeps the committed work
    except duckdb.Error as err:
        raise InputError(db_path, unpublished.format(error=str(err).splitlines()[0])) from None
    work = Path(con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0])
    durable_copy(work, db_path, unpublished)
    # DuckDB names its file by an absolute path; ``db_path`` may be relative or pass a symbolic
    # link. Compared as given, a relative store path never matched: the record went stale at
    # every publication and the next session took it for a restore and recopied the store.
    if work.resolve() == writing_path(db_path).resolve():
        record_seed(db_path)


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
         description, _now()])


def importance_rows(run_id: str, case_id: str, target_ids: Sequence[int], source_ids: Sequence[int],
                    mass_abs: np.ndarray, mass_pos: np.ndarray, mass_neg: np.ndarray,
                    volume_share: np.ndarray | None = None, mass_lift: np.ndarray | None = None) -> list[list]:
    """Long-format rows of one case's local matrices ``[len(target_ids), len(source_ids)]``.

    ``volume_share`` ``[len(source_ids)]`` and ``mass_lift`` (same shape as the masses): NULL when
    not given (volumes unknown).
    """
    shares = np.full(len(source_ids), np.nan) if volume_share is None else np.asarray(volume_share, dtype=float)
    lifts = np.full(np.shape(mass_abs), np.nan) if mass_lift is None else np.asarray(mass_lift, dtype=float)
    rows = []
    for i, t in enumerate(target_ids):
        for j, s in enumerate(source_ids):
            rows.append([run_id, case_id, int(t), int(s), _num(mass_abs[i, j]),
                         _num(mass_pos[i, j]), _num(mass_neg[i, j]), _num(shares[j]), _num(lifts[i, j])])
    return rows


def causal_rows(run_id: str, case_id: str, target_ids: Sequence[int], source_ids: Sequence[int],
                ate: np.ndarray, se: np.ndarray, n: Sequence[int]) -> list[list]:
    """Rows of ``causal_effect`` from a case's ``[targets, sources]`` ATE and SE and ``n`` per source."""
    return [[run_id, case_id, int(t), int(s), _num(ate[i, j]), _num(se[i, j]), int(n[j])]
            for i, t in enumerate(target_ids) for j, s in enumerate(source_ids)]


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def write_case(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, rows: list[list],
               dice_rows: list[list] = (), artifact_path: str | None = None,
               seconds: float = 0.0, case_row: dict | None = None,
               results: dict[str, list[list]] | None = None, inputs: dict | None = None,
               uncertainty: tuple[str, list[list]] | None = None) -> None:
    """All results of one case in one transaction: either all land or none.

    ``results``: rows of the tables of ``CASE_RESULT_TABLES`` (e.g. ``causal_effect``), which
    replace the case's earlier rows of those tables. ``inputs``: the input files the results
    were computed from (``store.attempts``). ``uncertainty``: (model checksum, ``case_uncertainty`` rows).
    """
    results = dict(results or {})
    unknown = set(results) - set(CASE_RESULT_TABLES)
    if unknown:
        raise ValueError(f"not a per-case result table: {', '.join(sorted(unknown))}")
    with transaction(con):
        end_attempt(con, run_id, case_id, inputs)
        if case_row is not None:
            upsert_cases(con, pd.DataFrame([case_row]))
        con.execute("DELETE FROM local_importance WHERE run_id = ? AND case_id = ?", [run_id, case_id])
        if rows:
            _insert_importance(con, rows)
        for table, table_rows in results.items():
            con.execute(f"DELETE FROM {table} WHERE run_id = ? AND case_id = ?", [run_id, case_id])
            _insert_rows(con, table, table_rows)
        if dice_rows:
            con.executemany("INSERT OR REPLACE INTO dice VALUES (?, ?, ?, ?)", list(dice_rows))
        if uncertainty is not None:
            insert_uncertainty(con, case_id=case_id, model_sha256=uncertainty[0], rows=uncertainty[1])
        if artifact_path is not None:
            con.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?)", [run_id, case_id, artifact_path])
        con.execute("DELETE FROM failures WHERE run_id = ? AND case_id = ?", [run_id, case_id])
        con.execute("INSERT OR REPLACE INTO case_status VALUES (?, ?, ?, ?)", [run_id, case_id, seconds, _now()])


IMPORTANCE_COLUMNS = ("run_id", "case_id", "target_id", "source_id", "mass_abs", "mass_pos", "mass_neg",
                      "volume_share", "mass_lift")


def _insert_importance(con: duckdb.DuckDBPyConnection, rows: Sequence[Sequence]) -> None:
    """Rows of ``local_importance``; rows without the volume columns (7 values) leave them NULL."""
    columns = IMPORTANCE_COLUMNS[:len(rows[0])]
    con.executemany(f"INSERT INTO local_importance ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [list(r) for r in rows])


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Sequence]) -> None:
    """Insert long rows as one frame (``executemany`` takes seconds for thousands of rows)."""
    if len(rows):
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        con.register("_rows", pd.DataFrame(list(rows), columns=columns))
        con.execute(f"INSERT INTO {table} SELECT * FROM _rows")
        con.unregister("_rows")


def record_failure(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, stage: str, message: str) -> None:
    """Record a case's failure (only its latest attempt is kept)."""
    with transaction(con):
        end_attempt(con, run_id, case_id)
        con.execute("DELETE FROM failures WHERE run_id = ? AND case_id = ?", [run_id, case_id])
        con.execute("INSERT INTO failures VALUES (?, ?, ?, ?, ?)",
                    [run_id, case_id, stage, " ".join(str(message).split()), _now()])


def replace_analysis(con: duckdb.DuckDBPyConnection, run_id: str, frames: dict[str, pd.DataFrame]) -> None:
    """Replace a run's rows of analysis tables, all in one transaction (frames in table column order)."""
    unknown = set(frames) - set(ANALYSIS_TABLES)
    if unknown:
        raise ValueError(f"not an analysis table: {', '.join(sorted(unknown))}")
    with transaction(con):
        for table, frame in frames.items():
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            if len(frame):
                con.register("_frame", frame)
                con.execute(f"INSERT INTO {table} SELECT * FROM _frame")
                con.unregister("_frame")


def replace_table_rows(con: duckdb.DuckDBPyConnection, table: str, run_id: str, frame: pd.DataFrame) -> None:
    """Replace a run's rows of one analysis table (see ``replace_analysis``)."""
    replace_analysis(con, run_id, {table: frame})


def register_new_cases(con: duckdb.DuckDBPyConnection, cases: pd.DataFrame) -> None:
    """Register cases the store does not know yet (never overwrite another run's metadata)."""
    known = {r[0] for r in con.execute("SELECT case_id FROM cases").fetchall()}
    new = cases[~cases.case_id.astype(str).isin(known)]
    if len(new):
        upsert_cases(con, new)


def write_method_eval(con: duckdb.DuckDBPyConnection, run_ids: dict[str, str], case_id: str,
                      scores: pd.DataFrame, curves: pd.DataFrame, target_ids: dict[int, int]) -> None:
    """Replace one case's rows of method_eval and perturbation_curve for every method, in one transaction.

    ``scores``: ``[method, target_id, metric, value]``; ``curves``: ``[method, target_id,
    ordering, step, fraction, value]`` (target ids as model channels, mapped by ``target_ids``).
    """
    with transaction(con):
        for name, run_id in run_ids.items():
            for table in ("method_eval", "perturbation_curve"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND case_id = ?", [run_id, case_id])
            s = scores[scores.method == name]
            rows = [[run_id, case_id, int(target_ids[int(t)]), m, _num(v)]
                    for t, m, v in zip(s.target_id, s.metric, s.value)]
            if rows:
                con.executemany("INSERT INTO method_eval VALUES (?, ?, ?, ?, ?)", rows)
            c = curves[curves.method == name]
            rows = [[run_id, case_id, int(target_ids[int(t)]), o, int(k), float(f), _num(v)]
                    for t, o, k, f, v in zip(c.target_id, c.ordering, c.step, c.fraction, c.value)]
            if rows:
                con.executemany("INSERT INTO perturbation_curve VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def write_imported_run(con: duckdb.DuckDBPyConnection, run_id: str, cases: pd.DataFrame,
                       importance: list[list], dice_rows: list[list], region_rows: list[list] = ()) -> None:
    """Replace an imported run's cases, matrices and Dice in one transaction (the run row exists).

    Cases the store already knows (from another run) keep their metadata; only the sex and
    age the import brings (from its metadata file) are written over them.
    """
    with transaction(con):
        register_new_cases(con, cases)
        given = cases.reindex(columns=["case_id", "sex", "age"]).astype(object)
        given = given.where(pd.notna(given), None)
        given = given[given.sex.notna() | given.age.notna()]
        if len(given):
            con.executemany("UPDATE cases SET sex = coalesce(?, sex), age = coalesce(?, age) WHERE case_id = ?",
                            [[sex, age, case_id] for case_id, sex, age in given.values.tolist()])
        for table in ("local_importance", "case_status", "region_attribution"):  # a smaller re-import leaves no ghosts
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        if importance:
            _insert_importance(con, importance)
        _insert_rows(con, "region_attribution", region_rows)
        if dice_rows:
            con.executemany("INSERT OR REPLACE INTO dice VALUES (?, ?, ?, ?)", dice_rows)
        con.executemany("INSERT OR REPLACE INTO case_status VALUES (?, ?, 0, ?)",
                        [[run_id, c, _now()] for c in cases.case_id])


def plan_build(con: duckdb.DuckDBPyConnection, steps: Sequence[tuple[str, str]]) -> None:
    """Set the steps ``(step, title)`` of a build, in order; steps of another plan are dropped.

    A step done by an earlier, interrupted build stays done; any other step is pending
    again (a step shown running was left by a process that died).
    """
    with transaction(con):
        con.execute("DELETE FROM build_status WHERE step NOT IN (SELECT unnest(?::VARCHAR[]))",
                    [[step for step, _ in steps]])
        for position, (step, title) in enumerate(steps):
            con.execute("INSERT INTO build_status VALUES (?, ?, ?, 'pending', NULL, NULL, NULL, NULL, NULL, NULL, ?) "
                        "ON CONFLICT (step) DO UPDATE SET position = excluded.position, title = excluded.title, "
                        "state = CASE WHEN build_status.state = 'done' THEN 'done' ELSE 'pending' END, "
                        "remaining_s = NULL, "
                        "updated_at = excluded.updated_at", [step, position, title, _now()])


def update_build_step(con: duckdb.DuckDBPyConnection, step: str, state: str | None = None,
                      done: int | None = None, total: int | None = None, unit: str | None = None,
                      remaining_s: float | None = None, run_id: str | None = None) -> None:
    """Record a build step's state and progress; a step not in the plan is added last, titled by its name.

    ``None`` keeps the recorded value, except ``remaining_s`` (the estimate of the time left,
    ``None``: unknown), which a finished step never has.
    """
    if state is not None and state not in BUILD_STATES:
        raise ValueError(f"unknown build state {state!r} (one of {', '.join(BUILD_STATES)})")
    now = _now()
    with transaction(con):
        con.execute("INSERT INTO build_status SELECT ?, coalesce(max(position) + 1, 0), ?, 'pending', NULL, NULL, "
                    "NULL, NULL, NULL, NULL, ? FROM build_status ON CONFLICT (step) DO NOTHING", [step, step, now])
        con.execute("UPDATE build_status SET done = coalesce(?, done), total = coalesce(?, total), "
                    "unit = coalesce(?, unit), run_id = coalesce(?, run_id), "
                    "remaining_s = CASE WHEN coalesce(?, state) IN ('done', 'failed') THEN NULL ELSE ? END, "
                    "started_at = CASE WHEN ? = 'running' AND state <> 'running' THEN ? ELSE started_at END, "
                    "state = coalesce(?, state), updated_at = ? WHERE step = ?",
                    [done, total, unit, run_id, state, remaining_s, state, now, state, now, step])


def build_step_reporter(con: duckdb.DuckDBPyConnection, step: str, total: int, done_before: int = 0,
                        unit: str = "cases", run_id: str | None = None):
    """Mark a build step (computing ``run_id``) running, ``done_before`` of ``total`` done; return
    ``report(n, remaining_s)`` (a ``CaseProgress`` report) recording ``done_before + n`` and the time left."""
    update_build_step(con, step, "running", done_before, total, unit, run_id=run_id)

    def report(n: int, remaining_s: float | None) -> None:
        update_build_step(con, step, done=done_before + n, remaining_s=remaining_s)
    return report


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def code_version_string() -> str:
    """The git commit of the code, when it runs from a checkout."""
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return ref[:12]
    except OSError:
        return "unknown"

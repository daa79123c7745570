"""Bookkeeping of a case's attempts for exactly-once resumption (tables ``case_inputs``,
``case_started``).

- ``case_inputs``: the input files a done case was computed from, written in the
  transaction of the case's results, so that a rerun recomputes a case whose scan,
  label or RoI masks changed (or that a different manifest points elsewhere).
- ``case_started``: a case being computed in the writer's own process, committed before
  the computation starts and cleared with its results or its failure. A marker left on
  the next run means the process died while computing that case (killed, out of
  memory, a decompression bomb): the rerun reports it instead of dying on it again.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import duckdb

CRASHED_STAGE = "crashed"  # failures.stage of a case during which a process died
TIMEOUT_STAGE = "timeout"  # failures.stage of a case ended at the case time limit (held back like a crash)


def mark_started(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> None:
    """Commit that this process starts computing a case (one autocommitted statement)."""
    con.execute("INSERT OR REPLACE INTO case_started VALUES (?, ?, ?, ?)", [run_id, case_id, _now(), os.getpid()])


def clear_started(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str) -> None:
    """Forget a marker whose computation ended without the process dying (e.g. an interrupt)."""
    con.execute("DELETE FROM case_started WHERE run_id = ? AND case_id = ?", [run_id, case_id])


def end_attempt(con: duckdb.DuckDBPyConnection, run_id: str, case_id: str, inputs: dict | None = None) -> None:
    """Statements of a finished attempt, run inside the transaction that stores its outcome."""
    clear_started(con, run_id, case_id)
    if inputs is not None:
        con.execute("INSERT OR REPLACE INTO case_inputs VALUES (?, ?, ?)",
                    [run_id, case_id, json.dumps(inputs, sort_keys=True)])


def started_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, datetime, int]]:
    """``(case_id, started_at, pid)`` of markers left by a process that died computing them."""
    return con.execute("SELECT case_id, started_at, pid FROM case_started WHERE run_id = ? ORDER BY started_at",
                       [run_id]).fetchall()


def crashed_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    """Cases whose latest attempt killed the process computing them or ran past the time limit."""
    return {r[0] for r in con.execute("SELECT case_id FROM failures WHERE run_id = ? AND stage IN (?, ?)",
                                      [run_id, CRASHED_STAGE, TIMEOUT_STAGE]).fetchall()}


def timed_out_cases(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    """Cases whose latest attempt ran past the case time limit."""
    return {r[0] for r in con.execute("SELECT case_id FROM failures WHERE run_id = ? AND stage = ?",
                                      [run_id, TIMEOUT_STAGE]).fetchall()}


def done_inputs(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, dict | None]:
    """Done cases of a run with the inputs they were computed from (None: not recorded, an older store)."""
    rows = con.execute("SELECT s.case_id, i.inputs FROM case_status s LEFT JOIN case_inputs i "
                       "ON i.run_id = s.run_id AND i.case_id = s.case_id WHERE s.run_id = ?", [run_id]).fetchall()
    return {case_id: (json.loads(inputs) if inputs else None) for case_id, inputs in rows}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)

"""Readers keep reading while a writer publishes, and while that writer is SIGKILLed.

One writer process writes case after case through ``agg2exp_core.store`` (its private
``.writing`` file, one transaction per case, an atomic publish after each case); it is
killed at seeded random moments and restarted (it resumes). Several reader processes
meanwhile open the published file read-only, query it as the dashboard does, close it
(DuckDB reuses an open instance per path inside one process, so a reader must close to
see a new snapshot) and check each snapshot: every case has all its rows or none.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import duckdb
import numpy as np
import pytest

from agg2exp_core import store
from cohorts import REPO, cli_env

N_CASES = 40
TARGETS, SOURCES = 17, 19
N_READERS = 3
KILLS = 3
SEED = 7

WRITER = r"""
import sys, time
import numpy as np
from agg2exp_core import store
db, n_cases, pause, T, S = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with store.open_writer(db) as con:
    store.ensure_run(con, "run-a", "vg", {}, "sha", [f"l{i}" for i in range(T)], source="test")
    done = store.done_cases(con, "run-a")
    for i in range(n_cases):
        case_id = f"case{i:03d}"
        if case_id in done:
            continue
        m = np.random.default_rng(i).random((T, S))
        m /= m.sum(axis=1, keepdims=True)
        rows = store.importance_rows("run-a", case_id, range(T), range(S), m, m, m)
        store.write_case(con, "run-a", case_id, rows, case_row={"case_id": case_id, "dataset": "d"})
        store.publish(con, db)
        time.sleep(pause)
"""

READER = r"""
import json, os, sys, time
import duckdb
db, stop, out, T, S = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
stats = {"reads": 0, "errors": [], "sizes": [], "latency_ms": []}
while not os.path.exists(stop):
    started = time.perf_counter()
    try:
        con = duckdb.connect(db, read_only=True)
        try:
            per_case = dict(con.execute(
                "SELECT case_id, count(*) FROM local_importance WHERE run_id = 'run-a' GROUP BY case_id").fetchall())
            worst = con.execute(
                "SELECT coalesce(max(abs(s - 1)), 0) FROM (SELECT case_id, target_id, sum(mass_abs) AS s "
                "FROM local_importance GROUP BY case_id, target_id)").fetchone()[0]
            status = {r[0] for r in con.execute("SELECT case_id FROM case_status WHERE run_id = 'run-a'").fetchall()}
            cases = {r[0] for r in con.execute("SELECT case_id FROM cases").fetchall()}
        finally:
            con.close()
        partial = {c: n for c, n in per_case.items() if n != T * S}
        if partial:
            stats["errors"].append(f"partial cases {partial}")
        if worst > 1e-9:
            stats["errors"].append(f"row sums off by {worst}")
        if not (set(per_case) == status == cases):
            stats["errors"].append(f"rows {len(per_case)} / status {len(status)} / cases {len(cases)} disagree")
        stats["sizes"].append(len(per_case))
    except Exception as err:
        stats["errors"].append(f"{type(err).__name__}: {err}")
    stats["reads"] += 1
    stats["latency_ms"].append(1000 * (time.perf_counter() - started))
    time.sleep(0.005)
with open(out, "w") as f:
    json.dump(stats, f)
"""


def expected_matrix(i: int) -> np.ndarray:
    m = np.random.default_rng(i).random((TARGETS, SOURCES))
    return m / m.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_readers_never_fail_while_a_writer_publishes_and_is_killed(tmp_path):
    db = tmp_path / "s.duckdb"
    with store.open_writer(db) as con:  # an existing, empty published store
        store.ensure_run(con, "run-a", "vg", {}, "sha", [f"l{i}" for i in range(TARGETS)], source="test")
    stop = tmp_path / "stop"
    env = cli_env()
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop), str(tmp_path / f"r{i}.json"),
                                 str(TARGETS), str(SOURCES)], cwd=REPO, env=env) for i in range(N_READERS)]
    writer_args = [sys.executable, "-c", WRITER, str(db), str(N_CASES), "0.03", str(TARGETS), str(SOURCES)]
    rng = random.Random(SEED)
    landed = 0
    try:
        for attempt in range(KILLS + 1):
            writer = subprocess.Popen(writer_args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
            if attempt < KILLS:
                time.sleep(rng.uniform(1.0, 2.5))  # about 1 s of imports, then cases
                if writer.poll() is None:
                    writer.send_signal(signal.SIGKILL)
                    landed += 1
                writer.wait(timeout=60)
            else:
                _, err = writer.communicate(timeout=120)
                assert writer.returncode == 0, err[-2000:]
        time.sleep(0.3)  # let the readers see the final snapshot
    finally:
        stop.touch()
        for reader in readers:
            reader.wait(timeout=60)
    assert landed >= 2, f"only {landed} kills landed while the writer ran"

    for i in range(N_READERS):
        stats = json.loads((tmp_path / f"r{i}.json").read_text())
        assert stats["errors"] == [], stats["errors"][:5]
        assert stats["reads"] >= 10
        assert len(set(stats["sizes"])) >= 3, "the reader saw the store grow"
        assert stats["sizes"][-1] == N_CASES

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT case_id, target_id, source_id, mass_abs FROM local_importance").fetchall()
    assert len(rows) == len({r[:3] for r in rows}) == N_CASES * TARGETS * SOURCES
    got = {}
    for case_id, t, s, v in rows:
        got.setdefault(case_id, np.zeros((TARGETS, SOURCES)))[t, s] = v
    for i in range(N_CASES):
        np.testing.assert_array_equal(got[f"case{i:03d}"], expected_matrix(i))

"""A writer resumes its own ``.writing`` file across sessions while a reader has the published
store open: no "published store changed" warning and no recopy of the store.

A normal demo build logged that warning 16 times and copied the whole published store back
over its ``.writing`` file at every stage: ``publish`` recorded which file it had published
only when DuckDB's (absolute) path of the writer's file equalled ``<db>.writing`` as given,
so a relative store path (``make demo``: ``data/demo.duckdb``) or a folder behind a symbolic
link left the record stale and the next session took its own publication for a restore.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agg2exp_core import store
from cohorts import REPO, cli_env

T, S = 3, 4
SESSIONS = 4  # writer sessions in a row, as the demo's stages (plan, runs, analysis)

# A reader as the dashboard's: an in-memory connection ATTACHing the published file read-only,
# one per published version (kept open, as its cache keeps them), until the stop file appears.
READER = r"""
import json, os, sys, time
import duckdb
db, ready, stop, out = sys.argv[1:5]
open(ready, "w").close()
open_connections, seen = {}, []
while True:
    stopping = os.path.exists(stop)  # checked first: the version published last is still opened below
    try:
        info = os.stat(db)
    except FileNotFoundError:
        info = None
    signature = info and (info.st_ino, info.st_mtime_ns, info.st_size)
    if signature and signature not in open_connections:
        con = duckdb.connect(":memory:")
        con.execute("ATTACH ? AS store (READ_ONLY)", [db])
        open_connections[signature] = con
        seen.append(con.execute("SELECT count(*) FROM store.case_status").fetchone()[0])
    if stopping:
        break
    time.sleep(0.01)
for con in open_connections.values():
    con.close()
json.dump({"seen": seen}, open(out, "w"))
"""


def write_one_case(con, i: int) -> None:
    masses = np.random.default_rng(i).random((T, S))
    rows = store.importance_rows("run-a", f"case{i}", range(T), range(S), masses, masses, masses)
    store.write_case(con, "run-a", f"case{i}", rows, case_row={"case_id": f"case{i}", "dataset": "d"})


def store_path(tmp_path: Path, monkeypatch, how: str) -> Path:
    (tmp_path / "data").mkdir()
    if how == "relative":
        monkeypatch.chdir(tmp_path)
        return Path("data") / "store.duckdb"
    if how == "symlinked folder":
        (tmp_path / "link").symlink_to(tmp_path / "data")
        return tmp_path / "link" / "store.duckdb"
    return tmp_path / "data" / "store.duckdb"


@pytest.mark.parametrize("how", ["relative", "absolute", "symlinked folder"])
def test_sessions_with_a_reader_open_neither_warn_nor_recopy_the_store(tmp_path, monkeypatch, caplog, how):
    db = store_path(tmp_path, monkeypatch, how)
    ready, stop, out = tmp_path / "ready", tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db.resolve()), str(ready), str(stop), str(out)],
                              cwd=REPO, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the reader is up before the first session (a loaded machine starts it slowly)
        assert ready.exists(), "the reader process did not start"
        writing_inodes = []
        with caplog.at_level("WARNING", logger="agg2exp_core.store.writer"):
            for session in range(SESSIONS):
                with store.open_writer(db) as con:
                    store.ensure_run(con, "run-a", "vg", {}, "sha", [f"l{i}" for i in range(T)], source="test")
                    writing_inodes.append(store.writing_path(db).stat().st_ino)
                    write_one_case(con, 2 * session)
                    store.publish(con, db)  # mid-session, as precompute after each case
                    write_one_case(con, 2 * session + 1)
                time.sleep(0.05)  # the reader may open this version (it always opens the last one)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert reader.returncode == 0
    assert not [r.getMessage() for r in caplog.records], "a session took its own publication for a restore"
    assert len(set(writing_inodes)) == 1, "the writer's file was copied again from the published store"
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM case_status").fetchone()[0] == 2 * SESSIONS
    seen = json.loads(out.read_text())["seen"]
    assert seen[-1] == 2 * SESSIONS and seen == sorted(seen), seen


def test_a_published_store_replaced_while_a_reader_is_open_still_wins(tmp_path, caplog):
    """The detection stays: a restore behind the writer's back is noticed despite the reader."""
    db = tmp_path / "store.duckdb"
    with store.open_writer(db) as con:
        store.ensure_run(con, "run-a", "vg", {}, "sha", [f"l{i}" for i in range(T)], source="test")
        write_one_case(con, 0)
    backup = tmp_path / "backup.duckdb"
    backup.write_bytes(db.read_bytes())
    with store.open_writer(db) as con:
        write_one_case(con, 1)
    with store.connect(db, read_only=True) as reader:
        db.write_bytes(backup.read_bytes())  # restored: case1 is gone from the published store
        with caplog.at_level("WARNING"), store.open_writer(db) as con:
            assert store.done_cases(con, "run-a") == {"case0"}
        assert reader.execute("SELECT count(*) FROM case_status").fetchone()[0] == 2  # its old snapshot
    assert any("published store changed" in r.getMessage() for r in caplog.records)

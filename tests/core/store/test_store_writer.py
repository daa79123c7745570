"""The store's files under hostile conditions (issue 15): two writers at once, a published
store replaced behind the writer's back, a full disk while publishing, leftovers of a
killed publish, durable publication; and the importer's care for other runs' cases."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.pipeline.importer import import_agg2exp_csv
from cohorts import REPO, cli_env

NAMES = ("aorta", "heart")


def tiny_csv(path: Path, patients, seed: int = 0) -> Path:
    """A published-aggregate CSV of two classes (rows sum to one) with Dice columns."""
    rows = []
    for i, patient in enumerate(patients):
        masses = np.random.default_rng(seed + i).dirichlet(np.ones(len(NAMES)), size=len(NAMES))
        row = {"patient": patient}
        for a, name_a in enumerate(NAMES):
            for b, name_b in enumerate(NAMES):
                row[f"{name_a}_explanation_in_{name_b}_mass"] = masses[a, b]
            row[f"{name_a}_dice"] = 0.5 + 0.05 * i
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def call_cli(argv, capfd) -> tuple[int, str, str]:
    from agg2exp_core import cli
    capfd.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_ids(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}


def make_store(db: Path, *runs: str) -> Path:
    with store.open_writer(db) as con:
        for run_id in runs:
            store.ensure_run(con, run_id, "vg", {}, "sha", ["bg"], source="test")
    return db


# ------------------------------------------------------------------ one writer at a time
SLOW_SEEDING_WRITER = r"""
import pathlib, shutil, sys, time
from agg2exp_core import store
db, ready, go = sys.argv[1:4]
real_copy = shutil.copyfileobj  # the copy writes through the temporary's descriptor
def slow_copy(src, dst, *args, **kw):  # seeding a large store takes a while
    out = real_copy(src, dst, *args, **kw)
    pathlib.Path(ready).touch()
    while not pathlib.Path(go).exists():
        time.sleep(0.01)
    return out
shutil.copyfileobj = slow_copy
with store.open_writer(db) as con:
    shutil.copyfileobj = real_copy
    store.ensure_run(con, "run-a", "vg", {}, "sha", ["bg"], source="test")
"""


def test_a_second_writer_is_refused_in_one_line_and_no_run_is_lost(tmp_path, capfd):
    db = make_store(tmp_path / "s.duckdb", "run-0")
    for name in ("s.duckdb.writing", "s.duckdb.writing.seed"):  # a store copied in: no writer's file yet
        (tmp_path / name).unlink(missing_ok=True)
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", SLOW_SEEDING_WRITER, str(db), str(ready), str(go)],
                             cwd=REPO, env=cli_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ready.exists():  # the first writer is seeding its .writing copy
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.01)
        before = db.read_bytes()
        rc, out, err = call_cli(["import-agg2exp", "--csv", tiny_csv(tmp_path / "t.csv", ["p1", "p2"]),
                                 "--db", db], capfd)
        one_line(rc, err, str(db), "another writer", f"pid {first.pid}")
        assert db.read_bytes() == before, "the refused writer published nothing"
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=60)
    assert first.returncode == 0, first_err
    assert run_ids(db) == {"run-0", "run-a"}
    rc, out, err = call_cli(["import-agg2exp", "--csv", tmp_path / "t.csv", "--db", db], capfd)
    assert rc == 0, err
    assert len(run_ids(db)) == 3, "once the first writer is done, the second one's run lands next to it"
    assert not (tmp_path / "s.duckdb.lock").exists(), "the lock file goes with its writer"


def test_the_lock_of_a_killed_writer_does_not_block_the_next_one(tmp_path):
    db = make_store(tmp_path / "s.duckdb", "run-0")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom agg2exp_core import store\n"
                               "with store.open_writer(sys.argv[1]):\n    print('open', flush=True)\n"
                               "    time.sleep(600)", str(db)],
                              cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    holder.kill()
    holder.wait(timeout=30)
    assert (tmp_path / "s.duckdb.lock").exists(), "a killed writer leaves its lock file behind"
    make_store(db, "run-1")  # the kernel released the lock with the process
    assert run_ids(db) == {"run-0", "run-1"}


# ------------------------------------------------------------------ a stale .writing
@pytest.mark.parametrize("restore", ["copy over", "rename over"])
def test_a_restored_published_store_wins_over_a_stale_writing_copy(tmp_path, caplog, restore):
    db = make_store(tmp_path / "s.duckdb", "r1")
    backup = tmp_path / "backup.duckdb"
    shutil.copyfile(db, backup)
    make_store(db, "r2")  # the writer's file (kept for resuming) now holds r1 and r2
    assert store.writing_path(db).exists() and run_ids(db) == {"r1", "r2"}
    if restore == "copy over":  # cp backup s.duckdb: same inode, new bytes
        shutil.copyfile(backup, db)
    else:
        shutil.copyfile(backup, tmp_path / "restored")
        os.replace(tmp_path / "restored", db)
    with caplog.at_level("WARNING", logger="agg2exp_core.store.writer"):
        make_store(db, "r3")
    assert run_ids(db) == {"r1", "r3"}, "the restored store is the base; the stale copy's r2 does not come back"
    assert any("changed since" in r.getMessage() and "starting again" in r.getMessage() for r in caplog.records)


RESUMABLE_WRITER = r"""
import os, sys
from agg2exp_core import store
with store.open_writer(sys.argv[1]) as con:
    store.ensure_run(con, "r1", "vg", {}, "sha", ["bg"], source="test")
    store.write_case(con, "r1", "c1", [["r1", "c1", 0, 0, 1.0, 1.0, 0.0]], case_row={"case_id": "c1", "dataset": "d"})
    os._exit(9)  # killed before publishing: the case is committed in the .writing file only
"""


def test_an_unchanged_published_store_still_resumes_the_writing_copy(tmp_path, caplog):
    db = make_store(tmp_path / "s.duckdb", "r0")
    killed = subprocess.run([sys.executable, "-c", RESUMABLE_WRITER, str(db)], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    assert run_ids(db) == {"r0"}
    with caplog.at_level("WARNING"), store.open_writer(db) as con:
        assert store.done_cases(con, "r1") == {"c1"}, "committed work of the killed writer is resumed"
    assert not caplog.records
    assert run_ids(db) == {"r0", "r1"}


# ------------------------------------------------------------------ publication
def test_publication_syncs_the_snapshot_before_renaming_it(tmp_path, monkeypatch):
    db = make_store(tmp_path / "s.duckdb", "r1")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    make_store(db, "r2")
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(db.resolve())]
    assert renames, events
    src = events[renames[-1]][1]
    assert ("fsync", src) in events[:renames[-1]], f"the snapshot is not synced before its rename: {events}"
    assert ("fsync", str(tmp_path.resolve())) in events[renames[-1]:], "the rename is not made durable"


def test_leftover_temporaries_of_a_killed_publish_are_removed(tmp_path):
    db = make_store(tmp_path / "s.duckdb", "r1")
    leftovers = [tmp_path / ".s.duckdb.4242.tmp", tmp_path / ".s.duckdb.writing.4243.tmp"]
    unrelated = [tmp_path / ".other.duckdb.4244.tmp", tmp_path / "notes.tmp", tmp_path / ".s.duckdb.keep.tmp"]
    for path in leftovers + unrelated:
        path.write_bytes(b"half a snapshot")
    make_store(db, "r2")
    assert [p.exists() for p in leftovers] == [False, False]
    assert all(p.exists() for p in unrelated), "only this store's .<name>.<pid>.tmp files are removed"


def _disk_full_after(half: bool):
    """A copy that writes half the bytes of the snapshot, then finds the disk full (the copy goes
    through the descriptor of a fresh temporary: its name comes from /proc)."""
    real_copy = shutil.copyfileobj

    def copy(src, dst, *args, **kw):
        name = Path(os.readlink(f"/proc/self/fd/{dst.fileno()}")).name
        if name.startswith(".s.duckdb.") and name.endswith(".tmp") and ".writing" not in name:
            data = src.read()
            dst.write(data[: len(data) // 2] if half else b"")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return real_copy(src, dst, *args, **kw)
    return copy


def test_a_full_disk_while_publishing_is_one_line_and_changes_nothing(tmp_path, capfd, monkeypatch):
    """ENOSPC simulated at the copy (the OS boundary of publication); see the tmpfs test for a real one."""
    db = make_store(tmp_path / "s.duckdb", "r1")
    before = db.read_bytes()
    monkeypatch.setattr(shutil, "copyfileobj", _disk_full_after(half=True))
    csv = tiny_csv(tmp_path / "t.csv", ["p1", "p2"])
    rc, out, err = call_cli(["import-agg2exp", "--csv", csv, "--db", db], capfd)
    one_line(rc, err, str(db), "cannot publish the store", "No space left on device", "unchanged")
    assert db.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")), "the half-written snapshot is removed"
    monkeypatch.undo()  # space freed: the rerun publishes
    rc, out, err = call_cli(["import-agg2exp", "--csv", csv, "--db", db], capfd)
    assert rc == 0 and len(run_ids(db)) == 2, err


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real file system that fills up: a tmpfs (needs root; skipped where mount is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def mounted(size_bytes: int) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        options = f"size={size_bytes}"
        if os.path.ismount(mount):
            options = "remount," + options
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        return mount

    yield mounted
    if os.path.ismount(mount):  # lazily: a failed test may still hold a file open there
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_while_publishing_is_one_line_and_changes_nothing(tmp_path, capfd, small_tmpfs):
    source = tmp_path / "s.duckdb"
    import_agg2exp_csv(tiny_csv(tmp_path / "t0.csv", ["p1", "p2"]), source)
    size = source.stat().st_size
    disk = small_tmpfs(int(2.8 * size))  # the store and its writer's copy fit, a snapshot more does not
    db = disk / "s.duckdb"
    shutil.copyfile(source, db)
    before = db.read_bytes()
    csv = tiny_csv(tmp_path / "t1.csv", ["q1", "q2"], seed=5)
    rc, out, err = call_cli(["import-agg2exp", "--csv", csv, "--db", db, "--dataset", "other"], capfd)
    one_line(rc, err, str(db), "cannot publish the store", "No space left on device")
    assert db.read_bytes() == before
    assert not list(disk.glob(".*.tmp"))
    small_tmpfs(8 * size)  # space freed: the rerun publishes
    rc, out, err = call_cli(["import-agg2exp", "--csv", csv, "--db", db, "--dataset", "other"], capfd)
    assert rc == 0, err
    assert len(run_ids(db)) == 2


# ------------------------------------------------------------------ the importer
def _cases(db: Path) -> dict[str, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT case_id, dataset, split, sex, age FROM cases").fetchall()}


def test_import_keeps_other_runs_case_metadata(tmp_path):
    db = tmp_path / "s.duckdb"
    with store.open_writer(db) as con:  # a case another run registered, with its metadata
        store.upsert_cases(con, pd.DataFrame([{"case_id": "p1", "dataset": "hospital", "split": "train",
                                               "sex": "F", "age": 61.0}]))
    import_agg2exp_csv(tiny_csv(tmp_path / "t.csv", ["p1", "p2"]), db, dataset="tsv2")
    cases = _cases(db)
    assert cases["p1"] == ("hospital", "train", "F", 61.0), "INSERT OR REPLACE wiped the other run's metadata"
    assert cases["p2"] == ("tsv2", "test", None, None)
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,sex,age\np1,M,\n")  # an explicit metadata file updates what it gives
    import_agg2exp_csv(tmp_path / "t.csv", db, metadata=meta, dataset="tsv2")
    assert _cases(db)["p1"] == ("hospital", "train", "M", 61.0)


def test_import_reads_patient_ids_as_strings(tmp_path):
    db = tmp_path / "s.duckdb"
    run_id = import_agg2exp_csv(tiny_csv(tmp_path / "t.csv", ["00123", "0042", "7"]), db)
    with duckdb.connect(str(db), read_only=True) as con:
        for table in ("cases", "local_importance", "case_status", "dice"):
            ids = {r[0] for r in con.execute(f"SELECT DISTINCT case_id FROM {table}").fetchall()}
            assert ids == {"00123", "0042", "7"}, (table, ids)
        assert con.execute("SELECT count(*) FROM case_status WHERE run_id = ?", [run_id]).fetchone()[0] == 3


def test_a_smaller_reimport_leaves_no_ghost_cases(tmp_path):
    """(Fixed with the restructure; kept here so it stays fixed.)"""
    db = tmp_path / "s.duckdb"
    run_id = import_agg2exp_csv(tiny_csv(tmp_path / "t.csv", ["p1", "p2", "p3"]), db)
    assert import_agg2exp_csv(tiny_csv(tmp_path / "t.csv", ["p1"]), db) == run_id
    with duckdb.connect(str(db), read_only=True) as con:
        for table in ("local_importance", "case_status"):
            ids = {r[0] for r in con.execute(f"SELECT case_id FROM {table} WHERE run_id = ?", [run_id]).fetchall()}
            assert ids == {"p1"}, (table, ids)


def test_analyze_writes_its_tables_all_or_nothing(tmp_path, monkeypatch):
    """(Fixed with the restructure.) A failure in the last table keeps all three as they were."""
    from agg2exp_core.analysis import outliers
    db = tmp_path / "s.duckdb"
    run_id = import_agg2exp_csv(tiny_csv(tmp_path / "t.csv", [f"p{i}" for i in range(8)]), db)
    outliers.analyze(db, run_id, outliers.AnalysisConfig())

    def snapshot():
        with duckdb.connect(str(db), read_only=True) as con:
            return {t: sorted(map(str, con.execute(f"SELECT * FROM {t}").fetchall()))
                    for t in ("anomaly", "anomaly_dice", "outlier_tests")}

    before = snapshot()
    assert before["anomaly"] and before["anomaly_dice"]
    real = outliers.anomaly_table
    monkeypatch.setattr(outliers, "anomaly_table", lambda *a, **k: real(*a, **k).assign(score=lambda f: f.score + 100))
    monkeypatch.setattr(outliers, "group_tests", lambda anomaly, meta: pd.DataFrame(
        [[0, "sex", "fisher_exact", "not a number", 0.5, 1, 1]],
        columns=["target_id", "variable", "test", "statistic", "p_value", "n_inliers", "n_outliers"]))
    with pytest.raises(duckdb.Error):
        outliers.analyze(db, run_id, outliers.AnalysisConfig())
    assert snapshot() == before

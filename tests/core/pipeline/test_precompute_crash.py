"""SIGKILL ``python -m agg2exp_core precompute`` at random (seeded) moments and resume.

After every kill the published store is a valid DuckDB file that opens read-only and
holds whole cases only; in the end every (run, case, target, source) row exists exactly
once and every value equals that of an uninterrupted run.
"""
from __future__ import annotations

import random
import signal
import subprocess
import time

import duckdb
import numpy as np
import pytest
import torch

from agg2exp_core.pipeline.precompute import precompute
from cohorts import CLI, LABELS, REPO, cli_env, make_checkpoint, make_cohort

N_CASES = 10
ROWS_PER_CASE = len(LABELS) ** 2
KILLS = 5
SEED = 20250301


def read_published(db):
    """(values by key, case_status ids) of the published store, checking it is whole."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"cases", "runs", "local_importance", "case_status", "failures"} <= tables
        rows = con.execute("SELECT run_id, case_id, target_id, source_id, mass_abs, mass_pos, mass_neg "
                           "FROM local_importance").fetchall()
        status = {r[0] for r in con.execute("SELECT case_id FROM case_status").fetchall()}
        artifacts = {r[0] for r in con.execute("SELECT case_id FROM artifacts").fetchall()}
        failures = con.execute("SELECT count(*) FROM failures").fetchone()[0]
    values = {tuple(r[:4]): r[4:] for r in rows}
    assert len(values) == len(rows), "a (run, case, target, source) row stored twice"
    per_case = {}
    for run_id, case_id, *_ in values:
        per_case[case_id] = per_case.get(case_id, 0) + 1
    assert set(per_case) == status == artifacts, "rows, status and artefacts describe the same cases"
    assert all(n == ROWS_PER_CASE for n in per_case.values()), f"a partial case: {per_case}"
    assert failures == 0
    return values, status


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=N_CASES)
    checkpoint = make_checkpoint(tmp_path / "m.pt")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses run with --threads 1
    try:
        started = time.time()
        reference = precompute(manifest, checkpoint, tmp_path / "ref" / "ref.duckdb", "vg", device="cpu",
                               progress=False)
        per_case = (time.time() - started) / N_CASES
        # a store that dashboards already read: published, with two cases done
        db = tmp_path / "store" / "s.duckdb"
        precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, case_ids=["c0", "c1"])
    finally:
        torch.set_num_threads(threads)
    assert len(reference.done) == N_CASES
    expected, _ = read_published(tmp_path / "ref" / "ref.duckdb")

    # A SIGKILL from outside looks like a case that killed the process: without --retry-crashed
    # the rerun would hold the case in flight back (tests/core/pipeline/test_precompute_failures.py).
    args = [*CLI, "precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
            "--device", "cpu", "--retry-crashed"]
    rng = random.Random(SEED)
    landed, seen_done = 0, []
    for attempt in range(KILLS + 1):
        log = tmp_path / f"stderr{attempt}.txt"
        with open(log, "w") as err:
            proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=err)
        if attempt < KILLS:
            deadline = time.time() + 90
            while proc.poll() is None and log.stat().st_size == 0 and time.time() < deadline:
                time.sleep(0.005)  # the progress bar appears once the writer is open
            time.sleep(rng.uniform(0.0, 3.0 * per_case))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
        rc = proc.wait(timeout=120)
        _, status = read_published(db)  # after every kill: a valid, whole snapshot
        seen_done.append(len(status))
        if attempt == KILLS:
            assert rc == 0, log.read_text()[-2000:]
    assert landed >= 3, f"only {landed} kills landed while precompute was running"
    assert seen_done == sorted(seen_done), "a published snapshot never loses cases"

    final, status = read_published(db)
    assert status == {f"c{i}" for i in range(N_CASES)}
    assert {k[1:] for k in final} == {k[1:] for k in expected}
    run_ids = {k[0] for k in final} | {k[0] for k in expected}
    assert len(run_ids) == 1, "the resumed run has the uninterrupted run's id"
    for key, value in expected.items():
        assert final[key] == value, (key, final[key], value)
    with duckdb.connect(str(db), read_only=True) as con:
        paths = [r[0] for r in con.execute("SELECT path FROM artifacts").fetchall()]
    for path in paths:
        with np.load(db.parent / path) as npz:  # no half-written artefact
            assert npz["ct"].shape == (16, 16, 16)

"""The first run (``make run``): the demo publishes as it builds, the dashboard says what is still
being built, and cases run on worker processes.

- the build-status table: plan, progress, resumption (store);
- the banner's text and what the dashboard shows on a partly built store (AppTest);
- a small demo build publishes the VG run's matrices and anomaly scores before SmoothGrad starts;
- ``ProcessExecutor``: the rows of an in-process run, and a case that kills its process found.
"""
from __future__ import annotations

import functools
import os
import signal

import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.pipeline import demo
from cohorts import tiny_phantom_cohort
from dashboard.widgets import build_banner

STEPS = demo.build_steps()


def _steps(**states) -> pd.DataFrame:
    """A build-status frame of the demo's plan: every step done up to the first given state."""
    rows, after = [], False
    for step, title in STEPS:
        after = after or step in states
        state = states.get(step, "pending" if after else "done")
        rows.append({"step": step, "title": title, "state": state, "done": None, "total": None, "unit": None,
                     "remaining_s": None, "run_id": None})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- store
def test_build_status_plan_progress_and_resumption(tmp_path):
    db = tmp_path / "s.duckdb"
    with store.open_writer(db) as con:
        store.plan_build(con, STEPS)
        report = store.build_step_reporter(con, "vg", 36, done_before=4, run_id="vg-1")
        report(8, 50.0)
        store.update_build_step(con, "phantoms", "done")
    with store.connect(db, read_only=True) as con:
        steps = store.build_status(con).set_index("step")
        assert list(steps.index) == [s for s, _ in STEPS] and not store.build_complete(con)
    vg = steps.loc["vg"]
    assert (vg.state, vg.done, vg.total, vg.unit, vg.remaining_s, vg.run_id) == ("running", 12, 36, "cases", 50.0, "vg-1")
    assert steps.loc["evaluation", "state"] == "pending" and steps.loc["phantoms", "state"] == "done"
    with store.open_writer(db) as con:  # a new build of the same plan: done stays done, the rest is pending again
        store.plan_build(con, STEPS)
        steps = store.build_status(con).set_index("step")
        assert steps.loc["phantoms", "state"] == "done" and steps.loc["vg", "state"] == "pending"
        assert pd.isna(steps.loc["vg", "remaining_s"])
        for step, _ in STEPS:
            store.update_build_step(con, step, "done")
        assert store.build_complete(con)
        with pytest.raises(ValueError, match="unknown build state"):
            store.update_build_step(con, "vg", "almost")


def test_a_store_without_a_build_plan_is_not_complete(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    assert store.build_status(con).empty and not store.build_complete(con)


# ----------------------------------------------------------------------------- banner text
def test_banner_says_what_runs_and_what_is_pending():
    steps = _steps(smoothgrad="running")
    sg = steps.step == "smoothgrad"
    steps.loc[sg, ["done", "total", "unit", "remaining_s"]] = [12, 36, "cases", 125.0]
    text, stopped = build_banner.banner_text(steps)
    assert not stopped and "SmoothGrad 12/36 cases, ≈ 3 min left" in text
    assert ("analyses (SmoothGrad), method agreement, test-retest reliability, method evaluation, sanity checks, "
            "published TSV2 cohort pending") in text
    assert "Vanilla Gradient" not in text  # done steps are not listed
    assert build_banner.unfinished(steps) and not build_banner.unfinished(_steps())


def test_banner_of_a_stopped_build_says_how_to_resume():
    text, stopped = build_banner.banner_text(_steps(evaluation="failed"))
    assert stopped and "stopped at method evaluation" in text and "make demo" in text


def test_runs_still_being_computed_are_known():
    steps = _steps(smoothgrad="running")
    steps.loc[steps.step == "vg", "run_id"] = "vg-1"
    steps.loc[steps.step == "smoothgrad", "run_id"] = "sg-1"
    assert build_banner.incomplete_runs(steps) == {"sg-1"}


# ----------------------------------------------------------------------------- dashboard
@pytest.fixture
def partly_built(tmp_path):
    """A store as the demo publishes it mid-build: VG and its anomaly scores done, SmoothGrad 12/36."""
    from synthetic_store import build_synthetic_store

    built = build_synthetic_store(tmp_path / "demo.duckdb", n_cases=12, with_artifacts=False,
                                  run_methods=("vg", "smoothgrad"), eval_methods=())
    with store.open_writer(built["path"]) as con:
        store.plan_build(con, STEPS)
        for step in ("phantoms", "vg", "analysis:vg"):
            store.update_build_step(con, step, "done", run_id=built["run_ids"].get(step))
        store.build_step_reporter(con, "smoothgrad", 36, run_id=built["run_ids"]["smoothgrad"])(12, 90.0)
    return built


def _infos(app) -> str:
    return " ".join(str(e.value) for e in app.info)


def test_dashboard_says_what_is_still_being_built(monkeypatch, partly_built):
    from apptest import open_app

    app = open_app(monkeypatch, partly_built["path"], "heat_map")
    infos = _infos(app)
    assert "still being built" in infos and "SmoothGrad 12/36 cases" in infos
    assert "method evaluation" in infos and "pending" in infos
    assert app.get("plotly_chart"), "the published VG run's heat map is shown meanwhile"
    # the newest run is still being computed: the complete VG run is the default
    assert app.selectbox(key="w_run").value == partly_built["run_ids"]["vg"]

    with store.open_writer(partly_built["path"]) as con:
        for step, _ in STEPS:
            store.update_build_step(con, step, "done")
    app = open_app(monkeypatch, partly_built["path"], "heat_map")
    assert "still being built" not in _infos(app)
    assert app.selectbox(key="w_run").value == partly_built["run_ids"]["smoothgrad"]  # newest again


def test_a_store_with_a_plan_and_no_run_yet_shows_the_build_not_an_error(monkeypatch, tmp_path):
    from apptest import open_app

    db = tmp_path / "demo.duckdb"
    with store.open_writer(db) as con:
        store.plan_build(con, STEPS)
        store.update_build_step(con, "phantoms", "running")
    app = open_app(monkeypatch, db)
    assert not app.error
    assert "now phantom cohort" in _infos(app) and "Vanilla Gradient pending" not in _infos(app)
    assert "looks for new results" in " ".join(str(c.value) for c in app.caption)


# ----------------------------------------------------------------------------- demo build
TINY_COHORT = {"n_reference": 3, "n_test": 1, "n_external": 2, "shape": (32, 24, 24), "spacing": (12.0, 12.0, 12.0),
               "seed": 0}
TINY_RUNS = (("vg", {}), ("smoothgrad", {"n_samples": 1, "sigma": 0.1, "seed": 0}))


@pytest.mark.slow
def test_demo_publishes_the_vg_run_before_smoothgrad_starts(tmp_path, monkeypatch):
    """A small demo build: every VG case and its anomaly scores are in the published store
    (and said done) when SmoothGrad starts; a snapshot is published while VG is computed."""
    from agg2exp_core.analysis.evaluation import EvaluationConfig
    from agg2exp_core.pipeline import precompute as precompute_module
    from agg2exp_core.pipeline.executors import InProcessExecutor

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "demo_unet.pt").write_bytes((demo.REPO / "data" / "demo_unet.pt").read_bytes())
    monkeypatch.setattr(demo, "EVALUATION", {**demo.EVALUATION, "methods": ("vg",), "max_cases": 1, "method_params": {},
                                             "config": EvaluationConfig(metrics=("complexity", "efficiency"))})
    monkeypatch.setattr(demo, "PUBLISHED_CSV", tmp_path / "absent.csv")
    monkeypatch.setattr(precompute_module, "PUBLISH_EVERY_S", 0.0)
    db = data_dir / "demo.duckdb"
    seen = {}
    real_compute, real_precompute = precompute_module.compute_case, demo.precompute

    def published() -> tuple[pd.DataFrame, dict]:
        with store.connect(db, read_only=True) as con:
            steps = store.build_status(con).set_index("step")
            counts = dict(con.execute("SELECT r.method, count(DISTINCT l.case_id) FROM runs r "
                                      "JOIN local_importance l USING (run_id) GROUP BY r.method").fetchall())
            counts["anomaly"] = con.execute("SELECT count(DISTINCT case_id) FROM anomaly").fetchone()[0]
        return steps, counts

    def compute_case(model, job):
        if job.method == "vg" and "during_vg" not in seen and job.case_id == "ref-002":
            seen["during_vg"] = published()
        return real_compute(model, job)

    def precompute(manifest, checkpoint, db_path, method, *args, **kwargs):
        if method == "smoothgrad":
            seen["before_smoothgrad"] = published()
        return real_precompute(manifest, checkpoint, db_path, method, *args, **kwargs)

    monkeypatch.setattr(precompute_module, "compute_case", compute_case)
    monkeypatch.setattr(demo, "precompute", precompute)
    report = demo.build_demo(data_dir, methods=TINY_RUNS, progress=False, cohort=TINY_COHORT,
                             executor=InProcessExecutor())
    steps, counts = seen["during_vg"]
    assert steps.loc["vg", "state"] == "running" and 1 <= counts.get("vg", 0) < 5
    assert steps.loc["vg", "done"] == counts["vg"] and steps.loc["vg", "total"] == 5  # 3 reference + 2 external
    assert steps.loc["evaluation", "state"] == "pending"
    steps, counts = seen["before_smoothgrad"]
    assert counts["vg"] == 5 and counts["anomaly"] == 5 and "smoothgrad" not in counts
    # phantoms, VG and its analyses done; SmoothGrad's step begun, none of its cases published
    assert list(steps.state[:4]) == ["done", "done", "done", "running"] and pd.isna(steps.done.iloc[3])
    with store.connect(db, read_only=True) as con:
        assert store.build_complete(con)
    assert set(report["runs"]) == {"vg", "smoothgrad"}


# ----------------------------------------------------------------------------- worker processes
@pytest.mark.slow
def test_process_executor_gives_the_rows_of_an_in_process_run(tmp_path):
    from agg2exp_core.pipeline.executors import ProcessExecutor
    from agg2exp_core.pipeline.precompute import precompute

    manifest, checkpoint = tiny_phantom_cohort(tmp_path)
    params = {"n_samples": 2, "sigma": 0.1, "seed": 0}
    precompute(manifest, checkpoint, tmp_path / "a.duckdb", "smoothgrad", params, device="cpu", progress=False)
    summary = precompute(manifest, checkpoint, tmp_path / "b.duckdb", "smoothgrad", params, device="cpu",
                         progress=False, executor=ProcessExecutor(workers=2))
    assert sorted(summary.done) == ["ext-000", "ext-001", "ref-000", "ref-001"]  # n_test is within n_reference
    query = ("SELECT case_id, target_id, source_id, mass_abs, mass_pos, mass_neg FROM local_importance "
             "ORDER BY ALL")
    with store.connect(tmp_path / "a.duckdb", read_only=True) as a, store.connect(tmp_path / "b.duckdb",
                                                                                  read_only=True) as b:
        expected, got = a.execute(query).df(), b.execute(query).df()
    pd.testing.assert_frame_equal(expected, got, check_exact=False, rtol=1e-5)


def _kill_on(victim: str, attempts_file: str, model, job):
    """A compute function whose process dies on ``victim`` (as the OOM killer would end it)."""
    if job.case_id == victim:
        with open(attempts_file, "a") as f:
            f.write("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return job.case_id, model.n_classes


@pytest.mark.slow
def test_process_executor_finds_the_case_that_kills_its_process(tmp_path):
    from agg2exp_core.pipeline.executors import ModelSource, ProcessExecutor
    from agg2exp_core.pipeline.precompute import CaseJob

    _, checkpoint = tiny_phantom_cohort(tmp_path)
    jobs = [CaseJob({"case_id": f"c{i}"}, "vg", {}, (0,)) for i in range(5)]
    attempts = tmp_path / "attempts"
    compute = functools.partial(_kill_on, "c2", str(attempts))
    with ProcessExecutor(workers=2, max_retries=1) as executor:
        outcomes = {o.job.case_id: o for o in executor.map(compute, ModelSource(checkpoint, "cpu"), jobs)}
    assert set(outcomes) == {f"c{i}" for i in range(5)}
    assert "died" in outcomes["c2"].crashed and outcomes["c2"].result is None
    assert all(outcomes[c].result == (c, 17) and not outcomes[c].crashed for c in ("c0", "c1", "c3", "c4"))
    assert len(attempts.read_text()) >= 2  # run again alone before it is given up


# ----------------------------------------------------------------------------- make run: --background
def test_background_start_is_a_no_op_when_complete_or_running(tmp_path, capsys):
    from agg2exp_core.cli import main
    from agg2exp_core.pipeline.background import build_lock

    with store.open_writer(tmp_path / "demo.duckdb") as con:
        store.plan_build(con, [("phantoms", "phantom cohort")])
        store.update_build_step(con, "phantoms", "done")
    assert main(["demo", "--data-dir", str(tmp_path), "--background"]) == 0
    assert "is complete" in capsys.readouterr().out and not (tmp_path / "demo-build.log").exists()
    running = tmp_path / "running"
    with build_lock(running):  # this process is "the build"
        assert main(["demo", "--data-dir", str(running), "--background"]) == 0
        assert f"already running (pid {os.getpid()})" in capsys.readouterr().out
    assert not (running / "demo-build.log").exists()


@pytest.mark.slow
def test_background_build_runs_detached_and_logs_its_failure(tmp_path, capsys):
    """A real detached build (of a folder whose checkpoint is broken, so that it ends in seconds):
    the command returns at once, the build holds the folder's lock while it runs and its output,
    the failure's one line included, lands in the log."""
    import time

    from agg2exp_core.cli import main
    from agg2exp_core.pipeline.background import build_holder

    (tmp_path / "demo_unet.pt").write_bytes(b"not a checkpoint")
    started = time.time()
    assert main(["demo", "--data-dir", str(tmp_path), "--background"]) == 0
    assert time.time() - started < 5 and "in the background" in capsys.readouterr().out
    deadline = time.time() + 120
    while time.time() < deadline and (build_holder(tmp_path) is not None or not (tmp_path / "demo.duckdb").exists()):
        time.sleep(0.5)
    assert build_holder(tmp_path) is None, "the build did not end"
    log = (tmp_path / "demo-build.log").read_text()
    assert "--- demo build started" in log and "demo_unet.pt" in log and "error" in log.lower()
    with store.connect(tmp_path / "demo.duckdb", read_only=True) as con:
        steps = store.build_status(con).set_index("step").state
    assert steps["phantoms"] == "done" and steps["vg"] == "failed"

"""The Ray options without starting Ray: bad values are one exit-2 line before anything is
written, and neither the core, nor the CLI, nor the in-process stages, nor the dashboard import Ray."""
from __future__ import annotations

import subprocess
import sys

import pytest

from agg2exp_core.cli import main
from agg2exp_core.pipeline.executors import InProcessExecutor
from cohorts import REPO, make_checkpoint, make_cohort

LIGHT_IMPORTS = ("agg2exp_core", "agg2exp_core.cli", "agg2exp_core.pipeline.precompute", "agg2exp_core.pipeline.evaluate",
                 "agg2exp_core.pipeline.executors", "dashboard.data", "dashboard.ui", "dashboard.figures")


def test_nothing_but_the_ray_executor_imports_ray():
    code = (f"import sys; import {', '.join(LIGHT_IMPORTS)}; from agg2exp_core.cli import build_parser; "
            "build_parser().parse_args(['precompute', '--manifest', 'm', '--model', 'x', '--db', 'd', "
            "'--executor', 'ray']); print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    return make_cohort(root / "cohort", n=2), make_checkpoint(root / "m.pt"), root / "store" / "s.duckdb"


@pytest.mark.parametrize("extra, flag", [
    (["--ray-address", "auto"], "--ray-address"),
    (["--gpus-per-case", "1"], "--gpus-per-case"),
    (["--shared-data-dir"], "--shared-data-dir"),
    (["--executor", "ray", "--cpus-per-case", "0"], "--cpus-per-case"),
    (["--executor", "ray", "--gpus-per-case", "-1"], "--gpus-per-case"),
    (["--executor", "ray", "--ray-workers", "0"], "--ray-workers"),
    (["--executor", "ray", "--ray-address", " "], "--ray-address"),
    (["--executor", "ray", "--ray-address", "headnode"], "--ray-address"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "--ray-address"),  # nothing listens there
])
def test_bad_executor_options_are_one_line_and_write_nothing(world, capfd, extra, flag):
    manifest, checkpoint, db = world
    rc = main(["precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
               "--device", "cpu", *extra])
    err = capfd.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not db.parent.exists() or not any(db.parent.iterdir()), "nothing written"


def test_an_unknown_executor_is_a_usage_error(world, capfd):
    manifest, checkpoint, db = world
    with pytest.raises(SystemExit) as exit_:
        main(["precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
              "--executor", "dask"])
    err = capfd.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "--executor" in err and "'ray'" in err


def test_evaluate_takes_the_executor_options_too(world, capfd):
    manifest, checkpoint, db = world
    rc = main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
               "--cpus-per-case", "2"])
    err = capfd.readouterr().err.strip()
    assert rc == 2 and "--cpus-per-case: needs --executor ray" in err


class WorkerDiesOnC1(InProcessExecutor):
    """An executor whose worker process dies on case c1 on every attempt (as Ray reports it)."""

    isolates_cases = True

    def map(self, compute, source, jobs, on_start=None, timeout_s=None):
        from agg2exp_core.pipeline.executors import Completed

        model = source.load()
        for job in jobs:
            if job.case_id == "c1":
                yield Completed(job, crashed="the worker process died while computing this case (3 attempts)")
            else:
                yield Completed(job, compute(model, job))


def test_a_case_whose_worker_died_is_recorded_once_and_held_back(tmp_path):
    from agg2exp_core import store
    from agg2exp_core.pipeline.precompute import precompute

    manifest, checkpoint = make_cohort(tmp_path / "cohort", n=3), make_checkpoint(tmp_path / "m.pt")
    db = tmp_path / "s.duckdb"
    first = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, executor=WorkerDiesOnC1())
    assert sorted(first.done) == ["c0", "c2"] and first.failed == ["c1"]
    again = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, executor=WorkerDiesOnC1())
    assert again.crashed == ["c1"] and not again.done and not again.failed, "not retried run after run"
    with store.connect(db, read_only=True) as con:
        failures = con.execute("SELECT case_id, stage, message FROM failures").fetchall()
    assert failures == [("c1", "crashed", "the worker process died while computing this case (3 attempts)")]
    asked = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, retry_crashed=True)
    assert asked.done == ["c1"]

"""Cases on Ray (``--executor ray``): the same rows as an in-process run, a worker SIGKILLed
mid-case retried with every row stored once, and nothing left running or listening beyond
loopback afterwards. Local Ray on 127.0.0.1 only (``ray_executor.init_local``), two worker
processes.
"""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import duckdb
import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from agg2exp_core.analysis.evaluation import EvaluationConfig, FaithfulnessConfig  # noqa: E402
from agg2exp_core.cli import main  # noqa: E402
from agg2exp_core.io.phantoms import generate_cohort  # noqa: E402
from agg2exp_core.io.preprocessing import Preprocessing  # noqa: E402
from agg2exp_core.labels import THORAX_LABELS  # noqa: E402
from agg2exp_core.models import build_network, save_checkpoint  # noqa: E402
from agg2exp_core.pipeline.evaluate import evaluate_cohort  # noqa: E402
from agg2exp_core.pipeline.executors import ModelSource  # noqa: E402
from agg2exp_core.pipeline.precompute import precompute  # noqa: E402
from agg2exp_core.pipeline.ray_executor import LOOPBACK, RayConfig, RayExecutor, init_local, stop_local  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray start is 15-40 s on the shared 2-core machine

TINY_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
METHOD, PARAMS = "smoothgrad", {"n_samples": 2, "sigma": 0.1, "seed": 0}
EVALUATION = {"methods": ("vg", "ig"), "classes": ("aorta", "heart"), "max_cases": 2,
              "config": EvaluationConfig(metrics=("faithfulness", "complexity", "curves"),
                                         faithfulness=FaithfulnessConfig(n_subsets=10))}
TEST_DEADLINE_S = 420
WORKER_TITLE = "ray::CaseWorker.run"  # a worker's process title while it computes a case


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four demo-like phantoms (two reference, two external with pathology masks), a tiny
    17-class UNet, and the in-process run's store to compare with."""
    root = tmp_path_factory.mktemp("ray")
    manifest = generate_cohort(root / "cohort", n_reference=2, n_test=1, n_external=2, shape=(32, 24, 24),
                               spacing=(12.0, 12.0, 12.0), seed=1)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "tiny.pt", build_network(TINY_UNET, len(THORAX_LABELS)), TINY_UNET,
                                 THORAX_LABELS, Preprocessing(spacing=None), roi_size=(32, 24, 24))
    reference = root / "inprocess" / "s.duckdb"
    summary = precompute(manifest, checkpoint, reference, METHOD, PARAMS, device="cpu", progress=False)
    assert len(summary.done) == 4
    return {"root": root, "manifest": manifest, "checkpoint": checkpoint, "reference": reference}


@pytest.fixture
def deadline():
    """Bound every test in time: a hung Ray run fails the test (its teardown still runs)."""
    def expire(signum, frame):
        raise TimeoutError(f"test ran past {TEST_DEADLINE_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- processes and sockets
def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every living process below ``root`` (from /proc)."""
    parents, titles = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)], titles[int(entry)] = int(fields[1]), cmd
    found, frontier = {}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found.update({pid: titles[pid] for pid in frontier})
    return found


def listening() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in re.findall(r"pid=(\d+)", line):
            found.append((fields[3].rsplit(":", 1)[0], int(pid)))
    return found


def is_loopback(address: str) -> bool:
    return address.strip("[]") in (LOOPBACK, "::1", "::ffff:127.0.0.1", "localhost")


class Watcher(threading.Thread):
    """Samples this process's descendants and their listening sockets while a run goes on;
    with ``kill``, SIGKILLs the first worker process it sees computing a case."""

    def __init__(self, kill: bool = False):
        super().__init__(daemon=True)
        self.kill, self.killed = kill, None
        self.seen: dict[int, str] = {}
        self.case_workers: set[int] = set()
        self.sockets: set[tuple[str, int]] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        last_ss = 0.0
        while not self.halt.is_set():
            procs = descendants(os.getpid())
            self.seen.update(procs)
            for pid, cmd in procs.items():
                if WORKER_TITLE in cmd:
                    self.case_workers.add(pid)
                    if self.kill and self.killed is None:
                        os.kill(pid, signal.SIGKILL)
                        self.killed = pid
            if time.time() - last_ss > 0.5:
                self.sockets |= {(addr, pid) for addr, pid in listening() if pid in procs}
                last_ss = time.time()
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join(timeout=10)


def assert_nothing_left(watcher: Watcher) -> None:
    """Every Ray process the run started is gone, and none of them listened beyond loopback."""
    ray_pids = {pid for pid, cmd in watcher.seen.items() if "ray" in cmd.lower() or "gcs_server" in cmd}
    assert len(ray_pids) >= 4, f"the watcher saw the Ray processes ({watcher.seen})"
    assert watcher.sockets, "the watcher saw Ray's listening sockets"
    outside = {(a, p) for a, p in watcher.sockets if not is_loopback(a)}
    assert not outside, f"Ray listened beyond loopback: {outside}"
    deadline = time.time() + 30
    while time.time() < deadline and set(descendants(os.getpid())) & ray_pids:
        time.sleep(0.2)
    alive = set(descendants(os.getpid())) & ray_pids
    assert not alive, f"Ray processes left behind: {[watcher.seen[p] for p in alive]}"
    assert not [s for s in listening() if s[1] in ray_pids], "a port of the run is still open"


# ----------------------------------------------------------------------------- store comparison
def table(db, query: str) -> dict[tuple, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(query).fetchall()
    keyed = {tuple(r[:-3]): tuple(r[-3:]) for r in rows}
    assert len(keyed) == len(rows), "a row stored twice"
    return keyed


IMPORTANCE = "SELECT case_id, target_id, source_id, mass_abs, mass_pos, mass_neg FROM local_importance"


def assert_same_rows(db, reference, query: str = IMPORTANCE, atol: float = 1e-6) -> None:
    got, expected = table(db, query), table(reference, query)
    assert got.keys() == expected.keys()
    keys = sorted(expected)
    as_array = lambda rows: np.array([[np.nan if v is None else v for v in rows[k]] for k in keys], float)  # noqa: E731
    np.testing.assert_allclose(as_array(got), as_array(expected), atol=atol, rtol=0)


def assert_same_cases(db, reference) -> None:
    """Rows, Dice and artefacts (whole arrays) equal to the in-process run's."""
    assert_same_rows(db, reference)
    dice = "SELECT case_id, class_id, 0, 0, dice FROM dice"
    assert_same_rows(db, reference, dice)
    for case_id in ("ref-000", "ext-001"):
        with np.load(db.parent / "artifacts" / _run_id(db) / f"{case_id}.npz") as got, \
                np.load(reference.parent / "artifacts" / _run_id(reference) / f"{case_id}.npz") as expected:
            assert set(got.files) == set(expected.files)
            for key in expected.files:
                np.testing.assert_allclose(got[key].astype(float), expected[key].astype(float), atol=1e-3)


def _run_id(db) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT run_id FROM runs WHERE source = 'precompute'").fetchone()[0]


# ----------------------------------------------------------------------------- the tests
def test_cli_executor_ray_gives_the_in_process_rows_and_leaves_nothing_behind(cohort, tmp_path, deadline):
    """``precompute --executor ray``: a local loopback instance, two worker processes, stopped at the end."""
    db = tmp_path / "ray" / "s.duckdb"
    threads = torch.get_num_threads()
    try:
        with Watcher() as watcher:
            rc = main(["precompute", "--manifest", str(cohort["manifest"]), "--checkpoint", str(cohort["checkpoint"]),
                       "--db", str(db), "--method", METHOD, "--params", json.dumps(PARAMS), "--device", "cpu",
                       "--executor", "ray", "--ray-workers", "2", "--cpus-per-case", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert not ray.is_initialized(), "the instance the run started is stopped"
    assert len(watcher.case_workers) == 2, "two worker processes shared the four cases"
    assert os.getpid() not in watcher.case_workers
    assert_same_cases(db, cohort["reference"])
    assert_nothing_left(watcher)


@pytest.fixture(scope="module")
def ray_session():
    """A Ray instance of the tests' own (two CPUs, 200 MiB of
    object store, loopback only), which the executor joins and leaves running; stopped, and
    checked to leave nothing, at the end."""
    with Watcher() as watcher:
        init_local(2, 200, log_to_driver=False)
        try:
            yield watcher
        finally:
            stop_local()
    assert_nothing_left(watcher)


def test_a_worker_killed_mid_case_is_retried_and_every_row_is_stored_once(cohort, ray_session, tmp_path, deadline):
    db = tmp_path / "killed" / "s.duckdb"
    executor = RayExecutor(RayConfig(cpus_per_case=1))
    with Watcher(kill=True) as watcher:
        summary = precompute(cohort["manifest"], cohort["checkpoint"], db, METHOD, PARAMS, device="cpu",
                             progress=False, executor=executor)
    assert watcher.killed is not None, "a worker was killed while it computed a case"
    assert watcher.killed not in descendants(os.getpid())
    assert len(watcher.case_workers) >= 3, "the killed worker's case ran again in a new process"
    assert executor.workers == 2 and ray.is_initialized(), "the executor used and left the caller's session"
    assert sorted(summary.done) == ["ext-000", "ext-001", "ref-000", "ref-001"] and not summary.failed
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
        per_case = con.execute("SELECT case_id, count(*) FROM local_importance GROUP BY 1").fetchall()
        status = con.execute("SELECT count(*), count(DISTINCT case_id) FROM case_status").fetchone()
    assert status == (4, 4)
    with duckdb.connect(str(cohort["reference"]), read_only=True) as con:
        assert sorted(per_case) == sorted(con.execute(
            "SELECT case_id, count(*) FROM local_importance GROUP BY 1").fetchall())
    assert_same_cases(db, cohort["reference"])


def test_evaluate_on_ray_gives_the_in_process_metrics_and_curves(cohort, ray_session, tmp_path, deadline):
    reference, db = tmp_path / "inprocess.duckdb", tmp_path / "ray.duckdb"
    expected = evaluate_cohort(cohort["manifest"], cohort["checkpoint"], reference, device="cpu", progress=False,
                               **EVALUATION)
    got = evaluate_cohort(cohort["manifest"], cohort["checkpoint"], db, device="cpu", progress=False,
                          executor=RayExecutor(), **EVALUATION)
    assert got.run_ids == expected.run_ids and sorted(got.done) == sorted(expected.done) and len(got.done) == 2
    metrics = "SELECT run_id, case_id, target_id, metric, 0, 0, value FROM method_eval"
    curves = "SELECT run_id, case_id, target_id, ordering, step, 0, fraction, value FROM perturbation_curve"
    assert len(table(reference, metrics)) > 0 and len(table(reference, curves)) > 0
    assert_same_rows(db, reference, metrics)
    assert_same_rows(db, reference, curves)


def die_on_bad(log_dir: str, model, job: str) -> str:
    """A compute function whose job "bad" kills the worker process computing it, every time."""
    with open(os.path.join(log_dir, f"{job}.attempts"), "a") as f:
        f.write(f"{os.getpid()}\n")
    if job == "bad":
        os._exit(1)
    return job.upper()


def test_a_case_that_kills_every_worker_comes_back_once_as_crashed(cohort, ray_session, tmp_path, deadline):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests
    executor = RayExecutor(RayConfig(max_retries=1))
    compute = functools.partial(die_on_bad, str(tmp_path))
    outcomes = list(executor.map(compute, ModelSource(cohort["checkpoint"], "cpu"), ["a", "bad", "b", "c"]))
    by_job = {o.job: o for o in outcomes}
    assert len(outcomes) == 4 and sorted(by_job) == ["a", "b", "bad", "c"]
    assert [by_job[j].result for j in "abc"] == ["A", "B", "C"] and not any(by_job[j].crashed for j in "abc")
    bad = by_job["bad"]
    assert bad.result is None and "worker process died" in bad.crashed and "2 attempts" in bad.crashed
    attempts = (tmp_path / "bad.attempts").read_text().split()
    assert len(attempts) == 2 and len(set(attempts)) == 2, "tried twice, each time in a new process, then given up"

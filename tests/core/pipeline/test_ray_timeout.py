"""The case time limit on Ray (issue 21): a case blocked on a FIFO is ended at ``timeout_s``,
its actor killed without restart (Ray would run the case again) and replaced, and the other
cases complete. A real local Ray on loopback (../shared/TOOLING.md), so marked ``ray`` and ``slow``."""
from __future__ import annotations

import os
import time

import pytest

ray = pytest.importorskip("ray")

from agg2exp_core.pipeline.executors import ModelSource  # noqa: E402
from agg2exp_core.pipeline.ray_executor import RayConfig, RayExecutor, init_local  # noqa: E402
from cohorts import make_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a Ray start is 15-40 s on the shared 2-core machine


def test_ray_ends_a_hanging_case_and_replaces_its_worker(tmp_path):
    import hanging

    ray.cloudpickle.register_pickle_by_value(hanging)  # workers cannot import the tests' modules
    fifo = tmp_path / "stale-mount"
    os.mkfifo(fifo)
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    init_local(2, 200, log_to_driver=False)
    try:
        executor = RayExecutor(RayConfig(workers=2, max_retries=1))
        jobs = [(name, str(fifo)) for name in ("a", "hang", "b", "c")]
        started = time.monotonic()
        outcomes = {o.job[0]: o for o in executor.map(hanging.compute_or_hang, ModelSource(checkpoint, "cpu"),
                                                      jobs, timeout_s=20.0)}
        assert time.monotonic() - started < 240
    finally:
        ray.shutdown()
    assert outcomes["hang"].timed_out.startswith("ended after 20 s") and outcomes["hang"].result is None
    assert {n: o.result.split(" by ")[0] for n, o in outcomes.items() if n != "hang"} == {"a": "a", "b": "b", "c": "c"}
    assert not any(o.crashed or o.error for o in outcomes.values())

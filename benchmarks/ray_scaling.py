"""Cases on Ray vs in-process: the overhead at equal cores, and 1 vs 2 worker processes.

Eight demo cases (the demo cohort's phantoms, 64x48x48 at 6 mm, the demo UNet, all 17
classes) are precomputed with one method, each run into a fresh store:

- in-process with N threads vs Ray with N worker processes of one thread each (equal
  cores); the overhead goal is <= 15 % of the in-process wall time;
- Ray with 1 vs 2 worker processes of one thread each (scaling).

Ray runs are timed twice: the run itself (the instance already up, as on a cluster) and
including the start and stop of the local instance (what ``--executor ray`` without an
address costs on a laptop). Rows of every run are checked equal to the in-process run's.
The load average is printed before and after: on a machine shared with other jobs the
figures are only as steady as the load.

    python benchmarks/ray_scaling.py [--cases 8] [--method vg] [--cores 2] [--data-dir data]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agg2exp_core.io import phantoms  # noqa: E402
from agg2exp_core.io.manifest import read_manifest  # noqa: E402
from agg2exp_core.pipeline.demo import COHORT, demo_checkpoint  # noqa: E402
from agg2exp_core.pipeline.precompute import precompute  # noqa: E402
from agg2exp_core.pipeline.ray_executor import RayConfig, RayExecutor, init_local, stop_local  # noqa: E402

PARAMS = {"vg": {}, "smoothgrad": {"n_samples": 4, "sigma": 0.1, "seed": 0}}


def demo_inputs(data_dir: Path, work: Path, n_cases: int) -> tuple[Path, Path]:
    """The demo cohort's first ``n_cases`` and the demo checkpoint (a random-weight demo UNet
    when no demo was built: the cost does not depend on the weights)."""
    manifest = data_dir / "demo" / "cohort" / "manifest.csv"
    if not manifest.exists():
        manifest = phantoms.generate_cohort(work / "cohort", **{**COHORT, "n_reference": n_cases, "n_test": 0,
                                                                 "n_external": 0})
    subset = work / "manifest.csv"  # absolute paths, so it may live anywhere
    read_manifest(manifest).head(n_cases).to_csv(subset, index=False)
    checkpoint = demo_checkpoint(data_dir)
    if not checkpoint.exists():
        from agg2exp_core.io.preprocessing import Preprocessing
        from agg2exp_core.labels import THORAX_LABELS
        from agg2exp_core.models import build_network, save_checkpoint
        from agg2exp_core.models.train import TrainConfig

        config = TrainConfig()
        torch.manual_seed(0)
        checkpoint = save_checkpoint(work / "demo_unet.pt", build_network(config.network, len(THORAX_LABELS)),
                                     config.network, THORAX_LABELS, Preprocessing(spacing=None),
                                     roi_size=config.roi_size)
    return subset, checkpoint


def rows(db: Path) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute("SELECT case_id, target_id, source_id, mass_abs FROM local_importance").fetchall()
    return {r[:3]: (np.nan if r[3] is None else r[3]) for r in found}


def run(label: str, manifest: Path, checkpoint: Path, method: str, work: Path, executor=None) -> dict:
    db = work / label.replace(" ", "_") / "s.duckdb"
    started = time.perf_counter()
    summary = precompute(manifest, checkpoint, db, method, PARAMS.get(method, {}), device="cpu", progress=False,
                         executor=executor)
    wall = time.perf_counter() - started
    assert not summary.failed, summary.line()
    return {"label": label, "wall_s": wall, "cases": len(summary.done), "rows": rows(db)}


def ray_run(label: str, workers: int, manifest: Path, checkpoint: Path, method: str, work: Path) -> dict:
    """A run on a local instance of ``workers`` CPUs: timed with the instance up, and with its start/stop."""
    import ray

    started = time.perf_counter()
    init_local(workers, 200, log_to_driver=False)
    up = time.perf_counter() - started
    try:
        result = run(label, manifest, checkpoint, method, work, RayExecutor(RayConfig(cpus_per_case=1)))
    finally:
        stopping = time.perf_counter()
        stop_local()
        down = time.perf_counter() - stopping
    result.update(start_s=up, stop_s=down, with_start_s=up + result["wall_s"] + down)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--method", default="vg", choices=sorted(PARAMS))
    parser.add_argument("--cores", type=int, default=2, help="cores of the equal-cores comparison")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as tmp:
        work = Path(tmp)
        manifest, checkpoint = demo_inputs(args.data_dir, work, args.cases)
        # pairs at equal cores run back to back, so that they see about the same load
        torch.set_num_threads(1)
        inproc_1 = run("in-process 1 thread", manifest, checkpoint, args.method, work)
        ray_1 = ray_run("ray 1 worker", 1, manifest, checkpoint, args.method, work)
        torch.set_num_threads(args.cores)
        inproc = run(f"in-process {args.cores} threads", manifest, checkpoint, args.method, work)
        ray_n = ray_run(f"ray {args.cores} workers", args.cores, manifest, checkpoint, args.method, work)
    load_after = os.getloadavg()

    print(f"{args.cases} demo cases, {args.method}, {os.cpu_count()} CPUs on this machine; "
          f"load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
          f"after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}")
    print(f"{'run':<26}{'wall s':>9}{'s/case':>9}{'with Ray start/stop s':>24}")
    for r in (inproc_1, ray_1, inproc, ray_n):
        extra = f"{r['with_start_s']:>24.1f}" if "with_start_s" in r else f"{'':>24}"
        print(f"{r['label']:<26}{r['wall_s']:>9.1f}{r['wall_s'] / r['cases']:>9.2f}{extra}")
    for cores, local, on_ray in ((1, inproc_1, ray_1), (args.cores, inproc, ray_n)):
        print(f"Ray overhead at {cores} core(s): {100 * (on_ray['wall_s'] / local['wall_s'] - 1):+.1f} % of the "
              f"in-process wall (goal <= 15 %), {100 * (on_ray['with_start_s'] / local['wall_s'] - 1):+.1f} % "
              f"counting the local instance's start/stop ({on_ray['start_s']:.1f} s + {on_ray['stop_s']:.1f} s)")
    overhead = ray_n["wall_s"] / inproc["wall_s"] - 1
    overhead_start = ray_n["with_start_s"] / inproc["wall_s"] - 1
    print(f"1 -> {args.cores} worker processes (one thread each): speed-up x{ray_1['wall_s'] / ray_n['wall_s']:.2f}")
    if max(load_before[0], load_after[0]) > os.cpu_count():
        print(f"note: the load exceeded the {os.cpu_count()} CPUs: other jobs shared them, the figures are noisy")
    worst = max(max(abs(r["rows"][k] - inproc["rows"][k]) for k in inproc["rows"] if not np.isnan(inproc["rows"][k]))
                for r in (inproc_1, ray_n, ray_1))
    same_keys = all(r["rows"].keys() == inproc["rows"].keys() for r in (inproc_1, ray_n, ray_1))
    print(f"rows equal to the in-process run: keys {'identical' if same_keys else 'DIFFER'}, "
          f"max |mass_abs difference| {worst:.1e}")
    print(json.dumps({"overhead_1": ray_1["wall_s"] / inproc_1["wall_s"] - 1, "overhead": overhead, "overhead_with_start": overhead_start,
                      "speedup_1_to_n": ray_1["wall_s"] / ray_n["wall_s"], "load_before": load_before,
                      "load_after": load_after}))


if __name__ == "__main__":
    main()

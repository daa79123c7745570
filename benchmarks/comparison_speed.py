"""The cohort comparison's permutation test at registry scale: full count vs sequential stop.

    python benchmarks/comparison_speed.py [--cases 20000] [--store PATH]

Loads the local matrices of a synthetic store (built like ``dashboard_render.py``'s, or reused
with ``--store``) for female vs male, and runs ``permutation_test`` twice each way in one
process with the dashboard's settings ("auto" permutations, batches of 1000, BLAS on all but one
core): without stopping and with ``stop_at=20`` (Besag-Clifford, the dashboard's choice). Prints
wall and CPU seconds (best of two), their ratio, and whether both find the same significant
cells and give the same p-values where p < 20 / permutations. The load average is printed too:
figures are only comparable under similar load.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
STOP_AT = 20


def load_cohorts(db: Path):
    from dashboard import data
    from dashboard.filters import CohortFilter

    ref = data.store_ref(db)
    runs = data.runs(ref)
    run_id = runs[(runs.method == "vg") & ~runs.run_id.str.startswith("eval-")].run_id.iloc[0]
    cases = data.cohort_cases(ref, run_id, CohortFilter())
    a_ids, b_ids = (cases[cases.sex == s].case_id.tolist() for s in ("F", "M"))
    ids, _, _, cube = data.local_cube(ref, run_id, a_ids + b_ids, "abs")
    index = {c: i for i, c in enumerate(ids)}
    return (cube[[index[c] for c in group if c in index]] for group in (a_ids, b_ids))


def timed(a, b, n: int, stop_at: int | None):
    from agg2exp_core.analysis.compare import permutation_test

    with threadpool_limits(max(1, (os.cpu_count() or 1) - 1), user_api="blas"):
        wall, cpu = time.perf_counter(), time.process_time()
        result = permutation_test(a, b, n_permutations=n, seed=0, batch_size=1000, stop_at=stop_at)
        return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--store", type=Path, help="store to build (or reuse when it exists)")
    args = parser.parse_args()
    db = args.store or Path(tempfile.mkdtemp(prefix="agg2exp-bench-")) / "bench.duckdb"
    if not db.exists():
        from synthetic_store import build_synthetic_store

        build_synthetic_store(db, n_cases=args.cases, seed=0, with_artifacts=0, run_methods=("vg",))
    from agg2exp_core.analysis.compare import permutations_for_fdr

    a, b = load_cohorts(db)
    n = permutations_for_fdr(a.shape[1] * a.shape[2])
    runs = {stop: [timed(a, b, n, stop) for _ in range(2)] for stop in (None, STOP_AT)}
    best = {stop: (min(r[0] for r in rows), min(r[1] for r in rows), rows[0][2]) for stop, rows in runs.items()}
    print(f"{a.shape[0]} vs {b.shape[0]} cases, {a.shape[1] * a.shape[2]} cells, {n} permutations")
    for stop, (wall, cpu, _) in best.items():
        print(f"  stop_at={stop}: {wall:.2f} s wall, {cpu:.2f} CPU s")
    full, sequential = best[None][2], best[STOP_AT][2]
    small = full.p_values < STOP_AT / n
    print(f"full / sequential: {best[None][0] / best[STOP_AT][0]:.2f}x wall, {best[None][1] / best[STOP_AT][1]:.2f}x CPU")
    print(f"significant cells: {int(full.significant.sum())} vs {int(sequential.significant.sum())}, same set: "
          f"{bool((full.significant == sequential.significant).all())}; p < {STOP_AT}/n identical: "
          f"{bool(np.array_equal(full.p_values[small], sequential.p_values[small]))}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

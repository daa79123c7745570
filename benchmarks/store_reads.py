"""CPU cost of the dashboard's store reads without the pages around them: every query a page
runs on a cache miss, called through ``dashboard.data`` with its caches cleared, repeated.

    python benchmarks/store_reads.py --store PATH [--repeat 20] [--baseline DIR]

Page render times on a shared machine swing with the load; this measures the reads alone, as
process CPU seconds (all threads) per round of every query, median of ``--repeat`` rounds, and
apart from them the opening of the store (once per published version in a running server).
``--baseline DIR``: another checkout measured first, in its own process, on the same store.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_round(data, ref, run_id: str, eval_runs: tuple, case_id: str, heart: int, cohort, filtered) -> None:
    """The reads of every page once (those behind the sidebar, the heat map, the distributions,
    the outliers, the case viewer and the methods page), for all cases and a filtered cohort."""
    data.table_names(ref), data.runs(ref), data.rois(ref), data.build_status(ref)
    for chosen in (cohort, filtered):
        cases = data.cohort_cases(ref, run_id, chosen)
        data.global_matrix(ref, run_id, chosen, "abs")
        data.source_distribution(ref, run_id, chosen, heart, "abs")
        data.context_mass_distribution(ref, run_id, chosen)
        data.dice_distribution(ref, run_id, chosen)
        data.anomaly_ranking(ref, run_id, chosen, -1)
        data.method_eval_summary(ref, eval_runs, chosen)
        data.perturbation_summary(ref, eval_runs, chosen)
        data.local_cube(ref, run_id, list(cases.case_id), "abs")
    data.stored_intervals(ref, run_id, "*", "abs"), data.case_matrix(ref, run_id, case_id, "abs")
    data.outlier_reasons(ref, run_id, case_id, -1), data.case_dice_estimates(ref, run_id, case_id)
    data.analysis_settings(ref, run_id), data.anomaly_dice(ref, run_id), data.outlier_tests(ref, run_id)


def measure(root: Path, db: Path, repeat: int) -> dict:
    sys.path[:0] = [str(root)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import logging

    logging.disable(logging.WARNING)                          # "No runtime found, using MemoryCacheStorageManager"
    from dashboard import data, filters

    ref = data.store_ref(db)
    runs = data.runs(ref)
    run_id = str(runs[runs.n_cases > 0].run_id.iloc[-1])
    eval_runs = tuple(runs[runs.source == "evaluate"].run_id)
    cases = data.run_cases(ref, run_id)
    case_id, heart = str(cases.case_id.iloc[0]), int(data.rois(ref).set_index("name").roi_id["heart"])
    cohort, filtered = filters.CohortFilter(), filters.CohortFilter(datasets=("external",), sexes=("F",))
    cpu, wall, opening = [], [], []
    for _ in range(repeat):
        data._connection.clear()                     # opening the store: once per published version in a server
        start_cpu = time.process_time()
        data._connection(ref.path, ref.signature)
        opening.append(time.process_time() - start_cpu)
        data.st.cache_data.clear()
        data._run_case_ids.clear()
        start, start_cpu = time.perf_counter(), time.process_time()
        one_round(data, ref, run_id, eval_runs, case_id, heart, cohort, filtered)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {"root": str(root), "cpu": statistics.median(cpu), "cpu_min": min(cpu), "wall": statistics.median(wall),
            "open": statistics.median(opening), "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a store with matrix and evaluation runs "
                        "(e.g. the one benchmarks/dashboard_render.py --store builds)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="another checkout measured first on the same store")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure.resolve(), args.store.resolve(), args.repeat)))
        return 0
    roots = ([args.baseline.resolve()] if args.baseline else []) + [ROOT]
    print(f"{'checkout':<40}  {'cpu s/round (median)':>20}  {'cpu min':>7}  {'wall s (median)':>15}  "
          f"{'open cpu s':>10}  load")
    for root in roots:
        out = subprocess.run([sys.executable, __file__, "--measure", str(root), "--store", str(args.store),
                              "--repeat", str(args.repeat)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"measuring {root} failed:\n{out.stderr[-3000:]}")
        r = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
        print(f"{r['root']:<40}  {r['cpu']:20.3f}  {r['cpu_min']:7.3f}  {r['wall']:15.3f}  {r['open']:10.4f}  "
              f"{r['load']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

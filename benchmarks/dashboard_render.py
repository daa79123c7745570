"""Render time of every dashboard page on a synthetic store of 20,000 cases (AppTest, no browser).

A national registry is ≈ 20,000 cases (≈ 6.5 M local_importance rows per run, 17 classes x
19 sources). Per page, in one process as in a running server (caches shared with pages
visited before are warm): its first visit, the warm rerun (best of 3), a filter change
(sidebar dataset -> external only, as since the first version of this benchmark; some of
its queries are already cached by the pages before) and a new filter (the age range moved
to a value no page has seen, so every query of the page runs). The comparison view
(permutation test, 'auto' permutations: 13,000 for 323 cells at FDR 0.05) is timed on its
own. Goals: warm < 1 s, filter changes < 0.5 s, the comparison's first computation < 5 s.
"cpu s" is the process's CPU time (all threads) of the new filter, and of the comparison's
first computation: on a shared machine it says what the work costs whatever the load.

    python benchmarks/dashboard_render.py [--cases 20000] [--store PATH] [--baseline DIR] [--labels totalseg]

``--store``: build the store there, or reuse it when it exists (building 20,000 cases takes
about a minute and 1 GB of disk). ``--baseline DIR``: also measure another checkout of the
dashboard (e.g. ``git archive <commit> | tar -x -C DIR``) on the same store, before this
one, and print both. Each checkout is measured in a fresh process. The machine's load
average is printed with the figures: the timings are only comparable under similar load.
``--labels totalseg``: a TotalSegmentator-sized label set (117 classes, ``tests/support/label_sets.py``),
one run with matrices (27.8 M local_importance rows at 2,000 cases); the heat map is timed in its
default group view and, as "heat_map (every class)", with all 117 x 119 cells; the comparison
runs 1,000 permutations ('auto' asks 13,923 / 0.05 = 278,460 for FDR over every cell).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "heat_map", "knowledge_graph", "class_distributions", "context_mass", "outliers",
         "case_viewer", "methods"]
COMPARE = "heat_map (compare F vs M)"
GOAL_WARM, GOAL_CHANGE, GOAL_COMPARE = 1.0, 0.5, 5.0


def timed(app, action=None, cpu: list | None = None) -> float:
    """Wall seconds of one rerun; appends the process's CPU seconds (all threads) to ``cpu``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    (action or app.run)()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    if app.exception:
        raise RuntimeError(app.exception[0].message)
    return elapsed


EVERY_CLASS = "heat_map (every class)"


def measure(root: Path, db: Path, large: bool = False) -> list[dict]:
    """Time every page of the dashboard checked out at ``root`` on the store ``db``."""
    sys.path[:0] = [str(root)]
    os.environ["AGG2EXP_DB"] = str(db)
    os.environ["STREAMLIT_CLIENT_SHOW_ERROR_DETAILS"] = "full"
    from streamlit.testing.v1 import AppTest

    def open_page(page: str, params: dict | None = None) -> AppTest:
        app = AppTest.from_file(str(root / "app.py"), default_timeout=600)
        app.query_params.update(params or {})
        app.run()
        if page != "overview":
            app.switch_page(f"app_pages/{page}.py")
        return app

    rows = []
    pages = PAGES + [EVERY_CLASS] if large else PAGES
    for k, page in enumerate(pages):
        app = open_page("heat_map", {"zoom": "all"}) if page == EVERY_CLASS else open_page(page)
        first = timed(app)
        warm = min(timed(app) for _ in range(3))
        figures = len(app.get("plotly_chart"))
        app.multiselect(key="w_dataset").set_value(["external"])
        change = timed(app)
        app.multiselect(key="w_dataset").set_value(["external", "reference"])
        app.run()
        lo, hi = app.slider(key="w_age").value
        app.slider(key="w_age").set_value((lo + 1 + k, hi))
        cpu: list[float] = []
        new_filter = timed(app, cpu=cpu)
        rows.append(dict(page=page, first=first, warm=warm, change=change, new_filter=new_filter, cpu=cpu[0],
                         figures=figures))

    compare = {"view": "compare", "by": "sex", "a": "F", "b": "M", **({"perm": "1000"} if large else {})}
    app = open_page("heat_map", compare)
    cpu = []
    first = timed(app, cpu=cpu)
    warm = min(timed(app) for _ in range(2))
    rows.append(dict(page=COMPARE, first=first, warm=warm, change=None, new_filter=None, cpu=cpu[0],
                     figures=len(app.get("plotly_chart"))))
    return rows


def run_measurement(root: Path, db: Path, large: bool = False) -> dict:
    """Measure one checkout in a fresh process; its rows and the load average around it."""
    before = os.getloadavg()
    out = subprocess.run([sys.executable, __file__, "--measure", str(root), "--store", str(db),
                          *(["--labels", "totalseg"] if large else [])],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measuring {root} failed:\n{out.stderr[-3000:]}")
    line = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
    return {"root": str(root), "rows": json.loads(line)["rows"], "load": (before, os.getloadavg())}


def ok(row: dict) -> str:
    if row["page"] == COMPARE:
        return "ok" if row["first"] < GOAL_COMPARE and row["warm"] < GOAL_WARM else "SLOW"
    return "ok" if row["warm"] < GOAL_WARM and max(row["change"], row["new_filter"]) < GOAL_CHANGE else "SLOW"


def print_table(result: dict) -> None:
    (b1, b5, _), (a1, a5, _) = result["load"]
    print(f"\n{result['root']}  (load average before {b1:.2f}/{b5:.2f}, after {a1:.2f}/{a5:.2f}; 1/5 min)")
    width = max(len(r["page"]) for r in result["rows"])
    print(f"{'page':<{width}}  {'first s':>7}  {'warm s':>7}  {'filter change s':>15}  {'new filter s':>12}  "
          f"{'(cpu s)':>7}  {'figures':>7}  goal")
    for r in result["rows"]:
        change = "-" if r["change"] is None else f"{r['change']:.2f}"
        new = "-" if r["new_filter"] is None else f"{r['new_filter']:.2f}"
        print(f"{r['page']:<{width}}  {r['first']:7.2f}  {r['warm']:7.2f}  {change:>15}  {new:>12}  "
              f"{r['cpu']:7.2f}  {r['figures']:7d}  {ok(r)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--store", type=Path, help="store to build (or reuse when it exists)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure on the same store first")
    parser.add_argument("--labels", choices=("thorax", "totalseg"), default="thorax",
                        help="label set of a store built here: 17 thorax classes or 117 (TotalSegmentator-like)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)     # internal: measure this checkout
    args = parser.parse_args()
    large = args.labels == "totalseg"
    if args.measure:
        print(json.dumps({"rows": measure(args.measure.resolve(), args.store, large)}))
        return 0

    db = args.store or Path(tempfile.mkdtemp(prefix="agg2exp-bench-")) / "bench.duckdb"
    if not db.exists():
        sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]
        from label_sets import TOTALSEG_LIKE
        from synthetic_store import THORAX_LABELS, build_synthetic_store

        start = time.perf_counter()
        labels, methods = (TOTALSEG_LIKE, ("vg",)) if large else (THORAX_LABELS, ("vg", "smoothgrad"))
        build_synthetic_store(db, n_cases=args.cases, seed=0, with_artifacts=200, run_methods=methods,
                              class_names=labels)
        print(f"synthetic store: {args.cases} cases x {len(labels)} classes, {len(methods)} run(s) with matrices "
              f"and 4 evaluation runs, built in {time.perf_counter() - start:.1f} s "
              f"({db}, {db.stat().st_size / 2**20:.0f} MiB)")
    else:
        print(f"reusing the store {db}")
    results = [run_measurement(args.baseline.resolve(), db, large)] if args.baseline else []
    results.append(run_measurement(ROOT, db, large))
    print(f"\nGoals: warm < {GOAL_WARM:g} s, filter change and new filter < {GOAL_CHANGE:g} s, "
          f"comparison first < {GOAL_COMPARE:g} s. CPUs: {os.cpu_count()}.")
    for result in results:
        print_table(result)
    if not args.store:
        shutil.rmtree(db.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

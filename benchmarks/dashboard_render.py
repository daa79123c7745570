"""Render time of every dashboard page on a synthetic store of 2,000 cases (AppTest, no browser).

Prints one table: per page its first visit (in one process, as in a running server, so
caches shared with pages visited before are warm), the warm rerun, and a filter change
(sidebar dataset -> external only; those queries are not cached yet). Goals: warm
< 1.5 s, filter change < 0.5 s. The comparison view (permutation test) is timed separately.

    python benchmarks/dashboard_render.py [--cases 2000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PAGES = ["overview", "heat_map", "knowledge_graph", "class_distributions", "context_mass", "outliers",
         "case_viewer", "methods"]


def timed(app, action=None) -> float:
    start = time.perf_counter()
    (action or app.run)()
    elapsed = time.perf_counter() - start
    if app.exception:
        raise RuntimeError(app.exception[0].message)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest
    from synthetic_store import build_synthetic_store

    folder = args.keep or Path(tempfile.mkdtemp(prefix="agg2exp-bench-"))
    start = time.perf_counter()
    info = build_synthetic_store(folder / "bench.duckdb", n_cases=args.cases, seed=0, with_artifacts=200,
                                 run_methods=("vg", "smoothgrad"))
    print(f"synthetic store: {args.cases} cases, 2 runs, built in {time.perf_counter() - start:.1f} s "
          f"({info['path']})")
    os.environ["AGG2EXP_DB"] = str(info["path"])
    os.environ["STREAMLIT_CLIENT_SHOW_ERROR_DETAILS"] = "full"

    rows = []
    for page in PAGES:
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        app.run()
        if page != "overview":
            app.switch_page(f"pages/{page}.py")
        cold = timed(app)
        warm = min(timed(app) for _ in range(3))
        figures = len(app.get("plotly_chart"))
        app.multiselect(key="w_dataset").set_value(["external"])
        change = timed(app)
        rows.append((page, cold, warm, change, figures))

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    app.query_params.update({"view": "compare", "by": "sex", "a": "F", "b": "M"})
    app.run()
    app.switch_page("pages/heat_map.py")
    compare_cold = timed(app)
    compare_warm = min(timed(app) for _ in range(2))
    rows.append(("heat_map (compare F vs M)", compare_cold, compare_warm, float("nan"), len(app.get("plotly_chart"))))
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()      # closes the store before it is removed
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'page':<{width}}  {'first s':>7}  {'warm s':>7}  {'filter change s':>15}  {'figures':>7}  goal")
    for page, cold, warm, change, figures in rows:
        ok = "ok" if warm < 1.5 and (change != change or change < 0.5) else "SLOW"
        shown = "-" if change != change else f"{change:.2f}"
        print(f"{page:<{width}}  {cold:7.2f}  {warm:7.2f}  {shown:>15}  {figures:7d}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test of the dashboard: >= 20 concurrent browser sessions while filters change and a
precompute publishes new snapshots of the store. Loopback only, bounded in time and loads.

    python benchmarks/load_sessions.py [--sessions 20] [--duration 60] [--max-loads 600]
                                       [--cases 200] [--db STORE] [--no-writer]

It builds a synthetic store (or copies ``--db``) into a temporary folder, starts
``streamlit run app.py`` on 127.0.0.1, opens ``--sessions`` pages (each page its own
Streamlit session over its own websocket) in one headless Chromium, and lets every session load pages with random cohort filters in the URL. Each
load waits until the page shows its case count and checks it against the store
(computed independently with DuckDB), and looks for exceptions or error boxes.
Meanwhile ``python -m agg2exp_core precompute`` runs on a tiny cohort into the same
store, again and again, so new snapshots are published by atomic rename while the
sessions read. Prints sessions, page loads, errors and p50/p95 latency; exits 1 on any
error.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

HOST = "127.0.0.1"  # loopback only, never anything else
CHROMIUM = os.environ.get("AGG2EXP_CHROMIUM", "/usr/bin/chromium")
COUNT = re.compile(r"(\d+) of (\d+) cases")
PAGES = [("", 0.6), ("heat_map", 0.2), ("class_distributions", 0.2)]
FILTERS = [
    {}, {"dataset": "reference"}, {"dataset": "external"}, {"sex": "F"}, {"sex": "M"},
    {"age_min": "40", "age_max": "70"}, {"dataset": "external", "sex": "F"}, {"split": "train"},
    {"dataset": "reference", "age_min": "60"}, {"sex": "M", "age_max": "50"},
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def expected_count(db: Path, run_id: str, cohort: dict) -> int:
    """Cases of the run passing the filter, computed here without the dashboard's code."""
    conditions, params = [], [run_id, run_id]
    for key in ("dataset", "sex", "split"):
        if key in cohort:
            conditions.append(f"{key} = ?")  # key from the fixed tuple above
            params.append(cohort[key])
    if "age_min" in cohort:
        conditions.append("age >= ?")
        params.append(float(cohort["age_min"]))
    if "age_max" in cohort:
        conditions.append("age <= ?")
        params.append(float(cohort["age_max"]))
    sql = ("SELECT count(*) FROM cases WHERE case_id IN (SELECT case_id FROM case_status WHERE run_id = ? "
           "UNION SELECT case_id FROM local_importance WHERE run_id = ?)")
    if conditions:
        sql += " AND " + " AND ".join(conditions)
    with duckdb.connect(str(db), read_only=True) as con:
        return int(con.execute(sql, params).fetchone()[0])


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("streamlit did not become healthy")


class Writer(threading.Thread):
    """Runs precompute on a tiny cohort into the store, repeatedly, until stopped; counts publishes."""

    CONFIGS = (["--method", "vg"], ["--method", "smoothgrad", "--params", '{"n_samples": 2, "seed": 0}'],
               ["--method", "ig", "--params", '{"steps": 2}'], ["--method", "vg", "--classes", "1,2"],
               ["--method", "smoothgrad", "--params", '{"n_samples": 3, "seed": 1}'])

    def __init__(self, db: Path, work: Path, n_cases: int = 6):
        super().__init__(daemon=True)
        from test_reliability_helpers import make_checkpoint, make_cohort

        self.db, self.stop = db, threading.Event()
        manifest = make_cohort(work / "cohort", n=n_cases, seed=3)
        frame = pd.read_csv(manifest, dtype=str)
        frame["case_id"] = "load_" + frame["case_id"]  # never collides with the store's own cases
        frame.to_csv(manifest, index=False)
        self.manifest, self.checkpoint = manifest, make_checkpoint(work / "tiny.pt")
        self.exit_codes: list[int] = []
        self.publishes = 0
        self.proc: subprocess.Popen | None = None

    def signature(self):
        try:
            info = self.db.stat()
            return info.st_ino, info.st_mtime_ns, info.st_size
        except OSError:
            return None

    def run(self) -> None:
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        for config in self.CONFIGS:
            if self.stop.is_set():
                break
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agg2exp_core", "--threads", "1", "precompute", "--manifest",
                 str(self.manifest), "--checkpoint", str(self.checkpoint), "--db", str(self.db), "--device", "cpu",
                 *config], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while self.proc.poll() is None and not self.stop.is_set():
                time.sleep(0.2)
            if self.proc.poll() is None:  # stopped mid-run: resumable, so a kill loses nothing
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=30)
            else:
                self.exit_codes.append(self.proc.returncode)

    def _watch(self) -> None:
        last = self.signature()
        while not self.stop.is_set():
            now = self.signature()
            if now != last and now is not None:
                self.publishes += 1
                last = now
            time.sleep(0.1)


async def session(index: int, context, base: str, run_id: str, expected: dict, deadline: float,
                  budget: dict, results: list, rng_seed: int) -> None:
    rng = random.Random(rng_seed + index)
    page = await context.new_page()  # its own websocket, so its own Streamlit session
    try:
        while time.time() < deadline and budget["left"] > 0:
            budget["left"] -= 1
            cohort = rng.choice(FILTERS)
            path = rng.choices([p for p, _ in PAGES], [w for _, w in PAGES])[0]
            url = f"{base}/{path}?{urlencode({'run': run_id, **cohort})}"
            started = time.perf_counter()
            record = {"session": index, "url": url, "ok": False, "error": ""}
            try:
                await page.goto(url, wait_until="domcontentloaded", timeout=90_000)
                caption = page.get_by_text(COUNT).first
                await caption.wait_for(timeout=90_000)
                record["latency"] = time.perf_counter() - started
                text = await caption.inner_text()
                shown = int(COUNT.search(text).group(1))
                want = expected[tuple(sorted(cohort.items()))]
                problems = []
                if shown != want:
                    problems.append(f"shows {shown} cases, the store has {want}")
                if await page.locator('[data-testid="stException"]').count():
                    problems.append("exception box")
                if await page.locator('[data-testid="stAlertContentError"]').count():
                    problems.append("error box: " + (await page.locator('[data-testid="stAlertContentError"]')
                                                     .first.inner_text())[:120])
                record["error"] = "; ".join(problems)
                record["ok"] = not problems
            except Exception as err:  # noqa: BLE001 - a timeout or a broken page is a counted error
                record["latency"] = time.perf_counter() - started
                record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            results.append(record)
    finally:
        await page.close()


async def drive(args, base: str, run_id: str, expected: dict, writer: Writer | None) -> tuple[list, float]:
    from playwright.async_api import async_playwright

    results: list = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        # one context: the pages share the HTTP cache (the app's JavaScript is fetched once),
        # while each page's websocket is a Streamlit session of its own
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        started = time.time()
        deadline = started + args.duration
        budget = {"left": args.max_loads}
        if writer is not None:
            writer.start()
        await asyncio.gather(*(session(i, context, base, run_id, expected, deadline, budget, results, args.seed)
                               for i in range(args.sessions)))
        elapsed = time.time() - started
        await context.close()
        await browser.close()
    return results, elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (bounded)")
    parser.add_argument("--max-loads", type=int, default=600, help="page loads at most (bounded)")
    parser.add_argument("--cases", type=int, default=200, help="cases of the synthetic store")
    parser.add_argument("--db", type=Path, help="copy this store instead of building a synthetic one")
    parser.add_argument("--no-writer", action="store_true", help="no precompute during the load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 64 or not 0 < args.duration <= 600 or not 0 < args.max_loads <= 5000:
        parser.error("sessions 1..64, duration (0, 600] s, max-loads 1..5000")

    work = Path(tempfile.mkdtemp(prefix="agg2exp-load-"))
    db = work / "store" / "load.duckdb"
    db.parent.mkdir()
    if args.db:
        shutil.copyfile(args.db, db)
        with duckdb.connect(str(db), read_only=True) as con:
            run_id = con.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
    else:
        from synthetic_store import build_synthetic_store

        info = build_synthetic_store(db, n_cases=args.cases, seed=0, run_methods=("vg", "smoothgrad"))
        run_id = info["run_ids"]["vg"]
    expected = {tuple(sorted(f.items())): expected_count(db, run_id, f) for f in FILTERS}
    writer = None if args.no_writer else Writer(db, work)

    port = free_port()
    log = open(work / "streamlit.log", "w")
    env = {k: v for k, v in os.environ.items() if k not in ("AGG2EXP_DB", "AGG2EXP_ALLOW_UNAUTHENTICATED")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", HOST,
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--db", str(db)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, server)
        cpu_before = cpu_seconds(server.pid)
        results, elapsed = asyncio.run(drive(args, f"http://{HOST}:{port}", run_id, expected, writer))
        server_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(timeout=60)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    server_log = (work / "streamlit.log").read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    ok = [r for r in results if r["ok"]]
    bad = [r for r in results if not r["ok"]]
    latencies = [r["latency"] for r in ok]
    per_session = [sum(1 for r in results if r["session"] == i) for i in range(args.sessions)]
    print(f"dashboard load test: http://{HOST}:{port} (loopback only), store {db.name} "
          f"({'copy of ' + str(args.db) if args.db else f'{args.cases} synthetic cases'}), run {run_id}")
    print(f"sessions            {args.sessions} concurrent (pages of one headless Chromium, one websocket each)")
    print(f"duration            {elapsed:.1f} s (bounded at {args.duration:g} s / {args.max_loads} loads)")
    print(f"page loads          {len(results)} ({min(per_session)}-{max(per_session)} per session), "
          f"{len(results) / elapsed:.2f} loads/s")
    print(f"errors              {len(bad)} (wrong numbers {sum('shows' in r['error'] for r in bad)}, "
          f"exceptions/error boxes {sum('box' in r['error'] for r in bad)}, "
          f"timeouts/broken pages {sum('Error' in r['error'] for r in bad)}); server tracebacks {tracebacks}")
    print(f"latency             p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
          f"max {max(latencies, default=float('nan')):.2f} s (URL load -> case count shown)")
    print(f"server CPU          {server_cpu:.1f} s in all, {server_cpu / max(len(results), 1):.2f} s per page load "
          f"(the browser and the precompute share the same {os.cpu_count()} cores)")
    if writer is not None:
        print(f"precompute          {len(writer.exit_codes)} runs finished (exit codes {writer.exit_codes}), "
              f"{writer.publishes} snapshots published during the load")
    for r in bad[:10]:
        print(f"  error in session {r['session']}: {r['error']}  [{r['url']}]")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    failed = bool(bad) or tracebacks > 0 or (writer is not None and any(c not in (0,) for c in writer.exit_codes))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

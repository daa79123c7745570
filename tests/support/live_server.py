"""A real Streamlit server of app.py on loopback for the browser tests (tests/e2e/): a free port,
the store, optional extra ``streamlit run`` options (secrets, allowed hosts), its log in ``tmp``."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from dashboard.auth import gates, throttle

ROOT = Path(__file__).resolve().parents[2]
COUNT = re.compile(r"\d+ of \d+ cases")          # the frame's case count: the store is being shown
SIGNIN_DELAY_S = 4      # the servers' wait after a first failed sign-in: room for a slow machine


@contextmanager
def server(db: Path, tmp: Path, *extra: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("AGG2EXP_DB", gates.ALLOW_ENV)}
    env[throttle.DELAY_ENV] = str(SIGNIN_DELAY_S)
    log = open(tmp / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none", *extra, "--", "--db", str(db)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError((tmp / f"streamlit-{port}.log").read_text()[-2000:])
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

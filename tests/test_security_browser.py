"""The access gate on a real server (loopback) in headless Chromium: what AppTest cannot
show -- request headers of a real websocket session and the login form in a browser."""
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

import pytest

from dashboard import auth

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("AGG2EXP_CHROMIUM", "/usr/bin/chromium")
COUNT = re.compile(r"\d+ of \d+ cases")
PASSWORD = "a long team passphrase 42"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]


@contextmanager
def server(db: Path, tmp: Path, *extra: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("AGG2EXP_DB", auth.ALLOW_ENV)}
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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield instance
        instance.close()


def test_open_server_serves_locally_but_refuses_proxied_requests(browser, synthetic_store, tmp_path):
    with server(synthetic_store["path"], tmp_path) as url:
        page = browser.new_page()
        page.goto(url)
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        assert page.get_by_text("Refused").count() == 0
        page.close()
        proxied = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.7"})
        page = proxied.new_page()
        page.goto(url)
        page.get_by_text("Refused: no authentication configured").wait_for(timeout=90_000)
        assert page.get_by_text("reverse proxy").count() >= 1
        assert page.get_by_text(COUNT).count() == 0, "nothing of the store is shown"
        proxied.close()


def test_password_login_in_a_browser(browser, synthetic_store, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[agg2exp_auth]\npassword_hash = "{auth.hash_password(PASSWORD)}"\n')
    with server(synthetic_store["path"], tmp_path, "--secrets.files", str(secrets)) as url:
        context = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.7"})  # as behind nginx
        page = context.new_page()
        page.goto(url)
        field = page.get_by_label("Team password")
        field.wait_for(timeout=90_000)
        assert page.get_by_text(COUNT).count() == 0
        field.fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong password").wait_for(timeout=60_000)
        assert page.get_by_text(COUNT).count() == 0
        page.get_by_label("Team password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        context.close()

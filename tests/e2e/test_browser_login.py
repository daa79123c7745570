"""The access gate on a real server (loopback) in headless Chromium: what AppTest cannot
show -- request headers of a real websocket session, the login form in a browser, and
what Streamlit's own Markdown renderer makes of values from the URL.

DNS rebinding is reproduced as the browser lives it: Chromium resolves ``rebind.example``
to 127.0.0.1 (``--host-resolver-rules``), so the page's origin, ``Host`` and ``Origin`` are
``rebind.example`` while the bytes go to the loopback server.
"""
from __future__ import annotations

import base64
import http.client
import os
import time
import urllib.parse
from pathlib import Path

import pytest

from dashboard.auth import passwords
from live_server import COUNT, SIGNIN_DELAY_S, server

CHROMIUM = os.environ.get("AGG2EXP_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long team passphrase 42"
REBIND = "rebind.example"
HOSTILE_RUN = "[Sign in again](https://evil.example) ![x](https://evil.example/t.png) https://evil.example/bare"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=[f"--host-resolver-rules=MAP {REBIND} 127.0.0.1"])
        yield instance
        instance.close()


def websocket_status(url: str, host: str, origin: str) -> int:
    """HTTP status of a websocket upgrade to Streamlit's /_stcore/stream with these Host/Origin headers."""
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=20)
    try:
        conn.putrequest("GET", "/_stcore/stream", skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": host, "Origin": origin, "Upgrade": "websocket", "Connection": "Upgrade",
                            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": "streamlit",
                            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_open_server_serves_locally_but_refuses_proxied_requests(browser, synthetic_store, tmp_path):
    with server(synthetic_store["path"], tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        # the shipped .streamlit/config.toml (server.allowedHosts) closes foreign names at the websocket
        assert websocket_status(url, f"127.0.0.1:{port}", url) == 101
        assert websocket_status(url, f"localhost:{port}", f"http://localhost:{port}") == 101
        assert websocket_status(url, f"{REBIND}:{port}", f"http://{REBIND}:{port}") == 403
        assert websocket_status(url, f"127.0.0.1:{port}", "https://agg2exp.hospital.org") == 403
        page = browser.new_page()
        page.goto(url + "/?" + urllib.parse.urlencode({"run": HOSTILE_RUN}))
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        assert page.get_by_text("Refused").count() == 0
        # a URL value is shown as the characters it is, by Streamlit's own Markdown renderer
        alert = page.locator("[data-testid='stAlert']", has_text="Ignored URL parameter")
        alert.first.wait_for(timeout=60_000)
        assert "[Sign in again](https://evil.example)" in alert.first.inner_text()
        assert page.locator("a[href*='evil.example'], img[src*='evil.example']").count() == 0
        page.close()
        proxied = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.7"})
        page = proxied.new_page()
        page.goto(url)
        page.get_by_text("Refused: no authentication configured").wait_for(timeout=90_000)
        assert page.get_by_text("reverse proxy").count() >= 1
        assert page.get_by_text(COUNT).count() == 0, "nothing of the store is shown"
        proxied.close()


def test_dns_rebinding_is_refused_by_the_app(browser, synthetic_store, tmp_path):
    """Even where Streamlit accepts any Host (another config, another working folder), a page of
    another site rebound to 127.0.0.1 gets the refusal page, and the same server serves locally."""
    with server(synthetic_store["path"], tmp_path, "--server.allowedHosts", "*") as url:
        port = url.rsplit(":", 1)[1]
        assert websocket_status(url, f"{REBIND}:{port}", f"http://{REBIND}:{port}") == 101, "Streamlit lets it in"
        page = browser.new_page()
        page.goto(f"http://{REBIND}:{port}/")
        page.get_by_text("Refused: no authentication configured").wait_for(timeout=90_000)
        assert page.get_by_text("DNS rebinding").count() >= 1
        assert page.get_by_text(COUNT).count() == 0, "nothing of the store is shown"
        page.goto(f"http://localhost:{port}/")
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        assert page.get_by_text("Refused").count() == 0
        page.close()


def test_password_login_in_a_browser(browser, synthetic_store, tmp_path):
    """Sign-in in a browser, and the throttle across sessions: a fresh browser session of the
    same client address (uvicorn takes it from X-Forwarded-For of the local proxy) must wait."""
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[agg2exp_auth]\npassword_hash = "{passwords.hash_password(PASSWORD)}"\n')
    behind_nginx = {"X-Forwarded-For": "203.0.113.7"}

    def sign_in_page(url: str):
        context = browser.new_context(extra_http_headers=behind_nginx)
        page = context.new_page()
        page.goto(url)
        page.get_by_label("Team password").wait_for(timeout=90_000)
        return context, page

    def submit(page, password: str) -> None:
        page.get_by_label("Team password").fill(password)
        page.get_by_role("button", name="Sign in").click()

    with server(synthetic_store["path"], tmp_path, "--secrets.files", str(secrets)) as url:
        first, page = sign_in_page(url)
        second, other = sign_in_page(url)                   # another browser session, same address
        assert page.get_by_text(COUNT).count() == 0
        submit(page, "not the password")
        page.get_by_text("Wrong password").wait_for(timeout=60_000)
        submit(other, PASSWORD)                             # at once: refused unchecked, even the right one
        other.get_by_text("Too many failed sign-ins").wait_for(timeout=60_000)
        assert page.get_by_text(COUNT).count() == 0 and other.get_by_text(COUNT).count() == 0
        time.sleep(SIGNIN_DELAY_S + 0.5)                    # what the first failure costs the address
        submit(page, PASSWORD)
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        first.close()
        second.close()

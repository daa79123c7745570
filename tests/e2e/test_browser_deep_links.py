"""Every page behind the password on a real server (issue #24): a deep link opened by a fresh
browser, before any session ran, shows the login form and nothing of the data; after login the
sidebar shows the site map's sections.

Why a browser: AppTest always starts at app.py, so it cannot show what a first request for
``/heat_map`` on a freshly started server runs (with Streamlit's legacy ``pages/`` folder it ran
the page without the gate).
"""
from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path

import pytest

from dashboard.auth import passwords
from dashboard.widgets.navigation import SITE
from live_server import COUNT, server

CHROMIUM = os.environ.get("AGG2EXP_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long team passphrase 43"
DATA = "[data-testid='stPlotlyChart'], .js-plotly-plot, [data-testid='stDataFrame'], [data-testid='stImage']"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield instance
        instance.close()


def deep_links(case_id: str) -> list[str]:
    links = ["/"] + [f"/{spec.key}" for spec in SITE]
    return links + [f"/case_viewer?{urllib.parse.urlencode({'case': case_id})}",
                    f"/heat_map?{urllib.parse.urlencode({'case': case_id})}"]


def settled(page) -> None:
    """Wait until the script run is over (Streamlit's running indicator gone), then a little more."""
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=60_000)
    time.sleep(0.5)


def test_every_deep_link_shows_only_the_login_form(chromium, synthetic_store, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[agg2exp_auth]\npassword_hash = "{passwords.hash_password(PASSWORD)}"\n')
    case_id = synthetic_store["case_ids"][0]
    with server(synthetic_store["path"], tmp_path, "--secrets.files", str(secrets)) as url:
        for link in deep_links(case_id):          # the server's first requests: no session ran before
            context = chromium.new_context()
            page = context.new_page()
            page.goto(url + link)
            page.get_by_label("Team password").wait_for(timeout=90_000)
            settled(page)
            body = page.locator("body").inner_text()
            assert page.locator(DATA).count() == 0, f"{link}: data drawn before login"
            assert case_id not in body and not COUNT.search(body), f"{link}: store content before login"
            assert page.get_by_role("button", name="Sign in").count() == 1, link
            context.close()

        context = chromium.new_context()
        page = context.new_page()
        page.goto(url + "/heat_map")
        page.get_by_label("Team password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text(COUNT).first.wait_for(timeout=90_000)
        sidebar = page.locator("[data-testid='stSidebar']")
        for section in dict.fromkeys(spec.section for spec in SITE):
            sidebar.get_by_text(section, exact=True).first.wait_for(timeout=30_000)
        for spec in SITE:
            assert sidebar.get_by_role("link", name=spec.title).count() >= 1, spec.title
        page.locator(DATA).first.wait_for(timeout=90_000)      # after login the data is drawn
        assert urllib.parse.urlsplit(page.url).path == "/heat_map", "the deep link's page survives the login"
        page.get_by_text("Global heat map").first.wait_for(timeout=30_000)
        context.close()

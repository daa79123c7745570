"""End-to-end in a real browser: streamlit run + headless Chromium (Playwright).

Loads the app, changes the cohort filter, checks that the heat map renders and that a
figure downloads as a real PNG. With ``AGG2EXP_SCREENSHOTS=1`` it also saves a screenshot
of every page to docs/screenshots/ (or ``$AGG2EXP_SCREENSHOT_DIR``), on ``$AGG2EXP_DB`` when set,
else on the synthetic store:

    AGG2EXP_SCREENSHOTS=1 AGG2EXP_DB=data/demo.duckdb pytest -m browser tests/e2e/test_browser.py
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOT_DIR = Path(os.environ.get("AGG2EXP_SCREENSHOT_DIR") or ROOT / "docs" / "screenshots")
# (file name, URL path and query) of the screenshots, in reading order.
SCREENSHOTS = [
    ("01_overview.png", ""),
    ("02_heat_map.png", "heat_map?order=cluster"),
    ("03_heat_map_compare.png", "heat_map?view=compare"),
    ("04_knowledge_graph.png", "knowledge_graph"),
    ("05_class_distributions.png", "class_distributions"),
    ("06_context_mass.png", "context_mass"),
    ("07_outliers.png", "outliers"),
    ("08_case_viewer.png", "case_viewer?3d=1"),
    ("09_methods.png", "methods"),
    ("10_drift.png", "drift"),
    ("11_report.png", "report"),
    ("12_failure_modes.png", "failure_modes"),
    ("13_quality.png", "quality"),
]
TIMEOUT_MS = 90_000


def _missing_requirement() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed"
    return None


@pytest.fixture(scope="module")
def server(request):
    """A streamlit server on a free port, serving $AGG2EXP_DB or the synthetic store."""
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)
    db = os.environ.get("AGG2EXP_DB") or str(request.getfixturevalue("synthetic_store")["path"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = open(ROOT / ".pytest_cache" / "streamlit-browser-test.log", "w") if (ROOT / ".pytest_cache").exists() \
        else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--", "--db", db],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start (exit code {process.poll()})")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        if log is not subprocess.DEVNULL:
            log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _settle(page) -> None:
    """Wait until Streamlit has finished running the script and Plotly has drawn."""
    page.wait_for_selector("h1", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)


def test_filter_change_heat_map_and_figure_download(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server + "/")
    page.wait_for_selector("h1:has-text('Overview')")
    page.get_by_role("link", name="Global heat map").click()
    page.wait_for_selector("h1:has-text('Global heat map')")
    page.wait_for_selector(".js-plotly-plot")
    _settle(page)

    # Change the filter: drop one value of the first multiselect that has several (e.g. a dataset).
    selects = page.locator("[data-testid='stSidebar'] [data-testid='stMultiSelect']")
    chosen = next((selects.nth(i) for i in range(selects.count())
                   if selects.nth(i).locator("button[aria-label^='Remove ']").count() >= 2), None)
    if chosen is None:
        pytest.skip("no filter with two values in this store")
    chosen.locator("button[aria-label^='Remove ']").last.click()
    page.wait_for_function("() => /(dataset|split|sex)=/.test(window.location.search)")
    _settle(page)
    page.wait_for_selector(".js-plotly-plot .hm, .js-plotly-plot .heatmaplayer image, .js-plotly-plot image",
                           state="attached")
    captions = page.locator("[data-testid='stCaptionContainer']").all_inner_texts()
    assert any("cohort:" in c and "all cases" not in c for c in captions), captions

    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        page.get_by_role("button", name="PNG").first.click()
    download = download_info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    assert download.suggested_filename.startswith("agg2exp_global-heatmap_abs_group_")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()


@pytest.mark.skipif(os.environ.get("AGG2EXP_SCREENSHOTS") != "1", reason="set AGG2EXP_SCREENSHOTS=1 to save screenshots")
def test_screenshots_of_every_page(server, browser):
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    for name, path in SCREENSHOTS:
        page.set_viewport_size({"width": 1600, "height": 1000})
        page.goto(f"{server}/{path}")
        _settle(page)
        try:
            page.wait_for_selector(".js-plotly-plot", timeout=15_000)
        except Exception:  # noqa: BLE001 - empty states have no figure; shoot them anyway
            pass
        _settle(page)
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
        page.set_viewport_size({"width": 1600, "height": int(min(max(height + 80, 1000), 4200))})
        page.wait_for_timeout(1200)
        page.screenshot(path=str(SCREENSHOT_DIR / name))
        assert (SCREENSHOT_DIR / name).stat().st_size > 10_000
    page.close()

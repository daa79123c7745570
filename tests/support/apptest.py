"""The one AppTest start-up of the dashboard tests: the real app.py on a store, a page, URL parameters."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 90


def open_app(monkeypatch, db, page: str | None = None, params: dict | None = None) -> AppTest:
    """Run the app on a store, optionally starting on a page with URL query parameters."""
    monkeypatch.setenv("AGG2EXP_DB", str(db))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")  # real exception messages
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.query_params.update(params or {})
    app.run()
    if page and page != "overview":
        app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def texts(app: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(app, kind)]


def charts(app: AppTest) -> list:
    return app.get("plotly_chart")


def case_count_caption(app: AppTest) -> str:
    return next(c for c in texts(app, "caption") if c.startswith("Store "))

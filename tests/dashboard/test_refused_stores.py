"""A store that carries SQL of its own (issue #21) reaches the store-problem page, named in
one line, and nothing of it is read: not the file its macro would read, not a statistic."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest import ROOT, TIMEOUT, texts
from dashboard import data
from synthetic_store import build_synthetic_store
from untrusted_stores import EXTRA_VIEW, SECRET, SHADOWED_AVG, planted, reading_macro, secrets_file


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    return build_synthetic_store(tmp_path_factory.mktemp("clean") / "clean.duckdb", n_cases=8, with_artifacts=False,
                                 eval_methods=("vg",))


def every_text(app: AppTest) -> str:
    kinds = ("title", "header", "subheader", "caption", "markdown", "warning", "error", "info", "success", "code",
             "text", "dataframe", "table")
    return " ".join(str(getattr(e, "value", e)) for kind in kinds for e in getattr(app, kind, []))


def open_on(monkeypatch, path, page: str | None = None) -> AppTest:
    monkeypatch.setenv("AGG2EXP_DB", str(path))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    data.st.cache_data.clear()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.run()
    if page:
        app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


@pytest.mark.parametrize("statement,name", [(SHADOWED_AVG, "macro avg"), (EXTRA_VIEW, "view cohort_view")])
def test_a_store_defining_objects_shows_the_store_problem_naming_it(monkeypatch, clean, tmp_path, statement, name):
    path = planted(clean["path"], tmp_path / "s.duckdb", statement)
    app = open_on(monkeypatch, path)
    shown = " ".join(texts(app, "title") + texts(app, "header") + texts(app, "subheader") + texts(app, "markdown")
                     + texts(app, "error") + texts(app, "info"))
    assert "The store was refused" in shown and name in shown, shown
    assert not app.get("plotly_chart"), "no figure drawn from a refused store"


@pytest.mark.parametrize("page", [None, "methods"])
def test_a_macro_reading_the_secrets_never_shows_them(monkeypatch, clean, tmp_path, page):
    """The issue's attack: ``lower()`` (called by the Methods page's query) redefined to read the secrets file."""
    secrets = secrets_file(tmp_path)
    path = planted(clean["path"], tmp_path / "s.duckdb", reading_macro(secrets))
    app = open_on(monkeypatch, path, page)
    assert SECRET not in every_text(app)
    assert "macro lower" in every_text(app)

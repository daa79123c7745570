"""Fixtures of the access-control tests: a hash of the known password, a fresh throttle per test,
and the real app.py under AppTest counting every query of the store."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from access import PASSWORD, Clock
from agg2exp_core.store.queries import connection
from dashboard import data
from dashboard.auth import gates, passwords, throttle

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def password_hash() -> str:
    return passwords.hash_password(PASSWORD)


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch) -> Clock:
    """Every test starts with no failed sign-ins on record (the throttle is per process)."""
    clock = Clock()
    monkeypatch.setattr(gates, "_THROTTLE", throttle.PasswordThrottle(clock=clock))
    return clock


@pytest.fixture
def app_on_store(monkeypatch, synthetic_store):
    """An AppTest of app.py on the synthetic store, counting every query of the store."""
    monkeypatch.setenv("AGG2EXP_DB", str(synthetic_store["path"]))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    monkeypatch.delenv(gates.ALLOW_ENV, raising=False)
    queries = []
    original = connection.fetch
    monkeypatch.setattr(connection, "fetch", lambda *a, **k: queries.append(a[1]) or original(*a, **k))

    def make(secrets=None, user=None):
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        if secrets:
            app.secrets.update(secrets)
        if user is not None:
            app.user = user
        return app

    data.st.cache_data.clear()
    return make, queries

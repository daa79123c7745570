"""The gate in front of the real app (AppTest): nothing of the store is read before access is granted."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from streamlit.testing.v1.util import patch_config_options

from access import OIDC, PASSWORD, errors, served
from dashboard.auth import gates, passwords, throttle

ROOT = Path(__file__).resolve().parents[3]

def test_local_use_needs_no_login(app_on_store):
    make, queries = app_on_store
    app = make().run()
    assert not app.exception and served(app) and queries


@pytest.mark.parametrize("address", ["0.0.0.0", "10.20.30.40", "::"])
def test_public_address_without_auth_is_refused(app_on_store, monkeypatch, address):
    make, queries = app_on_store
    app = make()
    with patch_config_options({"server.address": address}):
        app.run()
    assert not app.exception and not served(app) and queries == []
    assert "Refused: no authentication configured" in errors(app) and address in errors(app)
    monkeypatch.setenv(gates.ALLOW_ENV, "1")
    with patch_config_options({"server.address": address}):
        app.run()
    assert served(app), "explicitly allowed"


LOCAL = {"hosts": ("127.0.0.1:8501",), "origins": ("http://127.0.0.1:8501",)}


@pytest.mark.parametrize("facts, words", [
    (gates.RequestFacts(True, None, True, **LOCAL), "reverse proxy"),
    (gates.RequestFacts(True, "198.51.100.4", False, **LOCAL), "198.51.100.4"),
    (gates.RequestFacts(True, None, False, ("rebind.example:8501",), ("http://rebind.example:8501",)), "DNS rebinding"),
    (gates.RequestFacts(True, None, False, ("127.0.0.1:8501",), ("https://agg2exp.hospital.org",)), "Origin"),
    (gates.RequestFacts(True, None, False, (), ()), "Host"),
])
def test_proxied_remote_or_foreign_requests_without_auth_are_refused(app_on_store, monkeypatch, facts, words):
    make, queries = app_on_store
    monkeypatch.setattr(gates, "_request_facts", lambda: facts)
    app = make().run()
    assert not served(app) and queries == [] and words in errors(app)
    monkeypatch.setenv(gates.ALLOW_ENV, "1")
    assert served(make().run()), "explicitly allowed"


def test_local_request_with_loopback_names_is_served(app_on_store, monkeypatch):
    make, _ = app_on_store
    for host, origin in (("localhost:8501", "http://localhost:8501"), ("[::1]:8501", "http://[::1]:8501"),
                         ("127.0.0.1:8501", None)):
        facts = gates.RequestFacts(True, None, False, (host,), () if origin is None else (origin,))
        monkeypatch.setattr(gates, "_request_facts", lambda facts=facts: facts)
        assert served(make().run()), host


def test_the_gate_is_imported_unconditionally(app_on_store, monkeypatch):
    """app.py, the frame every page runs in, imports dashboard.auth at the top; nothing can make it skip it."""
    for path in (ROOT / "app.py",):
        tree = ast.parse(path.read_text())
        assert "find_spec" not in path.read_text(), path
        assert any(isinstance(node, ast.ImportFrom) and node.module == "dashboard.auth" for node in tree.body), path
    make, queries = app_on_store
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "dashboard.auth" else real(name, *a, **k))
    app = make()
    with patch_config_options({"server.address": "0.0.0.0"}):
        app.run()
    assert not served(app) and queries == [] and "Refused" in errors(app)


def test_password_gate(app_on_store, password_hash, fresh_throttle):
    make, queries = app_on_store
    app = make({"agg2exp_auth": {"password_hash": password_hash}})
    with patch_config_options({"server.address": "0.0.0.0"}):  # a shared server
        app.run()
        assert not served(app) and queries == []
        assert [t.label for t in app.text_input] == ["Team password"]
        app.text_input[0].input("wrong password!")
        app.button[0].click().run()
        assert "Wrong password" in errors(app) and "possible in 1 s" in errors(app)
        assert not served(app) and queries == []
        fresh_throttle.now += 1.0
        app.text_input[0].input(PASSWORD)
        app.button[0].click().run()
        assert not app.exception and served(app) and queries
        assert "_agg2exp_password" not in app.session_state, "the password is not kept in the session"
        # a reload of the session stays signed in; signing out closes it again
        app.run()
        assert served(app)
        sign_out = [b for b in app.button if b.label == "Sign out"]
        sign_out[0].click().run()
        assert not served(app) and [t.label for t in app.text_input] == ["Team password"]


def test_new_sessions_share_the_throttle_of_their_address(app_on_store, password_hash, fresh_throttle, monkeypatch):
    """N fresh browser sessions make one guess, not N: the delay belongs to the address, per process."""
    make, queries = app_on_store
    checks = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda p, e: checks.append(p) or real(p, e))
    secrets = {"agg2exp_auth": {"password_hash": password_hash}}

    def sign_in(password: str):
        app = make(secrets).run()
        app.text_input[0].input(password)
        app.button[0].click().run()
        return app

    assert "Wrong password" in errors(sign_in("wrong password!")) and len(checks) == 1
    for guess in ("second guess 123", "third guess 1234", PASSWORD):
        app = sign_in(guess)
        assert "Too many failed sign-ins" in errors(app) and not served(app), guess
    assert len(checks) == 1 and queries == [], "throttled attempts run no hash"
    fresh_throttle.now += 1.0
    assert "possible in 2 s" in errors(sign_in("second guess 123")), "the delay grows per address"
    fresh_throttle.now += 2.0
    assert served(sign_in(PASSWORD)) and len(checks) == 3


def test_short_passwords_never_open_the_app(app_on_store, monkeypatch):
    """A hash made of a short password (bypassing hash_password) opens nothing; short guesses cost no hash."""
    make, queries = app_on_store
    monkeypatch.setattr(passwords, "MIN_PASSWORD_LENGTH", 1)
    short_hash = passwords.hash_password("tiny pw")
    monkeypatch.undo()
    checks = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda p, e: checks.append(p) or real(p, e))
    monkeypatch.setattr(gates, "_THROTTLE", throttle.PasswordThrottle(base_delay=0.0))
    app = make({"agg2exp_auth": {"password_hash": short_hash}}).run()
    app.text_input[0].input("tiny pw")
    app.button[0].click().run()
    assert not served(app) and queries == [] and checks == []
    assert "Wrong password (team passwords have at least 12 characters)" in errors(app)


def test_changed_password_ends_old_sessions(app_on_store, password_hash):
    make, _ = app_on_store
    app = make({"agg2exp_auth": {"password_hash": password_hash}})
    app.run()
    app.text_input[0].input(PASSWORD)
    app.button[0].click().run()
    assert served(app)
    app.secrets["agg2exp_auth"] = {"password_hash": passwords.hash_password("another long passphrase")}
    app.run()
    assert not served(app)


@pytest.mark.parametrize("secrets, words", [
    ({"agg2exp_auth": {"password_hash": "not-a-hash"}}, "malformed"),
    ({"agg2exp_auth": {"password": PASSWORD}}, "not a plain"),
    ({"auth": OIDC}, "allow-list"),
])
def test_bad_configuration_fails_closed(app_on_store, secrets, words):
    make, queries = app_on_store
    app = make(secrets).run()
    assert not served(app) and queries == [] and words in errors(app)
    assert "Access configuration error" in errors(app)


def test_oidc_gate(app_on_store, monkeypatch):
    make, queries = app_on_store
    secrets = {"auth": OIDC, "agg2exp_auth": {"allowed_domains": ["hospital.org"]}}
    import streamlit.auth_util
    monkeypatch.setattr(streamlit.auth_util, "is_authlib_installed", lambda: False)
    app = make(secrets, user={}).run()  # without Authlib: fail closed
    assert not served(app) and "Authlib" in errors(app)
    monkeypatch.setattr(streamlit.auth_util, "is_authlib_installed", lambda: True)
    app = make(secrets, user={"is_logged_in": False}).run()
    assert not served(app) and queries == [] and [b.label for b in app.button] == ["Log in"]
    app = make(secrets, user={"is_logged_in": True, "email": "eve@gmail.com", "email_verified": True}).run()
    assert not served(app) and "may not open this dashboard" in errors(app) and queries == []
    for unverified in ({}, {"email_verified": "true"}):
        app = make(secrets, user={"is_logged_in": True, "email": "ana@hospital.org", **unverified}).run()
        assert not served(app) and "email_verified" in errors(app) and queries == [], unverified
    hostile = "[Sign in again](https://evil.example)@evil.example"
    app = make(secrets, user={"is_logged_in": True, "email": hostile, "email_verified": True}).run()
    assert f"`{hostile}`" in errors(app), "the address is shown as literal text"
    app = make(secrets, user={"is_logged_in": True, "email": "ana@hospital.org", "email_verified": True}).run()
    assert not app.exception and served(app)
    assert any("ana@hospital.org" in str(c.value) for c in app.sidebar.caption)


@pytest.mark.parametrize("outcome, words", [
    ("wait", "from your address: try again in 42 s"), ("busy", "checking other sign-ins"),
    ("full", "too many addresses after failed sign-ins to take a new one (a guessing attack?): try again in 42 s"),
    ("budget", "on this server as a whole (a guessing attack?): nobody's password is checked"),
])
def test_unchecked_sign_ins_say_why_in_one_line(outcome, words):
    text = gates._sign_in_error(throttle.Attempt(outcome, 41.2), PASSWORD)
    assert words in text and text.endswith("This attempt was not checked.") and "\n" not in text

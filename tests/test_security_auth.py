"""Access to the shared URL: password hashes, the configuration rules, and the gate in
front of the real app (AppTest): nothing of the store is read before access is granted."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from dashboard import auth, data

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
COOKIE = "c" * 40
OIDC = {"redirect_uri": "https://agg2exp.example.org/oauth2callback", "cookie_secret": COOKIE,
        "client_id": "id", "client_secret": "secret",
        "server_metadata_url": "https://login.example.org/.well-known/openid-configuration"}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


# ------------------------------------------------------------------ hashes
@pytest.mark.parametrize("scheme", ["scrypt", "pbkdf2_sha256"])
def test_password_hash_round_trip(scheme):
    encoded = auth.hash_password(PASSWORD, scheme)
    assert encoded.startswith(scheme + "$") and PASSWORD not in encoded
    assert auth.verify_password(PASSWORD, encoded)
    for wrong in ("", PASSWORD + " ", PASSWORD.upper(), "correct horse battery stapl"):
        assert not auth.verify_password(wrong, encoded)
    assert auth.hash_password(PASSWORD, scheme) != encoded, "a fresh salt every time"


@pytest.mark.parametrize("encoded", [
    "", "plain-text-password", "scrypt$1$8$1$AAAA$BBBB", "scrypt$16384$8$1$not base64!$AAAA",
    "pbkdf2_sha256$10$c2FsdHNhbHQ=$" + "A" * 44, "md5$abc", "scrypt$16384$8$1$YQ==$YQ==",
])
def test_malformed_hashes_are_configuration_errors(encoded):
    with pytest.raises(ValueError, match="password_hash"):
        auth.verify_password(PASSWORD, encoded)
    config = auth.parse_config({"agg2exp_auth": {"password_hash": encoded}})
    if encoded:
        assert config.mode == "password" and config.problem
    else:  # an empty hash is no password: the loopback-only rules apply
        assert config.mode == "none"


def test_hash_password_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                         input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    secret = tomllib.loads(run.stdout)["agg2exp_auth"]["password_hash"]
    assert auth.verify_password(PASSWORD, secret) and PASSWORD not in run.stdout
    short = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                           input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 12" in short.stderr and short.stdout == ""


def test_secrets_example_is_valid_and_holds_no_usable_secret():
    example = tomllib.loads((ROOT / ".streamlit" / "secrets.toml.example").read_text())
    assert set(example) >= {"agg2exp_auth"}
    config = auth.parse_config(example)
    assert config.mode in ("none", "password", "oidc")
    ignored = subprocess.run(["git", "check-ignore", ".streamlit/secrets.toml"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, ".streamlit/secrets.toml must be git-ignored"


# ------------------------------------------------------------------ the rules
def test_configuration_rules(password_hash):
    assert auth.parse_config({}).mode == "none"
    assert auth.parse_config({"agg2exp_auth": {"password_hash": password_hash}}) == \
        auth.AuthConfig("password", password_hash=password_hash)
    for weak in ({"password": PASSWORD}, {"password_sha256": "ab" * 32, "password_salt": "x"}):
        assert "password_hash" in auth.parse_config({"agg2exp_auth": weak}).problem
    assert "allow-list" in auth.parse_config({"auth": OIDC}).problem, "OIDC without an allow-list fails closed"
    ok = auth.parse_config({"auth": OIDC, "agg2exp_auth": {"allowed_domains": ["@Hospital.org"]}})
    assert ok.mode == "oidc" and not ok.problem and ok.provider is None and ok.allowed_domains == ("hospital.org",)
    named = {k: v for k, v in OIDC.items() if k in ("redirect_uri", "cookie_secret")}
    named["microsoft"] = {k: OIDC[k] for k in ("client_id", "client_secret", "server_metadata_url")}
    cfg = auth.parse_config({"auth": named, "agg2exp_auth": {"allow_any_identity": True}})
    assert cfg.provider == "microsoft" and cfg.providers == ("microsoft",) and not cfg.problem
    assert "cookie_secret" in auth.parse_config({"auth": {**OIDC, "cookie_secret": ""}}).problem
    assert "too short" in auth.parse_config({"auth": {**OIDC, "cookie_secret": "xxx"},
                                             "agg2exp_auth": {"allow_any_identity": True}}).problem
    assert "no identity provider" in auth.parse_config(
        {"auth": {"redirect_uri": "x", "cookie_secret": COOKIE}}).problem
    # OIDC wins over a password when both are configured
    both = auth.parse_config({"auth": OIDC, "agg2exp_auth": {"password_hash": password_hash,
                                                             "allowed_emails": ["a@b.org"]}})
    assert both.mode == "oidc"


def test_allow_list():
    cfg = auth.AuthConfig("oidc", allowed_emails=("alice@partner.org",), allowed_domains=("hospital.org",))
    assert auth.allowed_identity(cfg, {"email": "Bob@Hospital.org"})
    assert auth.allowed_identity(cfg, {"email": "alice@partner.org", "email_verified": True})
    assert not auth.allowed_identity(cfg, {"email": "eve@partner.org"})
    assert not auth.allowed_identity(cfg, {"email": "bob@hospital.org", "email_verified": False})
    assert not auth.allowed_identity(cfg, {"email": "bob@hospital.org.evil.com"})
    assert not auth.allowed_identity(cfg, {"email": "hospital.org"})
    assert not auth.allowed_identity(cfg, {"name": "no email"})
    assert auth.allowed_identity(auth.AuthConfig("oidc", allow_any_identity=True), {})


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("unix:///run/agg2exp.sock", True), ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
    ("10.0.0.5", False), ("example.org", False), ("127.0.0.1.nip.io", False),
])
def test_loopback_addresses(address, loopback):
    assert auth.is_loopback(address) is loopback


def test_unauthenticated_refusal_rules():
    refuse = auth.unauthenticated_refusal
    assert refuse("127.0.0.1", None, False, allow=False) is None, "local use needs no login"
    assert refuse(None, None, False, allow=False) is None, "all-interfaces bind, local browser"
    assert "0.0.0.0" in refuse("0.0.0.0", None, False, allow=False)
    assert "10.1.2.3" in refuse("10.1.2.3", None, False, allow=False)
    assert "reverse proxy" in refuse("127.0.0.1", None, True, allow=False)
    assert "203.0.113.7" in refuse(None, "203.0.113.7", False, allow=False)
    for case in (("0.0.0.0", None, False), ("127.0.0.1", None, True), (None, "203.0.113.7", False)):
        assert refuse(*case, allow=True) is None, "AGG2EXP_ALLOW_UNAUTHENTICATED=1 overrides"


# ------------------------------------------------------------------ the gate in front of the app
@pytest.fixture
def app_on_store(monkeypatch, synthetic_store):
    """An AppTest of app.py on the synthetic store, counting every query of the store."""
    monkeypatch.setenv("AGG2EXP_DB", str(synthetic_store["path"]))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    monkeypatch.delenv(auth.ALLOW_ENV, raising=False)
    queries = []
    original = data.query
    monkeypatch.setattr(data, "query", lambda *a, **k: queries.append(a[1]) or original(*a, **k))

    def make(secrets=None, user=None):
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        if secrets:
            app.secrets.update(secrets)
        if user is not None:
            app.user = user
        return app

    data.st.cache_data.clear()
    return make, queries


def served(app) -> bool:
    return any(str(c.value).startswith("Store ") for c in app.caption)


def errors(app) -> str:
    return " ".join(str(e.value) for e in app.error) + " ".join(str(m.value) for m in app.markdown)


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
    monkeypatch.setenv(auth.ALLOW_ENV, "1")
    with patch_config_options({"server.address": address}):
        app.run()
    assert served(app), "explicitly allowed"


@pytest.mark.parametrize("facts, words", [((None, True), "reverse proxy"), (("198.51.100.4", False), "198.51.100.4")])
def test_proxied_or_remote_requests_without_auth_are_refused(app_on_store, monkeypatch, facts, words):
    make, queries = app_on_store
    monkeypatch.setattr(auth, "_request_facts", lambda: facts)
    app = make().run()
    assert not served(app) and queries == [] and words in errors(app)


def test_password_gate(app_on_store, password_hash, monkeypatch):
    make, queries = app_on_store
    monkeypatch.setattr(auth.time, "sleep", lambda s: None)  # the failure delay
    app = make({"agg2exp_auth": {"password_hash": password_hash}})
    with patch_config_options({"server.address": "0.0.0.0"}):  # a shared server
        app.run()
        assert not served(app) and queries == []
        assert [t.label for t in app.text_input] == ["Team password"]
        app.text_input[0].input("wrong password!")
        app.button[0].click().run()
        assert "Wrong password" in errors(app) and not served(app) and queries == []
        assert app.session_state["_agg2exp_auth_failures"] == 1
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


def test_changed_password_ends_old_sessions(app_on_store, password_hash):
    make, _ = app_on_store
    app = make({"agg2exp_auth": {"password_hash": password_hash}})
    app.run()
    app.text_input[0].input(PASSWORD)
    app.button[0].click().run()
    assert served(app)
    app.secrets["agg2exp_auth"] = {"password_hash": auth.hash_password("another long passphrase")}
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
    app = make(secrets, user={"is_logged_in": True, "email": "eve@gmail.com"}).run()
    assert not served(app) and "may not open this dashboard" in errors(app) and queries == []
    app = make(secrets, user={"is_logged_in": True, "email": "ana@hospital.org", "email_verified": True}).run()
    assert not app.exception and served(app)
    assert any("ana@hospital.org" in str(c.value) for c in app.sidebar.caption)

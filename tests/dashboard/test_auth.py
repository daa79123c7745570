"""Access to the shared URL: password hashes, the configuration rules, and the gate in
front of the real app (AppTest): nothing of the store is read before access is granted."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from agg2exp_core.store.queries import connection
from dashboard import auth, data

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
COOKIE = "c" * 40
OIDC = {"redirect_uri": "https://agg2exp.example.org/oauth2callback", "cookie_secret": COOKIE,
        "client_id": "id", "client_secret": "secret",
        "server_metadata_url": "https://login.example.org/.well-known/openid-configuration"}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


class Clock:
    """A settable clock for the throttle."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch) -> Clock:
    """Every test starts with no failed sign-ins on record (the throttle is per process)."""
    clock = Clock()
    monkeypatch.setattr(auth, "_THROTTLE", auth.PasswordThrottle(clock=clock))
    return clock


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
    assert config.mode == "password" and config.problem, "an empty hash fails closed too"


def test_hash_password_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                         input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    secret = tomllib.loads(run.stdout)["agg2exp_auth"]["password_hash"]
    assert auth.verify_password(PASSWORD, secret) and PASSWORD not in run.stdout
    short = subprocess.run([sys.executable, "-m", "dashboard.auth", "hash-password", "--stdin"], cwd=ROOT,
                           input="short\n", capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "at least 12" in short.stderr and short.stdout == ""
    with pytest.raises(ValueError, match="at least 12"):
        auth.hash_password("short")


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


@pytest.mark.parametrize("secrets, words", [
    ({"agg2exp_auth": {"password_hash": ""}}, "password_hash is empty"),
    ({"agg2exp_auth": {"password_hash": "   "}}, "password_hash is empty"),
    ({"agg2exp_auth": {"password_hash": 12345}}, "password_hash is empty"),
    ({"agg2exp_auth": {"allowed_emails": ["a@hospital.org"]}}, "no [auth] section"),
    ({"agg2exp_auth": {"allowed_domains": "hospital.org"}}, "no [auth] section"),
    ({"agg2exp_auth": {"allow_any_identity": True}}, "no [auth] section"),
    ({"agg2exp_auth": {"allowed_domains": ["hospital.org"], "password_hash": "x"}}, "no [auth] section"),
    ({"auth": {}}, "[auth] lacks redirect_uri, cookie_secret"),
    ({"auth": "yes"}, "[auth] must be a table"),
    ({"agg2exp_auth": {"pasword_hash": "scrypt$..."}}, "unknown key(s) 'pasword_hash'"),
    ({"agg2exp_auth": {"allow_any_identity": "true"}, "auth": OIDC}, "must be true or false"),
    ({"agg2exp_auth": "password"}, "must be a table"),
])
def test_unusable_restrictions_fail_closed_with_one_line(secrets, words):
    """Anything that asks for access control but cannot give it refuses to serve, never falls back to open."""
    config = auth.parse_config(secrets)
    assert words in config.problem and "\n" not in config.problem, config


def test_check_command_refuses_before_the_server_starts(tmp_path, password_hash):
    def check(text: str):
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(text)
        return subprocess.run([sys.executable, "-m", "dashboard.auth", "check", "--secrets", str(secrets)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    empty = check('[agg2exp_auth]\npassword_hash = ""\n')
    assert empty.returncode == 2 and empty.stdout == ""
    assert empty.stderr.count("\n") == 1 and "password_hash is empty" in empty.stderr
    orphan = check('[agg2exp_auth]\nallowed_domains = ["hospital.org"]\n')
    assert orphan.returncode == 2 and "no [auth] section" in orphan.stderr
    broken = check("[agg2exp_auth\n")
    assert broken.returncode == 2 and "cannot be read as TOML" in broken.stderr
    good = check(f'[agg2exp_auth]\npassword_hash = "{password_hash}"\n')
    assert good.returncode == 0 and "shared team password" in good.stdout


def test_allow_list():
    cfg = auth.AuthConfig("oidc", allowed_emails=("alice@partner.org",), allowed_domains=("hospital.org",))
    verified = {"email_verified": True}
    assert auth.allowed_identity(cfg, {"email": "Bob@Hospital.org", **verified})
    assert auth.allowed_identity(cfg, {"email": "alice@partner.org", **verified})
    assert not auth.allowed_identity(cfg, {"email": "eve@partner.org", **verified})
    assert not auth.allowed_identity(cfg, {"email": "bob@hospital.org.evil.com", **verified})
    assert not auth.allowed_identity(cfg, {"email": "hospital.org", **verified})
    assert not auth.allowed_identity(cfg, {"name": "no email", **verified})
    # the allow-list trusts an address only when the provider vouches for it, as the boolean true
    for unverified in ({}, {"email_verified": False}, {"email_verified": "true"}, {"email_verified": 1},
                       {"email_verified": None}, {"email_verified": [True]}):
        assert not auth.allowed_identity(cfg, {"email": "bob@hospital.org", **unverified}), unverified
    assert auth.allowed_identity(auth.AuthConfig("oidc", allow_any_identity=True), {})


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("unix:///run/agg2exp.sock", True), ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
    ("10.0.0.5", False), ("example.org", False), ("127.0.0.1.nip.io", False),
])
def test_loopback_addresses(address, loopback):
    assert auth.is_loopback(address) is loopback


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("localhost:8501", True), ("LOCALHOST:8501", True), ("127.0.0.1", True),
    ("127.0.0.1:8501", True), ("::1", True), ("[::1]", True), ("[::1]:8501", True),
    ("evil.example", False), ("evil.example:8501", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io:8501", False), ("0.0.0.0:8501", False), ("10.0.0.5:8501", False), ("", False), (None, False),
    ("localhost:99999", False), ("localhost:abc", False), ("user@localhost", False), ("localhost/x", False),
    ("localhost@evil.example", False), ("[::1]:8501@evil.example", False),
])
def test_loopback_host_names(host, loopback):
    assert auth.is_loopback_host(host) is loopback


@pytest.mark.parametrize("origin, loopback", [
    ("http://localhost:8501", True), ("http://127.0.0.1:8501", True), ("https://[::1]:8501", True),
    ("http://localhost", True), ("http://evil.example:8501", False), ("https://agg2exp.hospital.org", False),
    ("null", False), ("", False), ("file://", False), ("ws://localhost:8501", False),
    ("http://localhost.evil.example", False), ("http://user@localhost:8501", False),
    ("http://localhost:8501/path", False),
])
def test_loopback_origins(origin, loopback):
    assert auth.is_loopback_origin(origin) is loopback


def test_foreign_host_or_origin_is_refused():
    refuse = auth.foreign_name_refusal
    assert refuse(["127.0.0.1:8501"], ["http://127.0.0.1:8501"], allow=False) is None
    assert refuse(["localhost:8501"], [], allow=False) is None, "no Origin: a non-browser client"
    rebinding = refuse(["rebind.example:8501"], ["http://rebind.example:8501"], allow=False)
    assert "DNS rebinding" in rebinding and "`rebind.example:8501`" in rebinding
    proxied = refuse(["127.0.0.1:8501"], ["https://agg2exp.hospital.org"], allow=False)
    assert "Origin" in proxied and "`https://agg2exp.hospital.org`" in proxied
    assert refuse([], [], allow=False), "a request without Host is refused"
    assert refuse(["localhost:8501", "evil.example"], [], allow=False), "every Host header counts"
    assert refuse(["rebind.example"], ["http://rebind.example"], allow=True) is None


def test_unauthenticated_refusal_rules():
    refuse = auth.unauthenticated_refusal
    assert refuse("127.0.0.1", None, False, allow=False) is None, "local use needs no login"
    assert refuse(None, None, False, allow=False) is None, "all-interfaces bind, local browser"
    assert "0.0.0.0" in refuse("0.0.0.0", None, False, allow=False)
    assert "10.1.2.3" in refuse("10.1.2.3", None, False, allow=False)
    assert "reverse proxy" in refuse("127.0.0.1", None, True, allow=False)
    assert "203.0.113.7" in refuse(None, "203.0.113.7", False, allow=False)
    assert "203.0.113.7" in refuse("127.0.0.1", "203.0.113.7", False, allow=False), "only local clients"
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


LOCAL = {"hosts": ("127.0.0.1:8501",), "origins": ("http://127.0.0.1:8501",)}


@pytest.mark.parametrize("facts, words", [
    (auth.RequestFacts(True, None, True, **LOCAL), "reverse proxy"),
    (auth.RequestFacts(True, "198.51.100.4", False, **LOCAL), "198.51.100.4"),
    (auth.RequestFacts(True, None, False, ("rebind.example:8501",), ("http://rebind.example:8501",)), "DNS rebinding"),
    (auth.RequestFacts(True, None, False, ("127.0.0.1:8501",), ("https://agg2exp.hospital.org",)), "Origin"),
    (auth.RequestFacts(True, None, False, (), ()), "Host"),
])
def test_proxied_remote_or_foreign_requests_without_auth_are_refused(app_on_store, monkeypatch, facts, words):
    make, queries = app_on_store
    monkeypatch.setattr(auth, "_request_facts", lambda: facts)
    app = make().run()
    assert not served(app) and queries == [] and words in errors(app)
    monkeypatch.setenv(auth.ALLOW_ENV, "1")
    assert served(make().run()), "explicitly allowed"


def test_local_request_with_loopback_names_is_served(app_on_store, monkeypatch):
    make, _ = app_on_store
    for host, origin in (("localhost:8501", "http://localhost:8501"), ("[::1]:8501", "http://[::1]:8501"),
                         ("127.0.0.1:8501", None)):
        facts = auth.RequestFacts(True, None, False, (host,), () if origin is None else (origin,))
        monkeypatch.setattr(auth, "_request_facts", lambda facts=facts: facts)
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
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda p, e: checks.append(p) or real(p, e))
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
    monkeypatch.setattr(auth, "MIN_PASSWORD_LENGTH", 1)
    short_hash = auth.hash_password("tiny pw")
    monkeypatch.undo()
    checks = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda p, e: checks.append(p) or real(p, e))
    monkeypatch.setattr(auth, "_THROTTLE", auth.PasswordThrottle(base_delay=0.0))
    app = make({"agg2exp_auth": {"password_hash": short_hash}}).run()
    app.text_input[0].input("tiny pw")
    app.button[0].click().run()
    assert not served(app) and queries == [] and checks == []
    assert "Wrong password (team passwords have at least 12 characters)" in errors(app)


def test_throttle_delays_grow_per_address_and_spare_other_addresses():
    clock = Clock()
    throttle = auth.PasswordThrottle(clock=clock, max_delay=8.0, forget_s=600.0)
    checked = []

    def wrong():
        checked.append(1)
        return False

    assert throttle.attempt("198.51.100.4", wrong) == auth.Attempt("wrong", 1.0)
    assert throttle.attempt("198.51.100.4", wrong).outcome == "wait" and len(checked) == 1
    assert throttle.attempt("203.0.113.9", wrong).outcome == "wrong", "another address is not held up"
    delays = []
    for _ in range(5):
        clock.now += 60.0 if not delays else delays[-1]
        delays.append(throttle.attempt("198.51.100.4", wrong).wait_s)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 8.0
    assert throttle.attempt("198.51.100.4", lambda: True) == auth.Attempt("ok")
    assert throttle.attempt("198.51.100.4", wrong).wait_s == 1.0, "success clears the record"
    clock.now += 601.0
    assert throttle.attempt("198.51.100.4", wrong).wait_s == 1.0, "old failures are forgotten"
    crowded = auth.PasswordThrottle(clock=clock, max_clients=3)
    for i in range(10):
        crowded.attempt(f"10.0.0.{i}", wrong)
    assert len(crowded._clients) <= 3, "memory stays bounded under many addresses"


def test_one_check_per_address_and_a_cap_on_concurrent_hashes():
    throttle = auth.PasswordThrottle(concurrent=2, queue_s=0.3)
    release, started = threading.Event(), threading.Semaphore(0)
    results = {}

    def slow_wrong():
        started.release()
        release.wait(10)
        return False

    workers = [threading.Thread(target=lambda k=k: results.setdefault(k, throttle.attempt(k, slow_wrong)))
               for k in ("a", "b")]
    for worker in workers:
        worker.start()
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    ran = []
    assert throttle.attempt("a", lambda: ran.append(1)).outcome == "wait", "one check per address at a time"
    t0 = time.monotonic()
    assert throttle.attempt("c", lambda: ran.append(1)).outcome == "busy", "both hash slots are taken"
    assert 0.25 < time.monotonic() - t0 < 5 and ran == []
    release.set()
    for worker in workers:
        worker.join(10)
    assert results["a"].outcome == results["b"].outcome == "wrong"
    assert throttle.attempt("c", lambda: True).outcome == "ok", "slots are given back"


def test_client_keys():
    assert auth.client_key(None) == auth.client_key("") == "loopback"
    assert auth.client_key("198.51.100.4") == "198.51.100.4"
    assert auth.client_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert auth.client_key("2001:db8:1:2::5") == auth.client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert auth.client_key("2001:db8:1:3::5") != auth.client_key("2001:db8:1:2::5")


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

"""Which access control the secrets configure: the rules, failing closed with one line, the OIDC allow-list."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from access import COOKIE, OIDC, PASSWORD
from dashboard.auth.config import AuthConfig, allowed_identity, parse_config

ROOT = Path(__file__).resolve().parents[3]

def test_secrets_example_is_valid_and_holds_no_usable_secret():
    example = tomllib.loads((ROOT / ".streamlit" / "secrets.toml.example").read_text())
    assert set(example) >= {"agg2exp_auth"}
    config = parse_config(example)
    assert config.mode in ("none", "password", "oidc")
    ignored = subprocess.run(["git", "check-ignore", ".streamlit/secrets.toml"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, ".streamlit/secrets.toml must be git-ignored"


# ------------------------------------------------------------------ the rules
def test_configuration_rules(password_hash):
    assert parse_config({}).mode == "none"
    assert parse_config({"agg2exp_auth": {"password_hash": password_hash}}) == \
        AuthConfig("password", password_hash=password_hash)
    for weak in ({"password": PASSWORD}, {"password_sha256": "ab" * 32, "password_salt": "x"}):
        assert "password_hash" in parse_config({"agg2exp_auth": weak}).problem
    assert "allow-list" in parse_config({"auth": OIDC}).problem, "OIDC without an allow-list fails closed"
    ok = parse_config({"auth": OIDC, "agg2exp_auth": {"allowed_domains": ["@Hospital.org"]}})
    assert ok.mode == "oidc" and not ok.problem and ok.provider is None and ok.allowed_domains == ("hospital.org",)
    named = {k: v for k, v in OIDC.items() if k in ("redirect_uri", "cookie_secret")}
    named["microsoft"] = {k: OIDC[k] for k in ("client_id", "client_secret", "server_metadata_url")}
    cfg = parse_config({"auth": named, "agg2exp_auth": {"allow_any_identity": True}})
    assert cfg.provider == "microsoft" and cfg.providers == ("microsoft",) and not cfg.problem
    assert "cookie_secret" in parse_config({"auth": {**OIDC, "cookie_secret": ""}}).problem
    assert "too short" in parse_config({"auth": {**OIDC, "cookie_secret": "xxx"},
                                             "agg2exp_auth": {"allow_any_identity": True}}).problem
    assert "no identity provider" in parse_config(
        {"auth": {"redirect_uri": "x", "cookie_secret": COOKIE}}).problem
    # OIDC wins over a password when both are configured
    both = parse_config({"auth": OIDC, "agg2exp_auth": {"password_hash": password_hash,
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
    config = parse_config(secrets)
    assert words in config.problem and "\n" not in config.problem, config


def test_allow_list():
    cfg = AuthConfig("oidc", allowed_emails=("alice@partner.org",), allowed_domains=("hospital.org",))
    verified = {"email_verified": True}
    assert allowed_identity(cfg, {"email": "Bob@Hospital.org", **verified})
    assert allowed_identity(cfg, {"email": "alice@partner.org", **verified})
    assert not allowed_identity(cfg, {"email": "eve@partner.org", **verified})
    assert not allowed_identity(cfg, {"email": "bob@hospital.org.evil.com", **verified})
    assert not allowed_identity(cfg, {"email": "hospital.org", **verified})
    assert not allowed_identity(cfg, {"name": "no email", **verified})
    # the allow-list trusts an address only when the provider vouches for it, as the boolean true
    for unverified in ({}, {"email_verified": False}, {"email_verified": "true"}, {"email_verified": 1},
                       {"email_verified": None}, {"email_verified": [True]}):
        assert not allowed_identity(cfg, {"email": "bob@hospital.org", **unverified}), unverified
    assert allowed_identity(AuthConfig("oidc", allow_any_identity=True), {})

"""Who may open the dashboard: OIDC login, a shared password, or loopback only.

``app.py`` calls :func:`require_auth` before anything reads the store. In order:

1. **OIDC** (Streamlit's ``st.login`` / ``st.user``) when ``.streamlit/secrets.toml`` has
   an ``[auth]`` section. Because most identity providers let *anyone* with an account
   log in, an ``[agg2exp_auth]`` allow-list (``allowed_emails`` / ``allowed_domains``) is
   required, or an explicit ``allow_any_identity = true``. Needs ``Authlib>=1.3.2``.
2. **Shared password** when ``[agg2exp_auth] password_hash`` is set (scrypt or
   PBKDF2-SHA256, salted; produce it with ``python -m dashboard.auth hash-password``).
   Compared in constant time; failed attempts are slowed down.
3. **No authentication** otherwise, which is allowed only for a server bound to a
   loopback address (``server.address`` 127.0.0.1 / ::1 / localhost / a unix socket),
   reached directly rather than through a reverse proxy. A server bound to any other
   address (or to all interfaces, Streamlit's default when ``server.address`` is unset,
   for a client that is not local) shows a refusal page and stops, unless
   ``AGG2EXP_ALLOW_UNAUTHENTICATED=1`` says that this is intended.

Every configuration problem fails closed: the page explains it and serves nothing.
See docs/DEPLOYMENT.md.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import ipaddress
import os
import secrets as token_source
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import streamlit as st
from streamlit import config as _st_config  # module attribute, so test patches of options apply

SECTION = "agg2exp_auth"
ALLOW_ENV = "AGG2EXP_ALLOW_UNAUTHENTICATED"
MIN_PASSWORD_LENGTH = 12
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
PBKDF2_ITERATIONS = 600_000
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded", "X-Forwarded-Host")
_SESSION_KEY = "_agg2exp_auth_ok"
_FAILURES_KEY = "_agg2exp_auth_failures"


# ------------------------------------------------------------------ password hashes
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, scheme: str = "scrypt", salt: bytes | None = None) -> str:
    """A salted hash of ``password`` as one string for ``[agg2exp_auth] password_hash``.

    ``scrypt$N$r$p$<salt>$<key>`` (default) or ``pbkdf2_sha256$<iterations>$<salt>$<key>``,
    salt and key in base64.
    """
    salt = token_source.token_bytes(16) if salt is None else salt
    data = password.encode("utf-8")
    if scheme == "scrypt":
        n, r, p = SCRYPT["n"], SCRYPT["r"], SCRYPT["p"]
        key = hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=32)
        return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"
    if scheme == "pbkdf2_sha256":
        key = hashlib.pbkdf2_hmac("sha256", data, salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(key)}"
    raise ValueError(f"unknown scheme {scheme!r} (use scrypt or pbkdf2_sha256)")


def parse_password_hash(encoded: str) -> tuple[str, tuple[int, ...], bytes, bytes]:
    """(scheme, parameters, salt, key) of an encoded hash; ValueError naming the secret if malformed."""
    parts = str(encoded).strip().split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if not (2 <= n <= 2 ** 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError("scrypt parameters out of range")
            params, salt, key = (n, r, p), _unb64(parts[4]), _unb64(parts[5])
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            params = (int(parts[1]),)
            if not 100_000 <= params[0] <= 10_000_000:
                raise ValueError("PBKDF2 iterations out of range")
            salt, key = _unb64(parts[2]), _unb64(parts[3])
        else:
            raise ValueError("expected 'scrypt$N$r$p$salt$key' or 'pbkdf2_sha256$iterations$salt$key'")
        if len(key) < 16 or len(salt) < 8:
            raise ValueError("salt or key too short")
    except (TypeError, ValueError, binascii.Error) as err:
        raise ValueError(f"malformed {SECTION}.password_hash ({err})") from None
    return parts[0], params, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time compare); ValueError if malformed."""
    scheme, params, salt, expected = parse_password_hash(encoded)
    data = password.encode("utf-8")
    if scheme == "scrypt":
        n, r, p = params
        key = hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=len(expected))
    else:
        key = hashlib.pbkdf2_hmac("sha256", data, salt, params[0], dklen=len(expected))
    return hmac.compare_digest(key, expected)


# ------------------------------------------------------------------ the decision
def is_loopback(address: str | None) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if address is None:
        return False
    text = str(address).strip().strip("[]").lower()
    if text.startswith("unix://"):
        return True
    if text == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False  # a host name, '0.0.0.0', '::', '' ...
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@dataclass(frozen=True)
class AuthConfig:
    mode: str                      # "oidc", "password" or "none"
    problem: str = ""              # a configuration error: fail closed with this text
    provider: str | None = None    # OIDC provider name (None: the [auth] section itself)
    providers: tuple[str, ...] = ()
    password_hash: str = ""
    allowed_emails: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allow_any_identity: bool = False


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    return tuple(str(v).strip().lower().lstrip("@") for v in value if str(v).strip())


def parse_config(secrets: Mapping[str, Any]) -> AuthConfig:
    """The authentication mode configured by a secrets mapping (pure; no Streamlit)."""
    own = dict(secrets.get(SECTION) or {})
    emails, domains = _strings(own.get("allowed_emails")), _strings(own.get("allowed_domains"))
    any_identity = own.get("allow_any_identity") is True
    auth = secrets.get("auth")
    if auth:
        auth = dict(auth)
        missing = [k for k in ("redirect_uri", "cookie_secret") if not auth.get(k)]
        providers = tuple(k for k, v in auth.items() if isinstance(v, Mapping))
        default = all(auth.get(k) for k in ("client_id", "client_secret", "server_metadata_url"))
        if missing:
            problem = f"[auth] lacks {', '.join(missing)}"
        elif not default and not providers:
            problem = ("[auth] names no identity provider: give client_id, client_secret and "
                       "server_metadata_url, or an [auth.<provider>] section")
        elif len(str(auth["cookie_secret"])) < 32:
            problem = "[auth] cookie_secret is too short (use at least 32 random characters)"
        elif not (emails or domains or any_identity):
            problem = (f"OIDC login needs an allow-list: set [{SECTION}] allowed_emails or allowed_domains, "
                       "or allow_any_identity = true if the identity provider itself restricts who can log in")
        else:
            problem = ""
        return AuthConfig("oidc", problem, provider=None if default or not providers else providers[0],
                          providers=() if default else providers, allowed_emails=emails,
                          allowed_domains=domains, allow_any_identity=any_identity)
    if own.get("password_hash"):
        encoded = str(own["password_hash"])
        try:
            parse_password_hash(encoded)
            problem = ""
        except ValueError as err:
            problem = str(err)
        return AuthConfig("password", problem, password_hash=encoded)
    if own.get("password") or own.get("password_sha256"):
        return AuthConfig("password", f"[{SECTION}] needs password_hash (salted scrypt/PBKDF2), not a plain or "
                                      "unsalted password; run: python -m dashboard.auth hash-password")
    return AuthConfig("none")


def allowed_identity(config: AuthConfig, user: Mapping[str, Any]) -> bool:
    """Whether a logged-in OIDC identity passes the allow-list."""
    if config.allow_any_identity:
        return True
    if user.get("email_verified") is False:
        return False
    email = str(user.get("email") or "").strip().lower()
    if not email or "@" not in email:
        return False
    return email in config.allowed_emails or email.rsplit("@", 1)[1] in config.allowed_domains


def unauthenticated_refusal(address: str | None, client_ip: str | None, forwarded: bool,
                            allow: bool) -> str | None:
    """Why a server without authentication must not serve this request (None: it may)."""
    if allow:
        return None
    if address not in (None, "") and not is_loopback(address):
        return (f"This server listens on `{address}`, which other machines can reach, and no "
                "authentication is configured.")
    if forwarded:
        return ("This page was reached through a reverse proxy, so the shared URL is open to "
                "whoever can reach the proxy, and no authentication is configured.")
    if address in (None, "") and client_ip is not None:
        return ("This server listens on all network interfaces (`server.address` is not set), this "
                f"request comes from another machine ({client_ip}), and no authentication is configured.")
    return None


# ------------------------------------------------------------------ Streamlit side
def _secrets() -> tuple[dict, str]:
    """(secrets, problem): a secrets file that exists but cannot be read is a problem.

    Under AppTest only the test's own ``AppTest.secrets`` count, so a developer's real
    ``.streamlit/secrets.toml`` does not put a login page in front of the app's tests.
    """
    from streamlit.runtime.secrets import secrets_singleton

    if _st_config.get_option("global.appTest") and st.secrets is secrets_singleton:
        return {}, ""
    try:
        if st.secrets.load_if_toml_exists():
            return st.secrets.to_dict(), ""
    except Exception as err:  # noqa: BLE001 - any failure to read secrets fails closed
        return {}, f"the secrets cannot be read ({type(err).__name__})"
    files = _st_config.get_option("secrets.files") or []
    present = [f for f in files if Path(f).exists()]
    if present:
        return {}, f"`{present[0]}` exists but cannot be parsed as TOML"
    return {}, ""


def _request_facts() -> tuple[str | None, bool]:
    """(remote client IP or None for a local one, whether proxy forwarding headers are present)."""
    if _st_config.get_option("global.appTest"):  # AppTest has no request (its runtime is a mock)
        return None, False
    try:
        ip = st.context.ip_address
        headers = st.context.headers
        forwarded = any(isinstance(headers.get(h), str) and headers.get(h).strip() for h in FORWARDING_HEADERS)
    except Exception:  # noqa: BLE001 - no request context
        return None, False
    remote = ip if isinstance(ip, str) and ip and not is_loopback(ip) else None
    return remote, forwarded


def _stop(title: str, body: str) -> None:
    st.title("Agg2Exp Studio")
    st.error(f"**{title}**")
    st.markdown(body)
    st.stop()


def require_auth() -> None:
    """Serve the page only to those who may see it; otherwise draw a login or refusal page and stop."""
    secrets, problem = _secrets()
    if problem:
        _stop("Access configuration error", f"Nothing is served: {problem}. See docs/DEPLOYMENT.md.")
    config = parse_config(secrets)
    if config.problem:
        _stop("Access configuration error",
              f"Nothing is served until `.streamlit/secrets.toml` is fixed: {config.problem}. "
              "See docs/DEPLOYMENT.md.")
    if config.mode == "oidc":
        _oidc_gate(config)
    elif config.mode == "password":
        _password_gate(config)
    else:
        _loopback_gate()


def _loopback_gate() -> None:
    client_ip, forwarded = _request_facts()
    reason = unauthenticated_refusal(_st_config.get_option("server.address"), client_ip, forwarded,
                                     os.environ.get(ALLOW_ENV, "") == "1")
    if reason:
        _stop("Refused: no authentication configured",
              reason + "\n\nEither configure authentication in `.streamlit/secrets.toml` (OIDC login or a "
              "shared password, see `.streamlit/secrets.toml.example` and docs/DEPLOYMENT.md), or serve on "
              "loopback only (`--server.address 127.0.0.1`), or, if this server is deliberately open, "
              f"start it with `{ALLOW_ENV}=1`.")


def _oidc_gate(config: AuthConfig) -> None:
    from streamlit.auth_util import is_authlib_installed

    if not is_authlib_installed():
        _stop("Access configuration error",
              "OIDC login is configured but the Authlib package is missing: `pip install \"Authlib>=1.3.2\"`.")
    user = st.user.to_dict() if hasattr(st.user, "to_dict") else dict(st.user)
    if not user.get("is_logged_in"):
        st.title("Agg2Exp Studio")
        st.markdown("Sign in with your organisation's account to open the dashboard.")
        for name in config.providers or (None,):
            label = "Log in" if name is None else f"Log in with {name}"
            if st.button(label, key=f"_agg2exp_login_{name}", type="primary"):
                if name is None:
                    st.login()
                else:
                    st.login(name)
        st.stop()
    if not allowed_identity(config, user):
        st.title("Agg2Exp Studio")
        st.error(f"**{user.get('email') or 'This account'} may not open this dashboard.** "
                 "Ask the administrator to add it to the allow-list.")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {user.get('email') or user.get('name') or 'user'}")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()


def _session_token(config: AuthConfig) -> str:
    """Ties a session's login to the current password hash (a new password logs everyone out)."""
    return hashlib.sha256(("agg2exp-session:" + config.password_hash).encode()).hexdigest()


def _password_gate(config: AuthConfig) -> None:
    token = _session_token(config)
    if hmac.compare_digest(str(st.session_state.get(_SESSION_KEY, "")), token):
        with st.sidebar:
            if st.button("Sign out", key="_agg2exp_signout"):
                st.session_state.pop(_SESSION_KEY, None)
                st.rerun()
        return
    st.title("Agg2Exp Studio")
    with st.form("_agg2exp_login", enter_to_submit=True):
        password = st.text_input("Team password", type="password", key="_agg2exp_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        ok = verify_password(password or "", config.password_hash)
        st.session_state.pop("_agg2exp_password", None)
        if ok:
            st.session_state[_SESSION_KEY] = token
            st.session_state[_FAILURES_KEY] = 0
            st.rerun()
        failures = int(st.session_state.get(_FAILURES_KEY, 0)) + 1
        st.session_state[_FAILURES_KEY] = failures
        time.sleep(min(2.0 ** (failures - 1), 30.0))  # slows guessing down, per session
        st.error("Wrong password.")
    st.stop()


# ------------------------------------------------------------------ command line
def _read_password(stdin: bool) -> str:
    if stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Team password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.auth",
                                     description="Helpers for the dashboard's access control.")
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="print the [agg2exp_auth] secret for a shared team password")
    hp.add_argument("--scheme", choices=("scrypt", "pbkdf2_sha256"), default="scrypt")
    hp.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    args = parser.parse_args(argv)
    password = _read_password(args.stdin)
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"error: the password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2
    print(f"[{SECTION}]")
    print(f'password_hash = "{hash_password(password, args.scheme)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Who may open the dashboard: OIDC login, a shared password, or loopback only.

``app.py`` calls :func:`require_auth` before anything reads the store. In order:

1. **OIDC** (Streamlit's ``st.login`` / ``st.user``) when ``.streamlit/secrets.toml`` has
   an ``[auth]`` section. Because most identity providers let *anyone* with an account
   log in, an ``[agg2exp_auth]`` allow-list (``allowed_emails`` / ``allowed_domains``) is
   required, or an explicit ``allow_any_identity = true``. Needs ``Authlib>=1.3.2``.
   The allow-list decides by e-mail, so the provider must report ``email_verified = true``.
2. **Shared password** when ``[agg2exp_auth] password_hash`` is set (scrypt or
   PBKDF2-SHA256, salted; produce it with ``python -m dashboard.auth hash-password``).
   Compared in constant time; a password shorter than ``MIN_PASSWORD_LENGTH`` never
   matches (a salted hash cannot tell its length when it is loaded, so a hash of a short
   password, made around ``hash_password``, opens nothing). Failed attempts are throttled
   per client address for the whole process (every browser session of one address shares
   the delay), one check at a time per address and at most ``MAX_CONCURRENT_CHECKS`` at once.
3. **No authentication** otherwise, which is allowed only for a server bound to a
   loopback address (``server.address`` 127.0.0.1 / ::1 / localhost / a unix socket),
   reached by a local client directly rather than through a reverse proxy, by a browser
   whose ``Host`` and ``Origin`` name this machine (a page of another site that rebinds its
   DNS name to 127.0.0.1 is turned away). Anything else shows a refusal page and stops,
   unless ``AGG2EXP_ALLOW_UNAUTHENTICATED=1`` says that an open server is intended.

Every configuration problem fails closed: the page explains it in one line and serves
nothing (``python -m dashboard.auth check`` says the same line before the server starts).
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
import logging
import os
import secrets as token_source
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import streamlit as st
from streamlit import config as _st_config  # module attribute, so test patches of options apply

from dashboard.text import literal

SECTION = "agg2exp_auth"
ALLOW_ENV = "AGG2EXP_ALLOW_UNAUTHENTICATED"
DELAY_ENV = "AGG2EXP_SIGNIN_DELAY_S"
MIN_PASSWORD_LENGTH = 12
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
PBKDF2_ITERATIONS = 600_000
MAX_CONCURRENT_CHECKS = 2          # password hashes computed at once (scrypt: 32 MiB each)
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded", "X-Forwarded-Host")
ALLOW_LIST_KEYS = ("allowed_emails", "allowed_domains", "allow_any_identity")
KNOWN_KEYS = ("password_hash", *ALLOW_LIST_KEYS)
LEGACY_KEYS = ("password", "password_sha256", "password_salt")
_SESSION_KEY = "_agg2exp_auth_ok"
_LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------ password hashes
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, scheme: str = "scrypt", salt: bytes | None = None) -> str:
    """A salted hash of ``password`` as one string for ``[agg2exp_auth] password_hash``.

    ``scrypt$N$r$p$<salt>$<key>`` (default) or ``pbkdf2_sha256$<iterations>$<salt>$<key>``,
    salt and key in base64. A password shorter than ``MIN_PASSWORD_LENGTH`` is refused
    (ValueError): the sign-in form refuses such passwords too, so its hash would open nothing.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
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
def _loopback_ip(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False  # a host name, '0.0.0.0', '::', '' ...
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def is_loopback(address: str | None) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if address is None:
        return False
    text = str(address).strip().strip("[]").lower()
    if text.startswith("unix://"):
        return True
    return text == "localhost" or _loopback_ip(text)


def _loopback_name(hostname: str | None) -> bool:
    return bool(hostname) and (hostname == "localhost" or _loopback_ip(hostname))


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine: localhost, 127.0.0.1, ::1 or [::1], any port."""
    if not isinstance(host, str) or not host.strip():
        return False
    text = host.strip().lower()
    if _loopback_ip(text):                      # a bare IPv6 address such as ::1
        return True
    try:
        parts = urlsplit("//" + text)
        _ = parts.port                          # raises on a port that is not a number in range
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or parts.path or parts.query or parts.fragment:
        return False
    return _loopback_name(parts.hostname)


def is_loopback_origin(origin: str | None) -> bool:
    """Whether an ``Origin`` header is a page of this machine (http(s)://localhost|127.0.0.1|[::1][:port])."""
    if not isinstance(origin, str):
        return False
    try:
        parts = urlsplit(origin.strip().lower())
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        return False
    return parts.username is None and _loopback_name(parts.hostname)


@dataclass(frozen=True)
class AuthConfig:
    mode: str                      # "oidc", "password" or "none"
    problem: str = ""              # a configuration error: fail closed with this line
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


def _own_section_problem(own: Mapping[str, Any]) -> str:
    """What is wrong with the keys of [agg2exp_auth] itself ('' when nothing)."""
    legacy = [k for k in LEGACY_KEYS if k in own]
    if legacy:
        return (f"[{SECTION}] needs password_hash (salted scrypt/PBKDF2), not a plain or unsalted "
                f"{legacy[0]}; run: python -m dashboard.auth hash-password")
    unknown = sorted(set(own) - set(KNOWN_KEYS))
    if unknown:
        return f"[{SECTION}] has unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(KNOWN_KEYS)})"
    if "allow_any_identity" in own and not isinstance(own["allow_any_identity"], bool):
        return f"[{SECTION}] allow_any_identity must be true or false, not {own['allow_any_identity']!r}"
    for key in ("allowed_emails", "allowed_domains"):
        value = own.get(key)
        if value is not None and not (isinstance(value, str) or
                                      (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            return f"[{SECTION}] {key} must be a list of strings"
    return ""


def _oidc_config(auth: Any, own: Mapping[str, Any]) -> AuthConfig:
    if not isinstance(auth, Mapping):
        return AuthConfig("oidc", "[auth] must be a table of settings")
    auth = dict(auth)
    emails, domains = _strings(own.get("allowed_emails")), _strings(own.get("allowed_domains"))
    any_identity = own.get("allow_any_identity") is True
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


def parse_config(secrets: Mapping[str, Any]) -> AuthConfig:
    """The authentication mode configured by a secrets mapping (pure; no Streamlit).

    Anything that looks like an intent to restrict access but cannot be honoured is a
    ``problem`` (one line), never a silent fall-back to "no authentication": an empty
    ``password_hash``, an allow-list without an ``[auth]`` provider, an empty ``[auth]``,
    an unknown key in ``[agg2exp_auth]``.
    """
    own = secrets.get(SECTION)
    if own is not None and not isinstance(own, Mapping):
        return AuthConfig("none", f"[{SECTION}] must be a table of settings")
    own = dict(own or {})
    problem = _own_section_problem(own)
    if problem:
        return AuthConfig("password" if any(k in own for k in LEGACY_KEYS) else "none", problem)
    if "auth" in secrets:
        return _oidc_config(secrets["auth"], own)
    given = [k for k in ALLOW_LIST_KEYS if k in own]
    if given:
        return AuthConfig("none", f"[{SECTION}] {', '.join(given)} is set but no [auth] section names an "
                                  "identity provider, so nobody can be checked against it")
    if "password_hash" in own:
        encoded = own["password_hash"]
        if not isinstance(encoded, str) or not encoded.strip():
            return AuthConfig("password", f"[{SECTION}] password_hash is empty; run: python -m dashboard.auth "
                                          "hash-password")
        try:
            parse_password_hash(encoded)
            problem = ""
        except ValueError as err:
            problem = str(err)
        return AuthConfig("password", problem, password_hash=encoded)
    return AuthConfig("none")


def allowed_identity(config: AuthConfig, user: Mapping[str, Any]) -> bool:
    """Whether a logged-in OIDC identity passes the allow-list.

    The allow-list trusts the e-mail address only when the provider vouches for it:
    ``email_verified`` must be the boolean ``true`` (missing, ``"true"`` or 1 are refused).
    ``allow_any_identity`` does not look at the address at all.
    """
    if config.allow_any_identity:
        return True
    if user.get("email_verified") is not True:
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
        return (f"This server listens on {literal(address)}, which other machines can reach, and no "
                "authentication is configured.")
    if forwarded:
        return ("This page was reached through a reverse proxy, so the shared URL is open to "
                "whoever can reach the proxy, and no authentication is configured.")
    if client_ip is not None:
        where = "all network interfaces (`server.address` is not set)" if address in (None, "") else literal(address)
        return (f"This server listens on {where}, this request comes from another machine "
                f"({literal(client_ip)}), and no authentication is configured.")
    return None


def foreign_name_refusal(hosts: Sequence[str], origins: Sequence[str], allow: bool) -> str | None:
    """Why a request whose ``Host``/``Origin`` name another site must not be served (None: it may).

    A web page of any site can rebind its DNS name to 127.0.0.1 and then talk to a loopback
    server as "itself" (same origin for the browser): its requests carry that site's name in
    ``Host`` and ``Origin``. A reverse proxy that sends no forwarding headers still passes the
    browser's ``Origin``. Both must name this machine; an ``Origin`` may be absent (non-browser
    clients), a ``Host`` may not.
    """
    if allow:
        return None
    bad_host = next((h for h in hosts if not is_loopback_host(h)), None)
    if not hosts or bad_host is not None:
        shown = literal(bad_host) if hosts else "none"
        return (f"This request names the server as {shown} (`Host` header), not as this machine "
                "(localhost, 127.0.0.1, [::1]), and no authentication is configured: another web site "
                "(DNS rebinding) or a reverse proxy may be relaying it.")
    bad_origin = next((o for o in origins if not is_loopback_origin(o)), None)
    if bad_origin is not None:
        return (f"This request comes from a page of {literal(bad_origin)} (`Origin` header), not of this "
                "machine, and no authentication is configured: another web site or a reverse proxy may be "
                "relaying it.")
    return None


# ------------------------------------------------------------------ password throttle
def client_key(ip: str | None) -> str:
    """Throttle key of a client address: the address, IPv6 by its /64 (one subscriber's block)."""
    if not ip:
        return "loopback"
    try:
        address = ipaddress.ip_address(str(ip).strip().strip("[]"))
    except ValueError:
        return str(ip)
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Client:
    failures: int = 0
    retry_at: float = 0.0          # clock time before which this client may not try again
    last_seen: float = 0.0
    checking: bool = False         # one of its attempts is being checked right now


@dataclass(frozen=True)
class Attempt:
    outcome: str                   # "ok", "wrong", "wait" (throttled) or "busy" (no check slot free)
    wait_s: float = 0.0            # seconds until this client may try again


@dataclass
class PasswordThrottle:
    """Failed sign-ins per client address, shared by every browser session of the process.

    After the k-th failure a client waits ``min(base_delay * 2**(k-1), max_delay)`` seconds;
    attempts inside the wait are answered at once without hashing. One attempt per client is
    checked at a time, and at most ``concurrent`` hashes run at once (scrypt needs 32 MiB
    each); an attempt that finds no free slot within ``queue_s`` is turned away.
    """

    concurrent: int = MAX_CONCURRENT_CHECKS
    base_delay: float = 1.0
    max_delay: float = 30.0
    queue_s: float = 5.0
    forget_s: float = 3600.0       # a client's failures are forgotten after this long without one
    max_clients: int = 10_000      # bounded memory under many addresses
    clock: Callable[[], float] = time.monotonic
    _clients: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)
    _slots: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.concurrent)

    def attempt(self, key: str, check: Callable[[], bool]) -> Attempt:
        """Run ``check`` (the password comparison) for client ``key`` unless it is throttled."""
        with self._lock:
            now = self.clock()
            self._forget(now)
            client = self._clients.setdefault(key, _Client(last_seen=now))
            if client.checking or now < client.retry_at:
                return Attempt("wait", max(client.retry_at - now, 1.0))
            client.checking = True
        ok: bool | None = None                  # None: no slot was free, nothing was checked
        try:
            if self._slots.acquire(timeout=self.queue_s):
                try:
                    ok = bool(check())
                finally:
                    self._slots.release()
        finally:
            with self._lock:
                client.checking = False
                now = client.last_seen = self.clock()
                if ok:
                    self._clients.pop(key, None)
                elif ok is False:
                    client.failures += 1
                    client.retry_at = now + min(self.base_delay * 2.0 ** (client.failures - 1), self.max_delay)
        if ok is None:
            return Attempt("busy", self.queue_s)
        return Attempt("ok") if ok else Attempt("wrong", client.retry_at - now)

    def _forget(self, now: float) -> None:
        stale = [k for k, c in self._clients.items()
                 if not c.checking and now - c.last_seen > self.forget_s and now >= c.retry_at]
        for key in stale:
            del self._clients[key]
        while len(self._clients) >= self.max_clients:
            oldest = min((k for k, c in self._clients.items() if not c.checking),
                         key=lambda k: self._clients[k].last_seen, default=None)
            if oldest is None:
                break
            del self._clients[oldest]


def _base_delay() -> float:
    """``AGG2EXP_SIGNIN_DELAY_S``: the wait after a first failed sign-in (1 s by default, 1 s to 1 h)."""
    try:
        return min(max(1.0, float(os.environ.get(DELAY_ENV, "1"))), 3600.0)
    except ValueError:
        return 1.0


_THROTTLE = PasswordThrottle(base_delay=_base_delay(), max_delay=max(30.0, _base_delay()))


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
        return {}, f"{present[0]} exists but cannot be parsed as TOML"
    return {}, ""


@dataclass(frozen=True)
class RequestFacts:
    """What the app knows of the browser's connection (its websocket's upgrade request)."""

    known: bool = False                # False under AppTest, which has no request
    client_ip: str | None = None       # remote client address; None for a local one
    forwarded: bool = False            # reverse-proxy forwarding headers are present
    hosts: tuple[str, ...] = ()        # every Host header
    origins: tuple[str, ...] = ()      # every Origin header


def _request_facts() -> RequestFacts:
    if _st_config.get_option("global.appTest"):  # AppTest has no request (its runtime is a mock)
        return RequestFacts()
    try:
        ip = st.context.ip_address
        headers = st.context.headers
        values = {name: tuple(v for v in headers.get_all(name) if isinstance(v, str))
                  for name in (*FORWARDING_HEADERS, "Host", "Origin")}
    except Exception:  # noqa: BLE001 - no request headers: no Host to accept, so the gate refuses
        return RequestFacts(known=True)
    remote = ip if isinstance(ip, str) and ip and not is_loopback(ip) else None
    forwarded = any(v.strip() for name in FORWARDING_HEADERS for v in values[name])
    return RequestFacts(True, remote, forwarded, values["Host"], values["Origin"])


def _client_address() -> str | None:
    """The connection's peer address (uvicorn takes it from X-Forwarded-For only when the peer
    is a trusted local proxy), None for a local client."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - no request context
        return None
    return ip if isinstance(ip, str) and ip else None


_LOGGED_PROBLEMS: set[str] = set()


def _stop(title: str, body: str) -> None:
    st.title("Agg2Exp Studio")
    st.error(f"**{title}**")
    st.markdown(body)
    st.stop()


def _configuration_error(problem: str) -> None:
    if problem not in _LOGGED_PROBLEMS:      # once per process in the server log, for the operator
        _LOGGED_PROBLEMS.add(problem)
        _LOG.error("Agg2Exp access configuration error, nothing is served: %s", problem)
    _stop("Access configuration error",
          f"Nothing is served until the secrets are fixed: {literal(problem, limit=400)} See docs/DEPLOYMENT.md.")


def require_auth() -> None:
    """Serve the page only to those who may see it; otherwise draw a login or refusal page and stop."""
    secrets, problem = _secrets()
    if problem:
        _configuration_error(problem)
    config = parse_config(secrets)
    if config.problem:
        _configuration_error(config.problem)
    if config.mode == "oidc":
        _oidc_gate(config)
    elif config.mode == "password":
        _password_gate(config)
    else:
        _loopback_gate()


def _loopback_gate() -> None:
    facts = _request_facts()
    allow = os.environ.get(ALLOW_ENV, "") == "1"
    reason = unauthenticated_refusal(_st_config.get_option("server.address"), facts.client_ip, facts.forwarded,
                                     allow)
    if reason is None and facts.known:
        reason = foreign_name_refusal(facts.hosts, facts.origins, allow)
    if reason:
        _stop("Refused: no authentication configured",
              reason + "\n\nEither configure authentication in `.streamlit/secrets.toml` (OIDC login or a "
              "shared password, see `.streamlit/secrets.toml.example` and docs/DEPLOYMENT.md), or open the "
              "dashboard on this machine as `http://localhost:<port>` with the server on loopback only "
              "(`--server.address 127.0.0.1`), or, if this server is deliberately open, "
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
        who = literal(user["email"]) if user.get("email") else "This account"
        why = ("" if config.allow_any_identity or user.get("email_verified") is True else
               " The identity provider does not confirm its e-mail address (email_verified).")
        st.error(f"**{who} may not open this dashboard.**{why} Ask the administrator to add it to the allow-list.")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {literal(user.get('email') or user.get('name') or 'user')}")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()


def _session_token(config: AuthConfig) -> str:
    """Ties a session's login to the current password hash (a new password logs everyone out)."""
    return hashlib.sha256(("agg2exp-session:" + config.password_hash).encode()).hexdigest()


def _password_matches(password: str, encoded: str) -> bool:
    """A password shorter than the minimum never matches, and costs no hash."""
    return len(password) >= MIN_PASSWORD_LENGTH and verify_password(password, encoded)


def _seconds(wait_s: float) -> str:
    return f"{max(1, int(wait_s + 0.999))} s"


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
        password = password or ""
        st.session_state.pop("_agg2exp_password", None)
        result = _THROTTLE.attempt(client_key(_client_address()),
                                   lambda: _password_matches(password, config.password_hash))
        if result.outcome == "ok":
            st.session_state[_SESSION_KEY] = token
            st.rerun()
        if result.outcome == "wrong":
            hint = f" (team passwords have at least {MIN_PASSWORD_LENGTH} characters)" \
                if len(password) < MIN_PASSWORD_LENGTH else ""
            st.error(f"Wrong password{hint}. The next attempt from your address is possible in "
                     f"{_seconds(result.wait_s)}.")
        elif result.outcome == "wait":
            st.error(f"Too many failed sign-ins from your address: try again in {_seconds(result.wait_s)}. "
                     "This attempt was not checked.")
        else:
            st.error("The server is checking other sign-ins: try again in a few seconds. "
                     "This attempt was not checked.")
    st.stop()


# ------------------------------------------------------------------ command line
def _read_password(stdin: bool) -> str:
    if stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Team password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


def _load_secret_files(paths: Sequence[Path]) -> dict:
    """The secrets Streamlit would load from ``paths`` (later files override earlier top-level keys)."""
    merged: dict = {}
    for path in paths:
        if path.exists():
            try:
                merged.update(tomllib.loads(path.read_text()))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
                raise ValueError(f"{path} cannot be read as TOML ({err})") from None
    return merged


def _check(paths: Sequence[Path]) -> int:
    try:
        config = parse_config(_load_secret_files(paths))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.problem:
        print(f"error: {config.problem}", file=sys.stderr)
        return 2
    print({"oidc": "ok: OIDC login with an allow-list", "password": "ok: shared team password",
           "none": "ok: no authentication, loopback only"}[config.mode])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.auth",
                                     description="Helpers for the dashboard's access control.")
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="print the [agg2exp_auth] secret for a shared team password")
    hp.add_argument("--scheme", choices=("scrypt", "pbkdf2_sha256"), default="scrypt")
    hp.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    ck = sub.add_parser("check", help="exit 2 with one line when the access configuration would be refused")
    ck.add_argument("--secrets", type=Path, action="append",
                    help="secrets file (repeatable; default: ~/.streamlit/secrets.toml, ./.streamlit/secrets.toml)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.secrets or [Path.home() / ".streamlit" / "secrets.toml",
                                       Path.cwd() / ".streamlit" / "secrets.toml"])
    password = _read_password(args.stdin)
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"error: the password must have at least {MIN_PASSWORD_LENGTH} characters", file=sys.stderr)
        return 2
    print(f"[{SECTION}]")
    print(f'password_hash = "{hash_password(password, args.scheme)}"')
    return 0


"""The Streamlit side of access control: ``require_auth`` and its three gates (the only module
of ``dashboard.auth`` that imports Streamlit).

``app.py`` calls :func:`require_auth` before anything reads the store; it draws a login or
refusal page and stops, or returns for those who may see the dashboard. The rules themselves
are pure and tested on their own: ``config`` (which mode), ``passwords``, ``network``
(is the request local), ``throttle`` (failed sign-ins).
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st
from streamlit import config as _st_config  # module attribute, so test patches of options apply

from dashboard.auth import passwords
from dashboard.auth.config import AuthConfig, allowed_identity, parse_config
from dashboard.auth.network import FORWARDING_HEADERS, foreign_name_refusal, is_loopback, unauthenticated_refusal
from dashboard.auth.throttle import PasswordThrottle, base_delay_from_env, client_key
from dashboard.text import literal

ALLOW_ENV = "AGG2EXP_ALLOW_UNAUTHENTICATED"
_SESSION_KEY = "_agg2exp_auth_ok"
_LOG = logging.getLogger(__name__)
_KEEP_PAGE: contextvars.ContextVar = contextvars.ContextVar("agg2exp_keep_page", default=None)   # per script run
_THROTTLE = PasswordThrottle(base_delay=base_delay_from_env(), max_delay=max(30.0, base_delay_from_env()))


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


def _halt() -> None:
    """End the run here, after the frame's ``keep_page`` (so a deep link survives the login page)."""
    keep_page = _KEEP_PAGE.get()
    if keep_page is not None:
        keep_page()
    st.stop()


def _stop(title: str, body: str) -> None:
    st.title("Agg2Exp Studio")
    st.error(f"**{title}**")
    st.markdown(body)
    _halt()


def _configuration_error(problem: str) -> None:
    if problem not in _LOGGED_PROBLEMS:      # once per process in the server log, for the operator
        _LOGGED_PROBLEMS.add(problem)
        _LOG.error("Agg2Exp access configuration error, nothing is served: %s", problem)
    _stop("Access configuration error",
          f"Nothing is served until the secrets are fixed: {literal(problem, limit=400)} See docs/DEPLOYMENT.md.")


def require_auth(keep_page: Callable[[], object] | None = None) -> None:
    """Serve the page only to those who may see it; otherwise draw a login or refusal page and stop.

    ``keep_page`` runs just before such a stop: ``app.py`` registers its pages there (hidden), so
    the page a deep link asked for is still the page after signing in, not the default one.
    """
    _KEEP_PAGE.set(keep_page)
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
        _halt()
    if not allowed_identity(config, user):
        st.title("Agg2Exp Studio")
        who = literal(user["email"]) if user.get("email") else "This account"
        why = ("" if config.allow_any_identity or user.get("email_verified") is True else
               " The identity provider does not confirm its e-mail address (email_verified).")
        st.error(f"**{who} may not open this dashboard.**{why} Ask the administrator to add it to the allow-list.")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()
        _halt()
    with st.sidebar:
        st.caption(f"Signed in as {literal(user.get('email') or user.get('name') or 'user')}")
        if st.button("Log out", key="_agg2exp_logout"):
            st.logout()


def _session_token(config: AuthConfig) -> str:
    """Ties a session's login to the current password hash (a new password logs everyone out)."""
    return hashlib.sha256(("agg2exp-session:" + config.password_hash).encode()).hexdigest()


def _seconds(wait_s: float) -> str:
    return f"{max(1, int(wait_s + 0.999))} s"


_UNCHECKED = {   # why an attempt was not checked, by the throttle's outcome
    "wait": "Too many failed sign-ins from your address: try again in {wait}.",
    "busy": "The server is checking other sign-ins: try again in a few seconds.",
    "full": ("The server is holding back too many addresses after failed sign-ins to take a new one "
             "(a guessing attack?): try again in {wait}, or ask the administrator."),
    "budget": ("Too many failed sign-ins on this server as a whole (a guessing attack?): nobody's password "
               "is checked for now; try again in {wait}."),
}


def _sign_in_error(result, password: str) -> str:
    if result.outcome == "wrong":
        short = len(password) < passwords.MIN_PASSWORD_LENGTH
        hint = f" (team passwords have at least {passwords.MIN_PASSWORD_LENGTH} characters)" if short else ""
        return f"Wrong password{hint}. The next attempt from your address is possible in {_seconds(result.wait_s)}."
    return _UNCHECKED[result.outcome].format(wait=_seconds(result.wait_s)) + " This attempt was not checked."


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
                                   lambda: passwords.password_matches(password, config.password_hash))
        if result.outcome == "ok":
            st.session_state[_SESSION_KEY] = token
            st.rerun()
        st.error(_sign_in_error(result, password))
    _halt()

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
   matches. Failed attempts are throttled for the whole process: per client address (IPv6
   by /48; every browser session of one address shares the delay), by a server-wide budget
   of failures, and by a first-come-first-served queue for the hash slots (``throttle``).
3. **No authentication** otherwise, which is allowed only for a server bound to a
   loopback address (``server.address`` 127.0.0.1 / ::1 / localhost / a unix socket),
   reached by a local client directly rather than through a reverse proxy, by a browser
   whose ``Host`` and ``Origin`` name this machine (a page of another site that rebinds its
   DNS name to 127.0.0.1 is turned away). Anything else shows a refusal page and stops,
   unless ``AGG2EXP_ALLOW_UNAUTHENTICATED=1`` says that an open server is intended.

Every configuration problem fails closed: the page explains it in one line and serves
nothing (``python -m dashboard.auth check`` says the same line before the server starts).
See docs/DEPLOYMENT.md ("Security model").

The package, one concern a module: ``passwords`` (hashes), ``network`` (is a request local),
``config`` (the secrets), ``throttle`` (failed sign-ins), ``gates`` (Streamlit: the only module
that imports it) and ``__main__`` (the command line). Only ``require_auth`` is imported from
here, lazily, so the command line and the pure rules load without Streamlit.
"""
from __future__ import annotations

from typing import Any

__all__ = ["require_auth"]


def __getattr__(name: str) -> Any:
    if name == "require_auth":
        from dashboard.auth.gates import require_auth

        return require_auth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Which access control the secrets configure (``.streamlit/secrets.toml``), pure: no Streamlit.

``parse_config`` turns the secrets mapping into an ``AuthConfig``: OIDC login with an
allow-list, a shared password, or none. Anything that asks for access control but cannot
give it is a ``problem`` of one line, and the gates then serve nothing (fail closed).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from dashboard.auth.passwords import parse_password_hash

SECTION = "agg2exp_auth"
ALLOW_LIST_KEYS = ("allowed_emails", "allowed_domains", "allow_any_identity")
KNOWN_KEYS = ("password_hash", *ALLOW_LIST_KEYS)
LEGACY_KEYS = ("password", "password_sha256", "password_salt")


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


def load_secret_files(paths: Sequence[Path]) -> dict:
    """The secrets Streamlit would load from ``paths`` (later files override earlier top-level keys)."""
    merged: dict = {}
    for path in paths:
        if path.exists():
            try:
                merged.update(tomllib.loads(path.read_text()))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
                raise ValueError(f"{path} cannot be read as TOML ({err})") from None
    return merged

"""Helpers of the access-control tests (tests/dashboard/auth/): a known password, a settable
clock for the throttle, and what an AppTest page shows (served or not, its error lines)."""
from __future__ import annotations

PASSWORD = "correct horse battery staple"
COOKIE = "c" * 40
OIDC = {"redirect_uri": "https://agg2exp.example.org/oauth2callback", "cookie_secret": COOKIE,
        "client_id": "id", "client_secret": "secret",
        "server_metadata_url": "https://login.example.org/.well-known/openid-configuration"}


class Clock:
    """A settable clock for the throttle."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def served(app) -> bool:
    """Whether the page got past the gate: the frame's store caption is drawn."""
    return any(str(c.value).startswith("Store ") for c in app.caption)


def errors(app) -> str:
    return " ".join(str(e.value) for e in app.error) + " ".join(str(m.value) for m in app.markdown)

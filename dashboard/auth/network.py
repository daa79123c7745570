"""Is this request local? Loopback bind addresses, and ``Host`` / ``Origin`` headers that name
this machine, for a server that runs without authentication (pure; no Streamlit).

A web page of another site can rebind its DNS name to 127.0.0.1 and talk to a loopback server
as "itself"; its requests still carry that site's name in ``Host`` and ``Origin``, which is
what these checks look at (docs/DEPLOYMENT.md, "Without authentication").
"""
from __future__ import annotations

import ipaddress
from typing import Sequence
from urllib.parse import urlsplit

from dashboard.text import literal

FORWARDING_HEADERS = ("X-Forwarded-For", "X-Real-Ip", "Forwarded", "X-Forwarded-Host")


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

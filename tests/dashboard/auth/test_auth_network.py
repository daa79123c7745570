"""Is a request local: loopback bind addresses, Host and Origin headers, the refusal rules without authentication."""
from __future__ import annotations

import pytest

from dashboard.auth import network

@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("unix:///run/agg2exp.sock", True), ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
    ("10.0.0.5", False), ("example.org", False), ("127.0.0.1.nip.io", False),
])
def test_loopback_addresses(address, loopback):
    assert network.is_loopback(address) is loopback


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("localhost:8501", True), ("LOCALHOST:8501", True), ("127.0.0.1", True),
    ("127.0.0.1:8501", True), ("::1", True), ("[::1]", True), ("[::1]:8501", True),
    ("evil.example", False), ("evil.example:8501", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io:8501", False), ("0.0.0.0:8501", False), ("10.0.0.5:8501", False), ("", False), (None, False),
    ("localhost:99999", False), ("localhost:abc", False), ("user@localhost", False), ("localhost/x", False),
    ("localhost@evil.example", False), ("[::1]:8501@evil.example", False),
])
def test_loopback_host_names(host, loopback):
    assert network.is_loopback_host(host) is loopback


@pytest.mark.parametrize("origin, loopback", [
    ("http://localhost:8501", True), ("http://127.0.0.1:8501", True), ("https://[::1]:8501", True),
    ("http://localhost", True), ("http://evil.example:8501", False), ("https://agg2exp.hospital.org", False),
    ("null", False), ("", False), ("file://", False), ("ws://localhost:8501", False),
    ("http://localhost.evil.example", False), ("http://user@localhost:8501", False),
    ("http://localhost:8501/path", False),
])
def test_loopback_origins(origin, loopback):
    assert network.is_loopback_origin(origin) is loopback


def test_foreign_host_or_origin_is_refused():
    refuse = network.foreign_name_refusal
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
    refuse = network.unauthenticated_refusal
    assert refuse("127.0.0.1", None, False, allow=False) is None, "local use needs no login"
    assert refuse(None, None, False, allow=False) is None, "all-interfaces bind, local browser"
    assert "0.0.0.0" in refuse("0.0.0.0", None, False, allow=False)
    assert "10.1.2.3" in refuse("10.1.2.3", None, False, allow=False)
    assert "reverse proxy" in refuse("127.0.0.1", None, True, allow=False)
    assert "203.0.113.7" in refuse(None, "203.0.113.7", False, allow=False)
    assert "203.0.113.7" in refuse("127.0.0.1", "203.0.113.7", False, allow=False), "only local clients"
    for case in (("0.0.0.0", None, False), ("127.0.0.1", None, True), (None, "203.0.113.7", False)):
        assert refuse(*case, allow=True) is None, "AGG2EXP_ALLOW_UNAUTHENTICATED=1 overrides"

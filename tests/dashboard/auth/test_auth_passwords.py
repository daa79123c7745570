"""Team-password hashes: round trip, fresh salts, malformed hashes as configuration errors."""
from __future__ import annotations

import pytest

from access import PASSWORD
from dashboard.auth import passwords
from dashboard.auth.config import parse_config

# ------------------------------------------------------------------ hashes
@pytest.mark.parametrize("scheme", ["scrypt", "pbkdf2_sha256"])
def test_password_hash_round_trip(scheme):
    encoded = passwords.hash_password(PASSWORD, scheme)
    assert encoded.startswith(scheme + "$") and PASSWORD not in encoded
    assert passwords.verify_password(PASSWORD, encoded)
    for wrong in ("", PASSWORD + " ", PASSWORD.upper(), "correct horse battery stapl"):
        assert not passwords.verify_password(wrong, encoded)
    assert passwords.hash_password(PASSWORD, scheme) != encoded, "a fresh salt every time"


@pytest.mark.parametrize("encoded", [
    "", "plain-text-password", "scrypt$1$8$1$AAAA$BBBB", "scrypt$16384$8$1$not base64!$AAAA",
    "pbkdf2_sha256$10$c2FsdHNhbHQ=$" + "A" * 44, "md5$abc", "scrypt$16384$8$1$YQ==$YQ==",
])
def test_malformed_hashes_are_configuration_errors(encoded):
    with pytest.raises(ValueError, match="password_hash"):
        passwords.verify_password(PASSWORD, encoded)
    config = parse_config({"agg2exp_auth": {"password_hash": encoded}})
    assert config.mode == "password" and config.problem, "an empty hash fails closed too"

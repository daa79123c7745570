"""The shared team password: salted scrypt / PBKDF2-SHA256 hashes, checked in constant time.

Pure (no Streamlit). The hash is one string for the secret ``[agg2exp_auth] password_hash``,
made by ``python -m dashboard.auth hash-password``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as token_source

HASH_SECRET = "agg2exp_auth.password_hash"   # where the hash lives in the secrets, named in errors
MIN_PASSWORD_LENGTH = 12
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
PBKDF2_ITERATIONS = 600_000


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
        raise ValueError(f"malformed {HASH_SECRET} ({err})") from None
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


def password_matches(password: str, encoded: str) -> bool:
    """What the sign-in form asks: a password shorter than the minimum never matches, and costs no hash.

    A salted hash cannot tell the length of its password, so a hash of a short password made
    around ``hash_password`` opens nothing either.
    """
    return len(password) >= MIN_PASSWORD_LENGTH and verify_password(password, encoded)

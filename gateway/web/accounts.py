"""Passwords and API tokens, as `[http.accounts]` keeps them: scrypt hashes (the standard
library's), written by `parking-gateway user add` and checked by the server.

A hash reads `scrypt:N:r:p$<salt>$<key>` (base64). An API token reads `<account>.<secret>`:
the account it belongs to, so that one hash is checked, not every account's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

# scrypt's cost: 16 MiB and about 60 ms of one x86 core per check (a Pi takes longer); a
# login is rare, and a token once checked is remembered by the server.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_CHARS = 10
TOKEN_BYTES = 32

_HASH = re.compile(r"scrypt:(\d+):(\d+):(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")


class BadHash(ValueError):
    """A stored hash this module cannot check (the config validates its form first)."""


def hash_secret(secret: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of `secret`, in the config's form."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(secret, salt, n, r, p, KEY_BYTES)
    return f"scrypt:{n}:{r}:{p}${_b64(salt)}${_b64(key)}"


def verify_secret(secret: str, hashed: str) -> bool:
    """Whether `secret` is the one `hashed` was made from (in constant time). Raises BadHash."""
    match = _HASH.fullmatch(hashed)
    if match is None:
        raise BadHash("not a scrypt hash of the form scrypt:N:r:p$salt$key")
    n, r, p = (int(group) for group in match.groups()[:3])
    try:
        salt, key = base64.b64decode(match[4], validate=True), base64.b64decode(match[5],
                                                                                validate=True)
        found = _scrypt(secret, salt, n, r, p, len(key))
    except ValueError as e:  # bad base64, or parameters scrypt refuses
        raise BadHash(str(e)) from None
    return hmac.compare_digest(found, key)


def new_token(account: str) -> str:
    """A new API token for `account`: shown once, only its hash is kept."""
    return f"{account}.{secrets.token_urlsafe(TOKEN_BYTES)}"


def token_account(token: str) -> str | None:
    """The account a token names (None if it is not of the form `<account>.<secret>`)."""
    account, dot, secret = token.partition(".")
    return account if dot and account and secret else None


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is less than N=2^15 needs; allow what the form allows.
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=2 * 128 * n * r * p + 2**20)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")

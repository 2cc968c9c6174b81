"""Service keys: 256-bit random secrets, shown once, kept only as a slow hash.

A key reads ``veil_sk_<id>_<secret>``: ``id`` (12 hex digits) is public and
names the key in lists, the trail and revocations; ``secret`` is 32 bytes from
:func:`secrets.token_bytes`, base64url-encoded. The database keeps the id and
``scrypt(secret)`` with a random salt, never the secret, so a copy of the
database does not hand out working keys.

Why scrypt, from the standard library: a 256-bit random secret cannot be
guessed, so the slow hash is defence in depth (a leaked database with weak,
hand-made secrets in it would otherwise be brute-forced at GPU speed); the
vault already stretches passphrases with scrypt, and one KDF in the code base
is easier to review than two. The cost (n = 2**14, r = 8: 16 MiB, tens of
milliseconds) is paid once per key per process: a verified key is remembered
as the SHA-256 of the presented token, so a server does not pay it per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

__all__ = ["KEY_PREFIX", "hash_secret", "new_key", "parse_key", "verify_secret"]

KEY_PREFIX = "veil_sk_"
SECRET_BYTES = 32
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_TOKEN = re.compile(r"^veil_sk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def new_key() -> tuple[str, str, bytes]:
    """A fresh key: ``(token, key_id, secret)``. The token is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_bytes(SECRET_BYTES)
    encoded = base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")
    return f"{KEY_PREFIX}{key_id}_{encoded}", key_id, secret


def parse_key(token: str) -> tuple[str, bytes] | None:
    """``(key_id, secret)`` of a well-formed token, else ``None`` (never echoes the token)."""
    match = _TOKEN.fullmatch(token.strip())
    if match is None:
        return None
    try:
        secret = base64.urlsafe_b64decode(match.group(2) + "=")
    except (binascii.Error, ValueError):
        return None
    if len(secret) != SECRET_BYTES:
        return None
    return match.group(1), secret


def hash_secret(secret: bytes, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (salt and hash in base64) of ``secret``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret, salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=64 * 2**20, dklen=32
    )
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
        f"{b64(salt).decode('ascii')}${b64(digest).decode('ascii')}"
    )


def verify_secret(secret: bytes, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
        digest = hashlib.scrypt(
            secret, salt=salt, n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20, dklen=len(expected)
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(digest, expected)

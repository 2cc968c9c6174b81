"""The vault's keys: the master key and its passphrase, the subkeys, and wrapped data keys.

The master key (KEK) is derived from a passphrase with scrypt, or supplied as
32 raw bytes (``VEIL_VAULT_KEY``, from a secrets manager). Two HKDF-SHA256
subkeys come from it per vault: one wraps data keys, one computes the key
check (an HMAC-SHA256 stored in the manifest, so that a wrong passphrase is
refused at once instead of producing garbage; its first 8 bytes are the key
id ``veil vault status`` shows). New vaults use scrypt with n = 2**17, r = 8,
p = 1 (OWASP's floor, 128 MiB per guess); a vault made with the older
default, n = 2**15, opens with the parameters stored in it.

**Why AES-GCM and not AES key wrap (RFC 3394) for the DEKs.** Key wrap is
deterministic and takes no associated data; GCM with a random 96-bit nonce
lets each wrapped DEK be bound to its vault id, object id and name, so a DEK
moved to another object's entry is refused. One primitive for data and keys
also keeps the format small. (The wrap key and the check key are separate
HKDF-SHA256 subkeys of the master key.)


A wrapped DEK's associated data binds it to its vault, its object id, its
name and, for entries written with the binding (``"binding": 2``), its kind
and recorded path (:func:`dek_aad`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from veil._validate import whole_number
from veil.errors import InvalidInputError, NotFoundError
from veil.vault._format import tampered

__all__ = [
    "BINDING",
    "ENV_KEY",
    "ENV_PASSPHRASE",
    "KEY_BYTES",
    "Keys",
    "MasterKey",
    "bound_entry",
    "decode_raw_key",
    "dek_aad",
    "key_entry",
]

KEY_BYTES = 32
_WRAP_NONCE_BYTES = 12

DEFAULT_SCRYPT_N = 1 << 17  # OWASP floor: n = 2**17, r = 8, p = 1 (128 MiB per guess)
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
_MIN_SCRYPT_N = 2
_MAX_SCRYPT_N = 1 << 22
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_MAX_SCRYPT_BYTES = 1 << 30  # scrypt needs 128 * n * r bytes; a tampered manifest may not ask more
_SALT_BYTES = 16
_MIN_PASSPHRASE_CHARS = 8
ENV_KEY = "VEIL_VAULT_KEY"
ENV_PASSPHRASE = "VEIL_VAULT_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

_CHECK_LABEL = b"veil-vault/key-check/1"
_WRAP_INFO = b"veil-vault/wrap/1"
_CHECK_INFO = b"veil-vault/check/1"
_DEK_AAD = b"veil-vault/dek/1"  # objects sealed before the path binding: name only
_DEK_AAD_BOUND = b"veil-vault/dek/2"  # kind, name and recorded path
BINDING = 2  # the "binding" of a manifest entry whose DEK is bound to its path


# ------------------------------------------------------------------ master keys


def _scrypt_params(n: object, r: object, p: object, *, source: str) -> tuple[int, int, int]:
    # The three are checked together (128*n*r bounds the memory), so a bad one is reported
    # in one message that shows all three, not in whole_number's message for that one.
    try:
        cost = whole_number(n, "n", minimum=_MIN_SCRYPT_N, maximum=_MAX_SCRYPT_N)
        block = whole_number(r, "r", maximum=_MAX_SCRYPT_R)
        lanes = whole_number(p, "p", maximum=_MAX_SCRYPT_P)
    except InvalidInputError:
        pass
    else:
        if cost & (cost - 1) == 0 and 128 * cost * block <= _MAX_SCRYPT_BYTES:
            return cost, block, lanes
    raise InvalidInputError(
        "invalid scrypt parameters",
        expected=f"n a power of two in [2, 2**22], r in [1, {_MAX_SCRYPT_R}], p in [1, {_MAX_SCRYPT_P}], 128*n*r at most 1 GiB ({source})",
        got=f"n={n!r}, r={r!r}, p={p!r}",
        fix="use the defaults (n=2**17, r=8, p=1); a smaller n is for tests only",
    )


class MasterKey:
    """The secret that opens a vault: a passphrase (stretched with scrypt) or 32 raw bytes.

    A passphrase key carries the scrypt parameters to use when it *creates* a
    vault or becomes the new key of a rotation; to open an existing vault the
    parameters (and salt) stored in the vault are used. Its ``repr`` never
    shows the secret.
    """

    __slots__ = ("_n", "_p", "_passphrase", "_r", "_raw")

    def __init__(
        self, *, passphrase: bytes | None, raw: bytes | None, n: int, r: int, p: int
    ) -> None:
        self._passphrase = passphrase
        self._raw = raw
        self._n, self._r, self._p = n, r, p

    @classmethod
    def from_passphrase(
        cls,
        passphrase: str,
        *,
        n: int = DEFAULT_SCRYPT_N,
        r: int = DEFAULT_SCRYPT_R,
        p: int = DEFAULT_SCRYPT_P,
    ) -> MasterKey:
        """A key derived from ``passphrase`` with scrypt (NFC-normalised, UTF-8).

        Args:
            passphrase: At least 8 characters.
            n: scrypt's cost (a power of two). The default, 2**17 (OWASP's
                floor for r=8, p=1), takes about 0.4 s and 128 MiB; a smaller
                value is only for tests (it lowers the cost of guessing).
            r: scrypt's block size.
            p: scrypt's parallelism.

        Raises:
            InvalidInputError: A passphrase shorter than 8 characters, or bad
                scrypt parameters.
        """
        if not isinstance(passphrase, str) or len(passphrase) < _MIN_PASSPHRASE_CHARS:
            raise InvalidInputError(
                "the vault passphrase is too short",
                expected=f"at least {_MIN_PASSPHRASE_CHARS} characters",
                got=f"{len(passphrase) if isinstance(passphrase, str) else 0} characters",
                fix="choose a longer passphrase, or supply a raw key in VEIL_VAULT_KEY",
            )
        n, r, p = _scrypt_params(n, r, p, source="MasterKey.from_passphrase")
        encoded = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        return cls(passphrase=encoded, raw=None, n=n, r=r, p=p)

    @classmethod
    def from_key(cls, key: bytes) -> MasterKey:
        """A raw 256-bit key (for example from a secrets manager); no KDF is applied.

        Raises:
            InvalidInputError: ``key`` is not 32 bytes.
        """
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise InvalidInputError(
                "a raw vault key must be 32 bytes",
                expected="32 random bytes",
                got=f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__,
                fix="generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`",
            )
        return cls(passphrase=None, raw=key, n=DEFAULT_SCRYPT_N, r=DEFAULT_SCRYPT_R, p=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MasterKey:
        """``VEIL_VAULT_KEY`` (64 hex digits or base64 of 32 bytes), else ``VEIL_VAULT_PASSPHRASE``.

        Raises:
            NotFoundError: Neither variable is set.
            InvalidInputError: ``VEIL_VAULT_KEY`` is not a 256-bit key.
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_KEY, "").strip()
        if raw:
            return cls.from_key(decode_raw_key(raw, source=ENV_KEY))
        passphrase = env.get(ENV_PASSPHRASE, "")
        if passphrase:
            return cls.from_passphrase(passphrase)
        raise NotFoundError(
            "no vault secret in the environment",
            expected=f"{ENV_KEY} (a raw key) or {ENV_PASSPHRASE} (a passphrase) to be set",
            got="neither",
            fix=f"export {ENV_PASSPHRASE}, or {ENV_KEY} with 64 hex digits",
        )

    @property
    def kind(self) -> Literal["scrypt", "raw"]:
        """``"scrypt"`` for a passphrase, ``"raw"`` for a raw key."""
        return "raw" if self._raw is not None else "scrypt"

    def __repr__(self) -> str:
        if self._raw is not None:
            return "MasterKey(raw key)"
        return f"MasterKey(passphrase, scrypt n={self._n} r={self._r} p={self._p})"

    def _new_kdf(self) -> dict[str, Any]:
        if self._raw is not None:
            return {"name": "raw"}
        salt = secrets.token_bytes(_SALT_BYTES)
        return {
            "name": "scrypt",
            "salt": base64.b64encode(salt).decode("ascii"),
            "n": self._n,
            "r": self._r,
            "p": self._p,
        }

    def _derive(self, kdf: Mapping[str, Any]) -> bytes:
        name = kdf.get("name")
        if name == "raw":
            if self._raw is None:
                raise InvalidInputError(
                    "this vault opens with a raw key, not a passphrase",
                    expected=f"a 256-bit key (in {ENV_KEY})",
                    got="a passphrase",
                    fix=f"set {ENV_KEY} to the vault's key",
                )
            return self._raw
        if name != "scrypt":
            raise tampered("the vault manifest", f"unknown key derivation {name!r}")
        if self._passphrase is None:
            raise InvalidInputError(
                "this vault opens with a passphrase, not a raw key",
                expected=f"a passphrase ({ENV_PASSPHRASE}, --passphrase-env or the prompt)",
                got=f"a raw key ({ENV_KEY})",
                fix=f"unset {ENV_KEY} and supply the passphrase",
            )
        n, r, p = _scrypt_params(
            kdf.get("n"), kdf.get("r"), kdf.get("p"), source="the vault manifest"
        )
        try:
            salt = base64.b64decode(str(kdf.get("salt")), validate=True)
        except binascii.Error:
            salt = b""
        if len(salt) != _SALT_BYTES:
            raise tampered("the vault manifest", "a scrypt salt that is not 16 bytes")
        return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(self._passphrase)


def decode_raw_key(raw: str, *, source: str) -> bytes:
    """32 bytes from 64 hex digits or base64 (standard or URL-safe); ``source`` names it in errors."""
    raw = raw.strip()
    key = b""
    if len(raw) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            key = bytes.fromhex(raw)
    if not key:
        with contextlib.suppress(binascii.Error, ValueError):
            key = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    if len(key) != KEY_BYTES:
        raise InvalidInputError(
            "the raw vault key is not a 256-bit key",
            expected=f"{source} to hold 64 hex digits or the base64 of 32 bytes",
            got=f"{len(raw)} characters that decode to {len(key)} bytes",
            fix="generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`",
        )
    return key


# ------------------------------------------------------------------ subkeys and wrapped data keys


@dataclass(frozen=True, repr=False)
class Keys:
    """Subkeys of one master key for one vault (never printed)."""

    wrap: bytes
    check: bytes

    @classmethod
    def derive(cls, kek: bytes, vault_id: bytes) -> Keys:
        def sub(info: bytes) -> bytes:
            return HKDF(
                algorithm=hashes.SHA256(), length=KEY_BYTES, salt=vault_id, info=info
            ).derive(kek)

        return cls(wrap=sub(_WRAP_INFO), check=sub(_CHECK_INFO))

    def check_value(self, vault_id: bytes) -> bytes:
        return hmac.new(self.check, _CHECK_LABEL + vault_id, sha256).digest()

    def wrap_dek(self, dek: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_WRAP_NONCE_BYTES)
        return nonce + AESGCM(self.wrap).encrypt(nonce, dek, aad)

    def unwrap_dek(self, wrapped: bytes, aad: bytes) -> bytes:
        return AESGCM(self.wrap).decrypt(
            wrapped[:_WRAP_NONCE_BYTES], wrapped[_WRAP_NONCE_BYTES:], aad
        )


def key_entry(master: MasterKey, vault_id: bytes) -> tuple[dict[str, Any], Keys]:
    kdf = master._new_kdf()  # noqa: SLF001 - the vault and its keys are one unit
    keys = Keys.derive(master._derive(kdf), vault_id)  # noqa: SLF001
    check = keys.check_value(vault_id)
    return {"id": check[:8].hex(), "check": check.hex(), "kdf": kdf}, keys


def dek_aad(
    vault_id: bytes, object_id: bytes, name: str, *, entry: Mapping[str, Any] | None
) -> bytes:
    """The associated data of a wrapped DEK.

    ``entry`` is the object's manifest entry (``None`` for an old, unbound
    one): its kind and recorded path are bound with the name, each
    length-prefixed, so that a path rewritten in the manifest, or a file
    relabelled as a blob, no longer unwraps.
    """
    if entry is None:
        return _DEK_AAD + vault_id + object_id + name.encode("utf-8")
    kind = b"b" if entry.get("kind") == "blob" else b"f"
    path = entry.get("path")
    fields = [name.encode("utf-8"), str(path).encode("utf-8") if path is not None else b""]
    framed = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    return _DEK_AAD_BOUND + vault_id + object_id + kind + framed


def bound_entry(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``entry`` if its DEK is bound to its kind and path, ``None`` for an older entry."""
    return entry if entry.get("binding") == BINDING else None

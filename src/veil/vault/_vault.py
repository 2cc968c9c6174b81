"""Encryption at rest: AES-256-GCM envelope encryption of files and secrets in a workspace.

Every object (a dataset file, a model file, an HE secret key) gets its own
random 256-bit **data key** (DEK). The object is encrypted with it in chunks
of AES-256-GCM; the DEK itself is **wrapped** (encrypted) by the vault's
**master key** (KEK) and kept in the vault's manifest, never beside the data.
The master key is derived from a passphrase with scrypt, or supplied as 32 raw
bytes (``VEIL_VAULT_KEY``, from a secrets manager). Nothing here is written by
hand except the framing: the primitives (AES-GCM, scrypt, HKDF, HMAC) are all
``cryptography``'s.

Where the state lives
---------------------
``<workspace>/vault/vault.json`` (mode 0600, replaced atomically: temporary
file, fsync, ``os.replace``, fsync of the directory), beside a lock file that
serialises writers::

    {"format": "veil-vault", "version": 1, "vault_id": "<32 hex>",
     "created": "...", "rotated": null, "rotations": 0,
     "key": {"id": "<16 hex>", "check": "<64 hex>",
             "kdf": {"name": "scrypt", "salt": "<base64>", "n": 131072, "r": 8, "p": 1}},
     "objects": {"<object id, 32 hex>": {"name": "adult.csv.veil", "kind": "file",
                 "path": "/abs/adult.csv.veil", "size": 3974305,
                 "sealed": "...", "binding": 2,
                 "dek": "<base64 of nonce || wrapped DEK || tag>"}}}

``kdf`` is ``{"name": "raw"}`` for a vault opened by a raw key. ``check`` is an
HMAC-SHA256 under a subkey of the master key: a wrong passphrase is refused
at once instead of producing garbage, and ``id`` (its first 8 bytes) names the
key in ``veil vault status``. Times and sizes are informational; what
matters for security (the key check, and each wrapped DEK bound to its object's
id, name, kind and recorded path) is authenticated. New vaults use scrypt with
n = 2**17, r = 8, p = 1 (OWASP's floor, 128 MiB per guess); a vault made with
the older default, n = 2**15, opens with the parameters stored in it.

**Why the DEKs live in the manifest.** Rotation re-wraps every DEK under the
new master key and replaces the manifest in one atomic step: before the
``os.replace`` every object opens with the old key only, after it with the new
key only, and no crash in between can leave an object that neither opens. No
data file is touched, not even its header, so a rotation costs milliseconds
for terabytes, and an in-memory blob sealed with :meth:`Vault.seal` (stored by
its caller wherever it likes) keeps working after a rotation. The price: the
manifest must be backed up with the data, as a LUKS header must.

**Why AES-GCM and not AES key wrap (RFC 3394) for the DEKs.** Key wrap is
deterministic and takes no associated data; GCM with a random 96-bit nonce
lets each wrapped DEK be bound to its vault id, object id and name, so a DEK
moved to another object's entry is refused. One primitive for data and keys
also keeps the format small. (The wrap key and the check key are separate
HKDF-SHA256 subkeys of the master key.)

Object format, version 1 (files and sealed blobs alike)
-------------------------------------------------------
A header, then chunks::

    offset  size  field
    0       7     magic b"VEILVLT"
    7       1     format version (1)
    8       1     algorithm (1: AES-256-GCM, chunked)
    9       1     reserved (0)
    10      4     chunk size in bytes, big-endian (default 1 MiB)
    14      16    vault id
    30      16    object id
    46      7     nonce prefix (random)
    53      2     name length, big-endian
    55      n     name (UTF-8)
    55+n    ...   chunks: AES-256-GCM(DEK, nonce, chunk, aad=header)

Each chunk but the last holds exactly ``chunk size`` bytes of plaintext (plus
the 16-byte tag); the last holds the rest, possibly nothing. The nonce of
chunk ``i`` is ``prefix || i (4 bytes, big-endian) || final (1 byte: 1 for the
last chunk, else 0)``, the STREAM construction of Hoang, Reyhanitabar, Rogaway
and Vizár: a chunk moved, dropped, duplicated or appended fails its tag, and so
does a file cut at a chunk boundary (its new last chunk was not sealed as
final). The whole header is each chunk's associated data, so a flipped header
byte is caught too. Files of any size stream through memory one chunk at a
time; a decrypted file is written to a temporary file and moved into place
only once its last tag has verified.

The **name** is bound into the header and into the wrapped DEK. For files it
is the sealed file's own name (``adult.csv.veil``) unless given, and
decryption checks it against the name of the file it is given. The **path**
a file was sealed at (absolute, normalised) is recorded in its manifest entry
and bound into its wrapped DEK (``"binding": 2``), and decryption checks it
against the path of the file it is given: a sealed file copied over another,
even one of the same name in another folder (``2025/payroll.csv.veil`` over
``2026/payroll.csv.veil``), is refused, and a path rewritten in the manifest no
longer unwraps. A file moved on purpose opens with ``sealed_path=``
(``--sealed-path``). Entries written before the binding (no ``binding``) still
open: their recorded path is checked, though not authenticated, with a
warning, and the next rotation binds them.

Threat model in one line: this protects files at rest and in backups; it does
not protect against a compromised running process, which sees the keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hmac
import json
import os
import secrets
import struct
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from io import BytesIO
from pathlib import Path
from typing import IO, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, ProgressEvent
from veil.workspace import Workspace

__all__ = ["MasterKey", "SealedObject", "Vault", "VaultStatus"]

VAULT_DIRNAME = "vault"
MANIFEST_FILENAME = "vault.json"
LOCK_FILENAME = ".lock"
MANIFEST_FORMAT = "veil-vault"
MANIFEST_VERSION = 1

MAGIC = b"VEILVLT"
FORMAT_VERSION = 1
ALGORITHM_AES256GCM_CHUNKED = 1
CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 1 << 26
MAX_NAME_BYTES = 1024
_HEADER = struct.Struct(">7sBBBI16s16s7sH")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16
KEY_BYTES = 32
_WRAP_NONCE_BYTES = 12
_PREFIX_BYTES = 7
_MAX_CHUNKS = 1 << 32

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
_DEK_AAD = b"veil-vault/dek/1"  # objects sealed before issue 17: name only
_DEK_AAD_BOUND = b"veil-vault/dek/2"  # kind, name and recorded path
BINDING = 2  # the "binding" of a manifest entry whose DEK is bound to its path

Kind = Literal["file", "blob"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tampered(what: str, got: str, *, fix: str | None = None) -> InvalidInputError:
    return InvalidInputError(
        f"{what} is damaged or was tampered with",
        expected="every byte as the vault sealed it",
        got=got,
        fix=fix or "restore it from a backup; do not trust any part of its contents",
    )


# ------------------------------------------------------------------ master keys


def _scrypt_params(n: object, r: object, p: object, *, source: str) -> tuple[int, int, int]:
    if (
        isinstance(n, int)
        and isinstance(r, int)
        and isinstance(p, int)
        and not any(isinstance(v, bool) for v in (n, r, p))
        and _MIN_SCRYPT_N <= n <= _MAX_SCRYPT_N
        and n & (n - 1) == 0
        and 1 <= r <= _MAX_SCRYPT_R
        and 1 <= p <= _MAX_SCRYPT_P
        and 128 * n * r <= _MAX_SCRYPT_BYTES
    ):
        return n, r, p
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
            raise _tampered("the vault manifest", f"unknown key derivation {name!r}")
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
            raise _tampered("the vault manifest", "a scrypt salt that is not 16 bytes")
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


# ------------------------------------------------------------------ key material


@dataclass(frozen=True, repr=False)
class _Keys:
    """Subkeys of one master key for one vault (never printed)."""

    wrap: bytes
    check: bytes

    @classmethod
    def derive(cls, kek: bytes, vault_id: bytes) -> _Keys:
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


def _dek_aad(
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


def _absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute and normalised lexically (``..`` removed).

    Not ``Path.resolve()``: that follows symbolic links, so a link planted where
    ``2026/payroll.csv.veil`` was, pointing at ``2025/payroll.csv.veil``, would
    pass for the 2025 object's recorded path.
    """
    return os.path.abspath(path)  # noqa: PTH100 - lexical on purpose (see above)


def _bound(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``entry`` if its DEK is bound to its kind and path, ``None`` for an older entry."""
    return entry if entry.get("binding") == BINDING else None


def _check_name(name: object) -> str:
    encoded = name.encode("utf-8") if isinstance(name, str) else b""
    if not encoded or len(encoded) > MAX_NAME_BYTES or "\x00" in str(name):
        raise InvalidInputError(
            "invalid name for a sealed object",
            expected=f"a non-empty string of at most {MAX_NAME_BYTES} UTF-8 bytes without NUL",
            got=repr(name)[:80],
            fix="for example name='he/ckks-secret-key'",
        )
    return str(name)


def _check_chunk_size(chunk_size: object) -> int:
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise InvalidInputError(
            "invalid chunk size",
            expected=f"a whole number of bytes in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]",
            got=repr(chunk_size),
            fix=f"leave the default ({CHUNK_SIZE} bytes)",
        )
    return chunk_size


# ------------------------------------------------------------------ the object format


@dataclass(frozen=True)
class _Header:
    chunk_size: int
    vault_id: bytes
    object_id: bytes
    prefix: bytes
    name: str

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        fixed = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            ALGORITHM_AES256GCM_CHUNKED,
            0,
            self.chunk_size,
            self.vault_id,
            self.object_id,
            self.prefix,
            len(name),
        )
        return fixed + name

    @classmethod
    def read(cls, stream: IO[bytes], *, what: str) -> tuple[_Header, bytes]:
        fixed = stream.read(HEADER_BYTES)
        if len(fixed) < len(MAGIC) or not fixed.startswith(MAGIC):
            raise InvalidInputError(
                f"{what} is not a Veil vault object",
                expected=f"a file or blob starting with {MAGIC.decode()} (written by veil vault encrypt or Vault.seal)",
                got=f"{len(fixed)} bytes starting {fixed[:8]!r}" if fixed else "an empty input",
                fix="pass the sealed file (.veil), not the original",
            )
        if len(fixed) < HEADER_BYTES:
            raise _tampered(what, f"a header cut short at {len(fixed)} of {HEADER_BYTES} bytes")
        _, version, algorithm, reserved, chunk_size, vault_id, object_id, prefix, size = (
            _HEADER.unpack(fixed)
        )
        if version != FORMAT_VERSION:
            raise InvalidInputError(
                f"{what} has an unsupported vault format version",
                expected=f"version {FORMAT_VERSION}",
                got=f"version {version}",
                fix="open it with the Veil release that wrote it (or a newer one)",
            )
        if algorithm != ALGORITHM_AES256GCM_CHUNKED or reserved != 0:
            raise _tampered(what, f"algorithm byte {algorithm} and reserved byte {reserved}")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise _tampered(what, f"a chunk size of {chunk_size} bytes")
        if size == 0 or size > MAX_NAME_BYTES:
            raise _tampered(what, f"a name length of {size} bytes")
        raw_name = stream.read(size)
        if len(raw_name) != size:
            raise _tampered(what, "a header cut short inside the name")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise _tampered(what, "a name that is not UTF-8") from None
        header = cls(chunk_size, vault_id, object_id, prefix, name)
        return header, fixed + raw_name


def _nonce(prefix: bytes, index: int, *, final: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _encrypt_stream(
    source: IO[bytes],
    sink: IO[bytes],
    header: _Header,
    dek: bytes,
    *,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Write ``header`` and the chunks of ``source``; return the plaintext size."""
    aad = header.encode()
    sink.write(aad)
    cipher = AESGCM(dek)
    index = 0
    total = 0
    chunk = _read_exactly(source, header.chunk_size)
    while True:
        following = (
            _read_exactly(source, header.chunk_size) if len(chunk) == header.chunk_size else b""
        )
        final = not following
        if index >= _MAX_CHUNKS:
            raise InvalidInputError(
                "the input is too large for one vault object",
                expected=f"at most {_MAX_CHUNKS} chunks of {header.chunk_size} bytes",
                got="more",
                fix="split the file, or use a larger chunk size",
            )
        sink.write(cipher.encrypt(_nonce(header.prefix, index, final=final), chunk, aad))
        total += len(chunk)
        if on_chunk is not None:
            on_chunk(total)
        if final:
            return total
        chunk = following
        index += 1


def _decrypt_stream(
    source: IO[bytes],
    sink: IO[bytes],
    header: _Header,
    aad: bytes,
    dek: bytes,
    *,
    what: str,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Verify and write the plaintext of every chunk; return its size."""
    cipher = AESGCM(dek)
    block = header.chunk_size + TAG_BYTES
    index = 0
    total = 0
    chunk = _read_exactly(source, block)
    while True:
        if len(chunk) < TAG_BYTES:
            raise _tampered(what, f"a file cut short at chunk {index}")
        following = _read_exactly(source, block) if len(chunk) == block else b""
        final = not following
        try:
            plain = cipher.decrypt(_nonce(header.prefix, index, final=final), chunk, aad)
        except InvalidTag:
            raise _tampered(
                what,
                f"chunk {index} fails authentication (a changed byte, a chunk moved, "
                "dropped or added, or a file cut short)",
            ) from None
        sink.write(plain)
        total += len(plain)
        if on_chunk is not None:
            on_chunk(total)
        if final:
            return total
        chunk = following
        index += 1


# ------------------------------------------------------------------ files on disk


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file (0600) beside ``path``, fsynced; the caller moves it into place."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp_path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream, temp_path
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _replace(temporary: Path, path: Path) -> None:
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_atomic(path: Path, data: bytes) -> None:
    with _atomic_output(path) as (stream, temporary):
        stream.write(data)
    _replace(temporary, path)


# ------------------------------------------------------------------ public records


@dataclass(frozen=True)
class SealedObject:
    """One object the vault holds a data key for.

    Attributes:
        name: The name bound into the object (a file's sealed name, or a blob's name).
        object_id: Random 128-bit id, hex.
        kind: ``"file"`` (``encrypt_file``) or ``"blob"`` (``seal``).
        path: Where a file was sealed to (absolute); ``None`` for blobs.
        size: Plaintext bytes.
        sealed_at: When it was sealed (ISO 8601, UTC).
    """

    name: str
    object_id: str
    kind: Kind
    path: str | None
    size: int
    sealed_at: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (no key material)."""
        return {
            "name": self.name,
            "object_id": self.object_id,
            "kind": self.kind,
            "path": self.path,
            "size": self.size,
            "sealed_at": self.sealed_at,
        }


@dataclass(frozen=True)
class VaultStatus:
    """What ``veil vault status`` shows; readable without the key, and holding no secret.

    Attributes:
        path: The vault's directory.
        exists: Whether a vault has been created there.
        vault_id: The vault's random id (hex), fixed for its life.
        key_id: Fingerprint of the current master key (changes on rotation).
        kdf: ``{"name": "scrypt", "n", "r", "p"}`` or ``{"name": "raw"}`` (no salt).
        created: When the vault was created.
        rotated: When its master key was last rotated, or ``None``.
        rotations: How many times it was rotated.
        objects: The sealed objects, oldest first.
    """

    path: Path
    exists: bool
    vault_id: str | None = None
    key_id: str | None = None
    kdf: dict[str, Any] | None = None
    created: str | None = None
    rotated: str | None = None
    rotations: int = 0
    objects: tuple[SealedObject, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; file objects also say whether the sealed file is still there."""
        objects = []
        for item in self.objects:
            entry = item.to_dict()
            entry["present"] = Path(item.path).is_file() if item.path else None
            objects.append(entry)
        return {
            "path": str(self.path),
            "exists": self.exists,
            "vault_id": self.vault_id,
            "key_id": self.key_id,
            "kdf": self.kdf,
            "created": self.created,
            "rotated": self.rotated,
            "rotations": self.rotations,
            "objects": objects,
        }


# ------------------------------------------------------------------ the manifest


def _manifest_path(directory: Path) -> Path:
    return directory / MANIFEST_FILENAME


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = _manifest_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _tampered(str(path), f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise _tampered(str(path), "a JSON document that is not a Veil vault manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInputError(
            "the vault manifest has an unsupported version",
            expected=f"version {MANIFEST_VERSION}",
            got=f"version {manifest.get('version')!r}",
            fix="use the Veil release that wrote it (or a newer one)",
        )
    for field, kind in (("vault_id", str), ("key", dict), ("objects", dict)):
        if not isinstance(manifest.get(field), kind):
            raise _tampered(str(path), f"a missing or malformed {field!r}")
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    _write_atomic(_manifest_path(directory), data)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _unhex(value: object, size: int, *, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise _tampered("the vault manifest", f"a malformed {what}")
    return raw


def _record(object_id: str, entry: Mapping[str, Any]) -> SealedObject:
    kind: Kind = "blob" if entry.get("kind") == "blob" else "file"
    path = entry.get("path")
    return SealedObject(
        name=str(entry.get("name")),
        object_id=object_id,
        kind=kind,
        path=str(path) if path is not None else None,
        size=int(entry.get("size", 0)),
        sealed_at=str(entry.get("sealed")),
    )


def _status(directory: Path, manifest: Mapping[str, Any] | None) -> VaultStatus:
    if manifest is None:
        return VaultStatus(path=directory, exists=False)
    key = manifest["key"]
    kdf = dict(key.get("kdf") or {})
    kdf.pop("salt", None)
    objects = tuple(_record(oid, entry) for oid, entry in manifest["objects"].items())
    return VaultStatus(
        path=directory,
        exists=True,
        vault_id=str(manifest["vault_id"]),
        key_id=str(key.get("id")),
        kdf=kdf,
        created=manifest.get("created"),
        rotated=manifest.get("rotated"),
        rotations=int(manifest.get("rotations", 0)),
        objects=objects,
    )


def _key_entry(master: MasterKey, vault_id: bytes) -> tuple[dict[str, Any], _Keys]:
    kdf = master._new_kdf()  # noqa: SLF001 - the vault and its keys are one unit
    keys = _Keys.derive(master._derive(kdf), vault_id)  # noqa: SLF001
    check = keys.check_value(vault_id)
    return {"id": check[:8].hex(), "check": check.hex(), "kdf": kdf}, keys


# ------------------------------------------------------------------ the vault


class Vault:
    """A workspace's vault, opened with its master key.

    Use :meth:`open` to get one; :meth:`inspect` reads the status without a key::

        vault = Vault.open(MasterKey.from_env(), create=True)
        vault.encrypt_file("adult.csv", "adult.csv.veil")
        blob = vault.seal(secret_key_bytes, name="he/ckks-secret-key")
    """

    def __init__(self, directory: Path, vault_id: bytes, key_id: str, keys: _Keys) -> None:
        self._dir = directory
        self._vault_id = vault_id
        self._key_id = key_id
        self._keys = keys

    def __repr__(self) -> str:
        return f"Vault({str(self._dir)!r}, key_id={self._key_id!r})"

    @staticmethod
    def _directory(workspace: Workspace | None) -> Path:
        return (workspace or Workspace.locate()).home / VAULT_DIRNAME

    @classmethod
    def inspect(cls, workspace: Workspace | None = None) -> VaultStatus:
        """The vault's status, read without any key (``exists`` is false before the first seal)."""
        directory = cls._directory(workspace)
        return _status(directory, _read_manifest(directory))

    @classmethod
    def open(
        cls, master: MasterKey, workspace: Workspace | None = None, *, create: bool = False
    ) -> Vault:
        """Open the vault of ``workspace`` (default: the current one) with ``master``.

        Args:
            master: The passphrase or raw key.
            workspace: The workspace; found from the current directory if omitted.
            create: Create the vault (with ``master`` as its key) if there is none yet.

        Raises:
            NotFoundError: There is no vault and ``create`` is false.
            InvalidInputError: ``master`` is not the vault's key, or the manifest is damaged.
        """
        directory = cls._directory(workspace)
        manifest = _read_manifest(directory)
        if manifest is None:
            if not create:
                raise NotFoundError(
                    "this workspace has no vault yet",
                    expected=f"{_manifest_path(directory)} to exist",
                    got="no vault",
                    fix="seal something first (veil vault encrypt FILE), which creates it",
                )
            with _locked(directory):
                manifest = _read_manifest(directory)  # another process may have won the race
                if manifest is None:
                    vault_id = secrets.token_bytes(16)
                    key, keys = _key_entry(master, vault_id)
                    manifest = {
                        "format": MANIFEST_FORMAT,
                        "version": MANIFEST_VERSION,
                        "vault_id": vault_id.hex(),
                        "created": _now(),
                        "rotated": None,
                        "rotations": 0,
                        "key": key,
                        "objects": {},
                    }
                    _write_manifest(directory, manifest)
                    return cls(directory, vault_id, key["id"], keys)
        return cls._unlock(directory, manifest, master)

    @classmethod
    def _unlock(cls, directory: Path, manifest: Mapping[str, Any], master: MasterKey) -> Vault:
        vault_id = _unhex(manifest["vault_id"], 16, what="vault id")
        key = manifest["key"]
        kek = master._derive(key.get("kdf") or {})  # noqa: SLF001
        keys = _Keys.derive(kek, vault_id)
        stored = _unhex(key.get("check"), 32, what="key check value")
        if not hmac.compare_digest(keys.check_value(vault_id), stored):
            raise InvalidInputError(
                "this secret does not open the vault",
                expected=f"the passphrase or key of vault key {key.get('id')}",
                got="a secret whose key check does not match",
                fix="check the passphrase (or VEIL_VAULT_KEY); after a rotation only the new secret opens the vault",
            )
        return cls(directory, vault_id, str(key.get("id")), keys)

    @property
    def key_id(self) -> str:
        """Fingerprint of the master key this vault was opened with."""
        return self._key_id

    def status(self) -> VaultStatus:
        """The vault's status now (the same as :meth:`inspect`)."""
        return _status(self._dir, _read_manifest(self._dir))

    # -------------------------------------------------------------- manifest access

    def _current(self) -> dict[str, Any]:
        manifest = _read_manifest(self._dir)
        if manifest is None:
            raise NotFoundError(
                "the vault manifest has disappeared",
                expected=f"{_manifest_path(self._dir)} to exist",
                got="no such file",
                fix="restore .veil/vault/ from a backup; without it no sealed object opens",
            )
        if manifest["key"].get("id") != self._key_id:
            raise InvalidInputError(
                "the vault's master key was rotated since it was opened",
                expected=f"key {self._key_id}",
                got=f"key {manifest['key'].get('id')}",
                fix="open the vault again with the new secret",
            )
        return manifest

    def _register(
        self,
        header: _Header,
        dek: bytes,
        *,
        kind: Kind,
        path: Path | None,
        size: int,
    ) -> SealedObject:
        """Add the wrapped DEK to the manifest (the caller holds the lock)."""
        manifest = self._current()
        entry: dict[str, Any] = {
            "name": header.name,
            "kind": kind,
            "path": str(path) if path is not None else None,
            "size": size,
            "sealed": _now(),
            "binding": BINDING,
        }
        aad = _dek_aad(self._vault_id, header.object_id, header.name, entry=entry)
        entry["dek"] = base64.b64encode(self._keys.wrap_dek(dek, aad)).decode("ascii")
        manifest["objects"][header.object_id.hex()] = entry
        _write_manifest(self._dir, manifest)
        return _record(header.object_id.hex(), entry)

    def _dek_for(
        self, header: _Header, *, what: str, expected_name: str | None, at: str | None
    ) -> tuple[bytes, SealedObject]:
        """The object's DEK; ``at`` is the path a file is expected to be recorded at (``None``
        for a blob)."""
        if header.vault_id != self._vault_id:
            raise InvalidInputError(
                f"{what} was sealed by another vault",
                expected=f"an object of vault {self._vault_id.hex()}",
                got=f"vault {header.vault_id.hex()}",
                fix="decrypt it in the workspace that sealed it",
            )
        if expected_name is not None and header.name != expected_name:
            raise InvalidInputError(
                f"{what} was sealed under another name (swapped with another object, or renamed)",
                expected=f"an object named {expected_name!r}",
                got=f"an object named {header.name!r}",
                fix=f"if it was renamed on purpose, pass name={header.name!r} (--name)",
            )
        entry = self._current()["objects"].get(header.object_id.hex())
        if not isinstance(entry, dict):
            raise _tampered(
                what,
                f"object id {header.object_id.hex()}, which this vault has no data key for",
                fix="restore the file, or the vault manifest, from a backup",
            )
        recorded = entry.get("path")
        if at is None and entry.get("kind") == "file":
            raise InvalidInputError(
                f"{what} is a sealed file, not a blob",
                expected="a blob written by Vault.seal",
                got=f"the file sealed at {recorded}",
                fix="open it with decrypt_file (veil vault decrypt)",
            )
        if at is not None and entry.get("kind") == "file":
            where = _absolute(recorded) if isinstance(recorded, str) else None
            if where != at:
                raise InvalidInputError(
                    f"{what} was sealed at another path (copied or moved over this file)",
                    expected=f"the object sealed at {at}",
                    got=f"the object sealed at {recorded}",
                    fix=f"restore {at} from a backup; if the file was moved there on purpose, "
                    f"pass sealed_path={recorded!r} (--sealed-path)",
                )
        bound = _bound(entry)
        try:
            wrapped = base64.b64decode(str(entry.get("dek")), validate=True)
            dek = self._keys.unwrap_dek(
                wrapped, _dek_aad(self._vault_id, header.object_id, header.name, entry=bound)
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise _tampered(
                f"the data key of {what} (in the vault manifest) or its header",
                "a wrapped data key that does not authenticate for this object "
                "(with its name, kind and recorded path)",
            ) from None
        if bound is None and entry.get("kind") == "file":
            warnings.warn(
                f"{what} was sealed by an older Veil: its data key is not bound to its path, "
                "so the path recorded in the vault manifest is checked but not authenticated; "
                "`veil vault rotate` binds every object to its path",
                UserWarning,
                stacklevel=3,  # the caller of decrypt_file
            )
        return dek, _record(header.object_id.hex(), entry)

    # -------------------------------------------------------------- blobs

    def seal(self, data: bytes, *, name: str, chunk_size: int = CHUNK_SIZE) -> bytes:
        """Encrypt ``data`` under a fresh data key; the blob opens with :meth:`unseal`.

        The blob can be stored anywhere; its wrapped data key stays in the
        vault, so it keeps opening after :meth:`rotate`.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInputError(
                "only bytes can be sealed",
                expected="bytes",
                got=type(data).__name__,
                fix="serialise the value first",
            )
        header = _Header(
            chunk_size=_check_chunk_size(chunk_size),
            vault_id=self._vault_id,
            object_id=secrets.token_bytes(16),
            prefix=secrets.token_bytes(_PREFIX_BYTES),
            name=_check_name(name),
        )
        dek = AESGCM.generate_key(bit_length=256)
        sink = BytesIO()
        size = _encrypt_stream(BytesIO(bytes(data)), sink, header, dek)
        with _locked(self._dir):
            self._register(header, dek, kind="blob", path=None, size=size)
        return sink.getvalue()

    def unseal(self, blob: bytes, *, name: str) -> bytes:
        """The plaintext of a blob from :meth:`seal` under the same ``name``.

        Raises:
            InvalidInputError: The blob was changed, cut short, sealed under
                another name or by another vault.
        """
        what = f"the sealed blob {name!r}"
        stream = BytesIO(bytes(blob))
        header, aad = _Header.read(stream, what=what)
        dek, _ = self._dek_for(header, what=what, expected_name=_check_name(name), at=None)
        sink = BytesIO()
        _decrypt_stream(stream, sink, header, aad, dek, what=what)
        return sink.getvalue()

    # -------------------------------------------------------------- files

    @staticmethod
    def _check_paths(source: Path, output: Path, *, overwrite: bool) -> None:
        if not source.exists():
            raise NotFoundError(
                f"{source} does not exist",
                expected="an existing file",
                got="no such file",
                fix="check the path",
            )
        if not source.is_file():
            raise InvalidInputError(
                f"{source} is not a regular file",
                expected="a file",
                got="a directory or special file",
                fix="pass a file (archive a directory first)",
            )
        if output.exists() and output.resolve() == source.resolve():
            raise InvalidInputError(
                "the output is the input",
                expected="an output path other than the input",
                got=str(output),
                fix="choose another output path",
            )
        if output.exists() and not overwrite:
            raise ConflictError(
                f"{output} already exists",
                expected="an output path that does not exist",
                got="an existing file",
                fix="choose another output path, or pass --force (overwrite=True) to replace it",
            )
        if output.is_dir():
            raise InvalidInputError(
                f"{output} is a directory",
                expected="an output file path",
                got="a directory",
                fix="name the output file",
            )
        if not output.parent.is_dir():
            raise NotFoundError(
                f"the output directory {output.parent} does not exist",
                expected="an existing directory",
                got="no such directory",
                fix="create it first",
            )

    @staticmethod
    def _progress(
        progress: ProgressCallback | None, task: str, total: int
    ) -> Callable[[int], None] | None:
        if progress is None:
            return None

        def report(done: int) -> None:
            progress(ProgressEvent(task, completed=done, total=total, unit="bytes"))

        return report

    def encrypt_file(
        self,
        source: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        name: str | None = None,
        overwrite: bool = False,
        chunk_size: int = CHUNK_SIZE,
        progress: ProgressCallback | None = None,
    ) -> SealedObject:
        """Encrypt ``source`` into ``output`` (complete, or not at all), chunk by chunk.

        Args:
            source: The plaintext file (left as it is).
            output: The sealed file to write (mode 0600).
            name: The name bound into the object; default ``output``'s file name.
            overwrite: Replace an existing ``output``.
            chunk_size: Plaintext bytes per chunk.
            progress: Receives byte counts.

        Raises:
            NotFoundError: ``source`` does not exist.
            ConflictError: ``output`` exists and ``overwrite`` is false.
        """
        src, dst = Path(source), Path(_absolute(output))
        self._check_paths(src, dst, overwrite=overwrite)
        header = _Header(
            chunk_size=_check_chunk_size(chunk_size),
            vault_id=self._vault_id,
            object_id=secrets.token_bytes(16),
            prefix=secrets.token_bytes(_PREFIX_BYTES),
            name=_check_name(name if name is not None else dst.name),
        )
        dek = AESGCM.generate_key(bit_length=256)
        total = src.stat().st_size
        on_chunk = self._progress(progress, f"encrypt {src.name}", total)
        with src.open("rb") as reader, _atomic_output(dst) as (sink, temporary):
            size = _encrypt_stream(reader, sink, header, dek, on_chunk=on_chunk)
        try:
            with _locked(self._dir):
                # Key first, then the file: a crash between the two leaves an unused key, never
                # a sealed file without one.
                record = self._register(header, dek, kind="file", path=dst, size=size)
                _replace(temporary, dst)
                self._forget_replaced(dst, keep=record.object_id)
        finally:
            temporary.unlink(missing_ok=True)
        return record

    def _forget_replaced(self, path: Path, *, keep: str) -> None:
        manifest = self._current()
        stale = [
            oid
            for oid, entry in manifest["objects"].items()
            if oid != keep and entry.get("kind") == "file" and entry.get("path") == str(path)
        ]
        if stale:
            for oid in stale:
                del manifest["objects"][oid]
            _write_manifest(self._dir, manifest)

    def decrypt_file(
        self,
        source: str | os.PathLike[str],
        output: str | os.PathLike[str],
        *,
        name: str | None = None,
        sealed_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> SealedObject:
        """Decrypt ``source`` into ``output``, which appears only once every chunk has verified.

        The object must have been sealed at ``source``'s path (the path
        recorded in the vault, bound to its data key): a sealed file copied
        over another one, even of the same name in another folder, is refused.

        Args:
            source: A file written by :meth:`encrypt_file`.
            output: The plaintext file to write (mode 0600).
            name: The name the object was sealed under; default the file name
                of ``sealed_path``, else of ``source``.
            sealed_path: The path the file was sealed at, for a file moved or
                renamed on purpose; default ``source``.
            overwrite: Replace an existing ``output``.
            progress: Receives byte counts.

        Raises:
            InvalidInputError: The file was changed, cut short, swapped,
                moved or renamed (see ``sealed_path`` and ``name``), or sealed
                by another vault.
            ConflictError: ``output`` exists and ``overwrite`` is false.
        """
        src, dst = Path(source), Path(output).absolute()
        self._check_paths(src, dst, overwrite=overwrite)
        at = _absolute(sealed_path if sealed_path is not None else src)
        if name is None:
            name = Path(at).name
        what = str(src)
        with src.open("rb") as reader:
            header, aad = _Header.read(reader, what=what)
            dek, record = self._dek_for(header, what=what, expected_name=_check_name(name), at=at)
            on_chunk = self._progress(progress, f"decrypt {src.name}", src.stat().st_size)
            with _atomic_output(dst) as (sink, temporary):
                _decrypt_stream(reader, sink, header, aad, dek, what=what, on_chunk=on_chunk)
        _replace(temporary, dst)
        return record

    # -------------------------------------------------------------- rotation

    def _refuse_same_secret(self, new_master: MasterKey, current: Mapping[str, Any]) -> None:
        """Refuse ``new_master`` if it derives the current key under the current salt."""
        kdf = current.get("kdf") or {}
        if (kdf.get("name") == "raw") != (new_master.kind == "raw"):
            return  # a passphrase for a raw-key vault, or the reverse: a new secret
        candidate = _Keys.derive(new_master._derive(kdf), self._vault_id)  # noqa: SLF001
        if hmac.compare_digest(
            candidate.check_value(self._vault_id), self._keys.check_value(self._vault_id)
        ):
            secret = "passphrase" if new_master.kind == "scrypt" else "key"
            raise InvalidInputError(
                f"the new vault secret is the same {secret} as the current one",
                expected=f"a different {secret} (a rotation to the same secret retires nothing)",
                got=f"the same {secret}",
                fix="supply a new secret (--new-passphrase-env or --new-key-env); to raise "
                "the scrypt cost, rotate to a new passphrase",
            )

    def rotate(self, new_master: MasterKey) -> VaultStatus:
        """Re-wrap every data key under ``new_master``; no object is re-encrypted.

        The new manifest is written to a temporary file, fsynced and moved over
        the old one in one step, so a crash leaves the vault wholly under the
        old key or wholly under the new one. Afterwards only ``new_master``
        opens the vault (copies of the old manifest in backups still open with
        the old secret: destroy them, or re-encrypt, if the old secret leaked).

        Objects sealed by an older Veil, whose data keys were not bound to
        their recorded path, are bound to it by the rotation.

        Raises:
            InvalidInputError: ``new_master`` is the current key, or the
                current passphrase (at any scrypt cost: a new salt alone
                would give a new key id but no new secret), or a stored data
                key does not authenticate (nothing is changed then).
        """
        with _locked(self._dir):
            manifest = self._current()
            self._refuse_same_secret(new_master, manifest["key"])
            key, keys = _key_entry(new_master, self._vault_id)
            rewrapped: dict[str, Any] = {}
            for oid, entry in manifest["objects"].items():
                object_id = _unhex(oid, 16, what="object id")
                name = str(entry.get("name"))
                old_aad = _dek_aad(self._vault_id, object_id, name, entry=_bound(entry))
                try:
                    dek = self._keys.unwrap_dek(
                        base64.b64decode(str(entry.get("dek")), validate=True), old_aad
                    )
                except (binascii.Error, ValueError, InvalidTag):
                    raise _tampered(
                        f"the data key of {entry.get('name')!r} (object {oid}) in the vault manifest",
                        "a wrapped data key that does not authenticate",
                        fix="restore .veil/vault/vault.json from a backup; nothing was rotated",
                    ) from None
                new_entry = dict(entry)
                new_entry["binding"] = BINDING  # an older entry is bound to its path from now on
                aad = _dek_aad(self._vault_id, object_id, name, entry=new_entry)
                new_entry["dek"] = base64.b64encode(keys.wrap_dek(dek, aad)).decode("ascii")
                rewrapped[oid] = new_entry
            manifest["objects"] = rewrapped
            manifest["key"] = key
            manifest["rotated"] = _now()
            manifest["rotations"] = int(manifest.get("rotations", 0)) + 1
            _write_manifest(self._dir, manifest)
            self._keys, self._key_id = keys, key["id"]
        return self.status()

"""The vault's object format: a header, then chunks sealed with AES-256-GCM.

Files and sealed blobs share it. Nothing here knows about keys beyond the
object's own data key (DEK), nor about the manifest: this module frames bytes.

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


The **name** is bound into the header (and, by :mod:`veil.vault._keys`, into
the wrapped DEK); :func:`check_name` and :func:`check_chunk_size` are the checks
every caller applies before a header is written.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil._validate import whole_number
from veil.errors import InvalidInputError

__all__ = [
    "CHUNK_SIZE",
    "HEADER_BYTES",
    "MAX_NAME_BYTES",
    "PREFIX_BYTES",
    "TAG_BYTES",
    "Header",
    "check_chunk_size",
    "check_name",
    "decrypt_stream",
    "encrypt_stream",
    "tampered",
]

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
PREFIX_BYTES = 7
_MAX_CHUNKS = 1 << 32


def tampered(what: str, got: str, *, fix: str | None = None) -> InvalidInputError:
    """The error for vault state that does not read back as it was written."""
    return InvalidInputError(
        f"{what} is damaged or was tampered with",
        expected="every byte as the vault sealed it",
        got=got,
        fix=fix or "restore it from a backup; do not trust any part of its contents",
    )


def check_name(name: object) -> str:
    encoded = name.encode("utf-8") if isinstance(name, str) else b""
    if not encoded or len(encoded) > MAX_NAME_BYTES or "\x00" in str(name):
        raise InvalidInputError(
            "invalid name for a sealed object",
            expected=f"a non-empty string of at most {MAX_NAME_BYTES} UTF-8 bytes without NUL",
            got=repr(name)[:80],
            fix="for example name='he/ckks-secret-key'",
        )
    return str(name)


def check_chunk_size(chunk_size: object) -> int:
    return whole_number(
        chunk_size,
        "chunk_size",
        minimum=MIN_CHUNK_SIZE,
        maximum=MAX_CHUNK_SIZE,
        message="invalid chunk size",
        expected=f"a whole number of bytes in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]",
        fix=f"leave the default ({CHUNK_SIZE} bytes)",
    )


@dataclass(frozen=True)
class Header:
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
    def read(cls, stream: IO[bytes], *, what: str) -> tuple[Header, bytes]:
        fixed = stream.read(HEADER_BYTES)
        if len(fixed) < len(MAGIC) or not fixed.startswith(MAGIC):
            raise InvalidInputError(
                f"{what} is not a Veil vault object",
                expected=f"a file or blob starting with {MAGIC.decode()} (written by veil vault encrypt or Vault.seal)",
                got=f"{len(fixed)} bytes starting {fixed[:8]!r}" if fixed else "an empty input",
                fix="pass the sealed file (.veil), not the original",
            )
        if len(fixed) < HEADER_BYTES:
            raise tampered(what, f"a header cut short at {len(fixed)} of {HEADER_BYTES} bytes")
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
            raise tampered(what, f"algorithm byte {algorithm} and reserved byte {reserved}")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise tampered(what, f"a chunk size of {chunk_size} bytes")
        if size == 0 or size > MAX_NAME_BYTES:
            raise tampered(what, f"a name length of {size} bytes")
        raw_name = stream.read(size)
        if len(raw_name) != size:
            raise tampered(what, "a header cut short inside the name")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise tampered(what, "a name that is not UTF-8") from None
        header = cls(chunk_size, vault_id, object_id, prefix, name)
        return header, fixed + raw_name


def chunk_nonce(prefix: bytes, index: int, *, final: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


def read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def encrypt_stream(
    source: IO[bytes],
    sink: IO[bytes],
    header: Header,
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
    chunk = read_exactly(source, header.chunk_size)
    while True:
        following = (
            read_exactly(source, header.chunk_size) if len(chunk) == header.chunk_size else b""
        )
        final = not following
        if index >= _MAX_CHUNKS:
            raise InvalidInputError(
                "the input is too large for one vault object",
                expected=f"at most {_MAX_CHUNKS} chunks of {header.chunk_size} bytes",
                got="more",
                fix="split the file, or use a larger chunk size",
            )
        sink.write(cipher.encrypt(chunk_nonce(header.prefix, index, final=final), chunk, aad))
        total += len(chunk)
        if on_chunk is not None:
            on_chunk(total)
        if final:
            return total
        chunk = following
        index += 1


def decrypt_stream(
    source: IO[bytes],
    sink: IO[bytes],
    header: Header,
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
    chunk = read_exactly(source, block)
    while True:
        if len(chunk) < TAG_BYTES:
            raise tampered(what, f"a file cut short at chunk {index}")
        following = read_exactly(source, block) if len(chunk) == block else b""
        final = not following
        try:
            plain = cipher.decrypt(chunk_nonce(header.prefix, index, final=final), chunk, aad)
        except InvalidTag:
            raise tampered(
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

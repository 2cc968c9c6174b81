"""The vault's manifest: where its state lives, and the records read from it.

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
                 "dek": "<base64 of nonce || wrapped DEK || tag>"}},
     "destroyed": {"<object id>": {"at": "...", "name": "...", "reason": "..."}}}

``destroyed`` (absent until :meth:`Vault.destroy` first runs) holds tombstones of
crypto-shredded objects: no key material, only when and why, so that opening such
an object says so. Rotation re-wraps ``objects`` only, so tombstones pass through.

``kdf`` is ``{"name": "raw"}`` for a vault opened by a raw key. ``check`` is an
HMAC-SHA256 under a subkey of the master key: a wrong passphrase is refused
at once instead of producing garbage, and ``id`` (its first 8 bytes) names the
key in ``veil vault status``. Times and sizes are informational; what
matters for security (the key check, and each wrapped DEK bound to its object's
id, name, kind and recorded path) is authenticated. New vaults use scrypt with
n = 2**17, r = 8, p = 1 (OWASP's floor, 128 MiB per guess); a vault made with
the older default, n = 2**15, opens with the parameters stored in it.


The manifest is read and written here only; :class:`SealedObject` and
:class:`VaultStatus` are what callers see of it (no key material).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from veil._io import write_json_atomic
from veil.errors import InvalidInputError, NotFoundError
from veil.vault._format import tampered

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "VAULT_DIRNAME",
    "Kind",
    "SealedObject",
    "VaultStatus",
    "locked",
    "manifest_path",
    "now",
    "read_manifest",
    "record_of",
    "refuse_destroyed",
    "status_of",
    "unhex",
    "write_manifest",
]

VAULT_DIRNAME = "vault"
MANIFEST_FILENAME = "vault.json"
LOCK_FILENAME = ".lock"
MANIFEST_FORMAT = "veil-vault"
MANIFEST_VERSION = 1

Kind = Literal["file", "blob"]


def now() -> str:
    """The time, as the manifest records it (ISO 8601, UTC, whole seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def manifest_path(directory: Path) -> Path:
    return directory / MANIFEST_FILENAME


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = manifest_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise tampered(str(path), f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise tampered(str(path), "a JSON document that is not a Veil vault manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInputError(
            "the vault manifest has an unsupported version",
            expected=f"version {MANIFEST_VERSION}",
            got=f"version {manifest.get('version')!r}",
            fix="use the Veil release that wrote it (or a newer one)",
        )
    for field, kind in (("vault_id", str), ("key", dict), ("objects", dict)):
        if not isinstance(manifest.get(field), kind):
            raise tampered(str(path), f"a missing or malformed {field!r}")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(manifest_path(directory), manifest, make_parents=False)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def unhex(value: object, size: int, *, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise tampered("the vault manifest", f"a malformed {what}")
    return raw


def refuse_destroyed(manifest: Mapping[str, Any], object_id: str, what: str) -> None:
    """Raise if ``object_id``'s data key was destroyed (crypto-shredded); else return."""
    tombstone = (manifest.get("destroyed") or {}).get(object_id)
    if not isinstance(tombstone, dict):
        return
    raise NotFoundError(
        f"data key {object_id} was destroyed (crypto-shredded) at {tombstone.get('at')}",
        expected=f"{what} sealed under a data key the vault still holds",
        got=f"object {object_id} ({tombstone.get('name')!r}), whose key was destroyed"
        + (f": {tombstone['reason']}" if tombstone.get("reason") else ""),
        fix="nothing can open it any more, by design; use a newer version of the data",
        details={"object_id": object_id, "destroyed_at": tombstone.get("at")},
    )


def record_of(object_id: str, entry: Mapping[str, Any]) -> SealedObject:
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


def status_of(directory: Path, manifest: Mapping[str, Any] | None) -> VaultStatus:
    if manifest is None:
        return VaultStatus(path=directory, exists=False)
    key = manifest["key"]
    kdf = dict(key.get("kdf") or {})
    kdf.pop("salt", None)
    objects = tuple(record_of(oid, entry) for oid, entry in manifest["objects"].items())
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

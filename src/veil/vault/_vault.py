"""The vault: a workspace's data keys, opened with its master key.

Every object (a dataset file, a model file, an HE secret key) gets its own
random 256-bit **data key** (DEK). The object is encrypted with it in chunks
of AES-256-GCM; the DEK itself is **wrapped** (encrypted) by the vault's
**master key** (KEK) and kept in the vault's manifest, never beside the data.
The master key is derived from a passphrase with scrypt, or supplied as 32 raw
bytes (``VEIL_VAULT_KEY``, from a secrets manager). Nothing here is written by
hand except the framing: the primitives (AES-GCM, scrypt, HKDF, HMAC) are all
``cryptography``'s.

This module holds :class:`Vault`, which ties the pieces together: the object
format (:mod:`veil.vault._format`), the master key and wrapped data keys
(:mod:`veil.vault._keys`), the manifest (:mod:`veil.vault._manifest`), files
on disk (:mod:`veil.vault._files`) and rotation (:mod:`veil.vault._rotation`).

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
import functools
import hmac
import os
import secrets
import warnings
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback, emit
from veil.vault._files import absolute, atomic_output, check_paths, move_into_place
from veil.vault._format import (
    CHUNK_SIZE,
    HEADER_BYTES,
    MAX_NAME_BYTES,
    PREFIX_BYTES,
    Header,
    check_chunk_size,
    check_name,
    decrypt_stream,
    encrypt_stream,
    tampered,
)
from veil.vault._keys import BINDING, Keys, MasterKey, bound_entry, dek_aad, key_entry
from veil.vault._manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    VAULT_DIRNAME,
    Kind,
    SealedObject,
    VaultStatus,
    locked,
    manifest_path,
    now,
    read_manifest,
    record_of,
    refuse_destroyed,
    status_of,
    unhex,
    write_manifest,
)
from veil.vault._rotation import rotated_manifest
from veil.workspace import Workspace

__all__ = ["Vault"]


class Vault:
    """A workspace's vault, opened with its master key.

    Use :meth:`open` to get one; :meth:`inspect` reads the status without a key::

        vault = Vault.open(MasterKey.from_env(), create=True)
        vault.encrypt_file("adult.csv", "adult.csv.veil")
        blob = vault.seal(secret_key_bytes, name="he/ckks-secret-key")
    """

    def __init__(self, directory: Path, vault_id: bytes, key_id: str, keys: Keys) -> None:
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
        return status_of(directory, read_manifest(directory))

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
        manifest = read_manifest(directory)
        if manifest is None:
            if not create:
                raise NotFoundError(
                    "this workspace has no vault yet",
                    expected=f"{manifest_path(directory)} to exist",
                    got="no vault",
                    fix="seal something first (veil vault encrypt FILE), which creates it",
                )
            with locked(directory):
                manifest = read_manifest(directory)  # another process may have won the race
                if manifest is None:
                    vault_id = secrets.token_bytes(16)
                    key, keys = key_entry(master, vault_id)
                    manifest = {
                        "format": MANIFEST_FORMAT,
                        "version": MANIFEST_VERSION,
                        "vault_id": vault_id.hex(),
                        "created": now(),
                        "rotated": None,
                        "rotations": 0,
                        "key": key,
                        "objects": {},
                    }
                    write_manifest(directory, manifest)
                    return cls(directory, vault_id, key["id"], keys)
        return cls._unlock(directory, manifest, master)

    @classmethod
    def _unlock(cls, directory: Path, manifest: Mapping[str, Any], master: MasterKey) -> Vault:
        vault_id = unhex(manifest["vault_id"], 16, what="vault id")
        key = manifest["key"]
        kek = master._derive(key.get("kdf") or {})  # noqa: SLF001
        keys = Keys.derive(kek, vault_id)
        stored = unhex(key.get("check"), 32, what="key check value")
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
        return status_of(self._dir, read_manifest(self._dir))

    # -------------------------------------------------------------- manifest access

    def _current(self) -> dict[str, Any]:
        manifest = read_manifest(self._dir)
        if manifest is None:
            raise NotFoundError(
                "the vault manifest has disappeared",
                expected=f"{manifest_path(self._dir)} to exist",
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
        header: Header,
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
            "sealed": now(),
            "binding": BINDING,
        }
        aad = dek_aad(self._vault_id, header.object_id, header.name, entry=entry)
        entry["dek"] = base64.b64encode(self._keys.wrap_dek(dek, aad)).decode("ascii")
        manifest["objects"][header.object_id.hex()] = entry
        write_manifest(self._dir, manifest)
        return record_of(header.object_id.hex(), entry)

    def _dek_for(
        self, header: Header, *, what: str, expected_name: str | None, at: str | None
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
        manifest = self._current()
        entry = manifest["objects"].get(header.object_id.hex())
        if entry is None:
            refuse_destroyed(manifest, header.object_id.hex(), what)
        if not isinstance(entry, dict):
            raise tampered(
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
            where = absolute(recorded) if isinstance(recorded, str) else None
            if where != at:
                raise InvalidInputError(
                    f"{what} was sealed at another path (copied or moved over this file)",
                    expected=f"the object sealed at {at}",
                    got=f"the object sealed at {recorded}",
                    fix=f"restore {at} from a backup; if the file was moved there on purpose, "
                    f"pass sealed_path={recorded!r} (--sealed-path)",
                )
        bound = bound_entry(entry)
        try:
            wrapped = base64.b64decode(str(entry.get("dek")), validate=True)
            dek = self._keys.unwrap_dek(
                wrapped, dek_aad(self._vault_id, header.object_id, header.name, entry=bound)
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise tampered(
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
        return dek, record_of(header.object_id.hex(), entry)

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
        header = Header(
            chunk_size=check_chunk_size(chunk_size),
            vault_id=self._vault_id,
            object_id=secrets.token_bytes(16),
            prefix=secrets.token_bytes(PREFIX_BYTES),
            name=check_name(name),
        )
        dek = AESGCM.generate_key(bit_length=256)
        sink = BytesIO()
        size = encrypt_stream(BytesIO(bytes(data)), sink, header, dek)
        with locked(self._dir):
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
        header, aad = Header.read(stream, what=what)
        dek, _ = self._dek_for(header, what=what, expected_name=check_name(name), at=None)
        sink = BytesIO()
        decrypt_stream(stream, sink, header, aad, dek, what=what)
        return sink.getvalue()

    @staticmethod
    def object_id(blob: bytes) -> str:
        """The object id (32 hex digits) of a blob from :meth:`seal`: what :meth:`destroy` takes.

        Read from the blob's header, without any key. Callers that must be able to
        crypto-shred a blob later record it beside the blob.
        """
        header, _ = Header.read(
            BytesIO(bytes(blob[: HEADER_BYTES + MAX_NAME_BYTES])), what="a blob"
        )
        return header.object_id.hex()

    def destroy(self, object_id: str, *, reason: str = "") -> bool:
        """Crypto-shred an object: remove its wrapped data key from the manifest for good.

        Every copy of the object (the file, a backup of it, a blob stored
        elsewhere) then stays ciphertext for ever: the data key existed only
        wrapped in the manifest. The manifest is rewritten atomically and
        fsynced under its lock, and keeps a tombstone (when, which name, why)
        so that a later attempt to open the object says it was destroyed
        rather than that it was tampered with. Copies of the manifest itself
        (backups made before this call) still hold the key: a backup policy
        must expire them.

        Returns:
            ``True`` if the key was destroyed now, ``False`` if it already was
            (so a shredding interrupted by a crash can simply be run again).

        Raises:
            NotFoundError: The vault never held a data key with this id.
        """
        with locked(self._dir):
            manifest = self._current()
            destroyed = manifest.setdefault("destroyed", {})
            if object_id in destroyed:
                return False
            entry = manifest["objects"].pop(object_id, None)
            if entry is None:
                raise NotFoundError(
                    f"the vault holds no data key {object_id}",
                    expected="the object id of a sealed object (Vault.object_id(blob))",
                    got=repr(object_id),
                    fix="see `veil vault status` for the objects the vault holds",
                )
            destroyed[object_id] = {"at": now(), "name": entry.get("name"), "reason": reason}
            write_manifest(self._dir, manifest)
        return True

    # -------------------------------------------------------------- files

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
        src, dst = Path(source), Path(absolute(output))
        check_paths(src, dst, overwrite=overwrite)
        header = Header(
            chunk_size=check_chunk_size(chunk_size),
            vault_id=self._vault_id,
            object_id=secrets.token_bytes(16),
            prefix=secrets.token_bytes(PREFIX_BYTES),
            name=check_name(name if name is not None else dst.name),
        )
        dek = AESGCM.generate_key(bit_length=256)
        total = src.stat().st_size
        on_chunk = functools.partial(
            emit, progress, f"encrypt {src.name}", total=total, unit="bytes"
        )
        with src.open("rb") as reader, atomic_output(dst) as (sink, temporary):
            size = encrypt_stream(reader, sink, header, dek, on_chunk=on_chunk)
        try:
            with locked(self._dir):
                # Key first, then the file: a crash between the two leaves an unused key, never
                # a sealed file without one.
                record = self._register(header, dek, kind="file", path=dst, size=size)
                move_into_place(temporary, dst)
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
            write_manifest(self._dir, manifest)

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
        check_paths(src, dst, overwrite=overwrite)
        at = absolute(sealed_path if sealed_path is not None else src)
        if name is None:
            name = Path(at).name
        what = str(src)
        with src.open("rb") as reader:
            header, aad = Header.read(reader, what=what)
            dek, record = self._dek_for(header, what=what, expected_name=check_name(name), at=at)
            on_chunk = functools.partial(
                emit, progress, f"decrypt {src.name}", total=src.stat().st_size, unit="bytes"
            )
            with atomic_output(dst) as (sink, temporary):
                decrypt_stream(reader, sink, header, aad, dek, what=what, on_chunk=on_chunk)
        move_into_place(temporary, dst)
        return record

    # -------------------------------------------------------------- rotation

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
        with locked(self._dir):
            manifest, keys = rotated_manifest(
                self._current(), new_master, self._keys, self._vault_id
            )
            write_manifest(self._dir, manifest)
            self._keys, self._key_id = keys, manifest["key"]["id"]
        return self.status()

"""Named keys: 256-bit secrets that Veil's own features use by name, one owner-only file each.

The ledger's checkpoint key (``ledger``), the key of reversible redaction
(``redact``) and the HMAC keys of pseudonymisation (``pseudonyms`` or any name
given with ``--key``) are named keys. Each lives in ``<workspace>/keys/NAME.key``
as 64 hex digits and a newline, mode 0600 in a 0700 directory, never beside
the data it protects. ``VEIL_KEY_<NAME>`` (the name upper-cased, ``-`` as
``_``; 64 hex digits) supplies a key from the environment instead, for
deployments whose keys come from a secrets manager.

A key is made from the operating system's secure random source the first
time it is asked for, and read back unchanged after that: a key that changed
would break the ledger's chain and every pseudonym made with it. It is
written whole to a private temporary file, fsynced, and published with
``os.link``, which refuses to replace an existing file: two processes asking
at once agree on one key, and no process ever reads a key file that is
empty or half written. On a filesystem without hard links the file is
created exclusively (``O_EXCL``, mode 0600) instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from veil._io import fsync_directory
from veil.errors import InvalidInputError, NotFoundError
from veil.vault._keys import KEY_BYTES
from veil.workspace import Workspace

__all__ = ["KEYS_DIRNAME", "KeyStore"]

KEYS_DIRNAME = "keys"
_KEY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class KeyStore:
    """Named 256-bit secret keys, one owner-only file each (see the module docstring).

    Use :meth:`for_workspace` to get a workspace's store::

        key = KeyStore.for_workspace(workspace).get("ledger")

    Attributes:
        root: The directory holding the key files.
    """

    root: Path

    @classmethod
    def for_workspace(cls, workspace: Workspace | None = None) -> KeyStore:
        """The key store of ``workspace`` (default: the current one): ``<workspace>/keys``."""
        return cls((workspace or Workspace.locate()).home / KEYS_DIRNAME)

    @staticmethod
    def _check(name: str) -> str:
        if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
            raise InvalidInputError(
                "invalid key name",
                expected="a lower-case name of letters, digits, '-' or '_', starting with a letter (at most 64)",
                got=repr(name),
                fix="for example --key pseudonyms",
            )
        return name

    @staticmethod
    def _env_name(name: str) -> str:
        return "VEIL_KEY_" + name.upper().replace("-", "_")

    def path(self, name: str) -> Path:
        """The file that holds (or will hold) key ``name``."""
        return self.root / f"{self._check(name)}.key"

    def exists(self, name: str) -> bool:
        """Whether key ``name`` is set, in the environment or on disk."""
        return bool(os.environ.get(self._env_name(name))) or self.path(name).is_file()

    def names(self) -> list[str]:
        """The names of the keys stored on disk."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.key"))

    def get(self, name: str, *, create: bool = True) -> bytes:
        """Key ``name`` (32 bytes), created on first use unless ``create`` is false.

        Raises:
            NotFoundError: The key does not exist and ``create`` is false.
            InvalidInputError: The environment or the key file holds something
                that is not a 256-bit key.
        """
        env = os.environ.get(self._env_name(name))
        if env:
            return self._decode(env, source=self._env_name(name))
        path = self.path(name)
        if not path.is_file():
            if not create:
                raise NotFoundError(
                    f"no key named {name!r} in the key store",
                    expected=f"{path} or {self._env_name(name)} to exist",
                    got="neither",
                    fix=f"use the workspace that created it, or set {self._env_name(name)}",
                )
            self._create(path)
        return self._decode(path.read_text(encoding="ascii"), source=str(path))

    def _create(self, path: Path) -> None:
        """Publish a new random key at ``path`` unless one is there already."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp: a new file, mode 0600, that no other process can have opened
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.root)
        text = secrets.token_hex(KEY_BYTES) + "\n"
        try:
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            # link, not replace (so not veil._io's writers): the first key published wins, and
            # is never overwritten
            try:
                os.link(temporary, path)
            except FileExistsError:
                return  # another process published first: its key is the key
            except OSError:  # a filesystem without hard links: exclusive creation instead
                self._create_exclusive(path, text)
            fsync_directory(self.root)
        finally:
            Path(temporary).unlink(missing_ok=True)

    @staticmethod
    def _create_exclusive(path: Path, text: str) -> None:
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())

    @staticmethod
    def _decode(raw: str, *, source: str) -> bytes:
        try:
            key = bytes.fromhex(raw.strip())
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise InvalidInputError(
                "a key is not a 256-bit key",
                expected=f"{source} to hold {2 * KEY_BYTES} hex digits",
                got=f"{len(raw.strip())} characters",
                fix="restore the key from its backup; a lost key cannot be recomputed",
            )
        return key

"""Managed datasets: the workspace's own encrypted, versioned copy of a table.

A **reference** dataset is a path to a file Veil does not own: Veil can check
it, but cannot remove a person from it or from its copies. A **managed**
dataset (``Catalog.add(..., managed=True)``, ``veil datasets add --managed``)
is copied into the workspace as versions::

    <workspace home>/datasets/<dataset id>/v<version>.parquet.veil

Each version is the whole table as Parquet bytes, sealed in memory with the
vault (:meth:`veil.vault.Vault.seal`: AES-256-GCM under a fresh data key that
is wrapped by the master key and kept only in the vault's manifest). One data
key per version, so destroying a superseded version's key
(:meth:`veil.vault.Vault.destroy`) makes every copy of it, backups included,
unreadable: crypto-shredding. The plaintext never touches the disk. The
version's row (:class:`veil.store.tables.DatasetVersionRow`) holds the
SHA-256 of the plaintext Parquet, checked on every load, and the vault object
id of its data key.

**Why opt-in.** The protection means something only when the master key is
held outside the workspace (``VEIL_VAULT_KEY`` or ``VEIL_VAULT_PASSPHRASE``);
every process that reads the data then needs it. A default that kept the key
beside the data would claim a protection it does not give. MNIST image sets
stay reference datasets.

This module holds the file side (:class:`ManagedFiles`: seal, write durably,
read and check, shred) and the records callers see (:class:`DatasetVersion`,
:class:`VersionChange`); the catalogue's version operations, and the
crash-safe protocol that uses them, are :mod:`veil.data._versions`.

**Crash tests.** ``VEIL_TEST_CRASH_AT=managed.<step>`` makes :func:`crash_point`
kill the process with SIGKILL at that step (the tests of kill -9 run the
protocol in a child process); unset, it costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from veil._io import fsync_directory, write_bytes_atomic
from veil.data.readers import Reader
from veil.errors import InvalidInputError, NotFoundError
from veil.store.tables import DatasetVersionRow
from veil.vault import MasterKey, Vault
from veil.workspace import Workspace

__all__ = [
    "CRASH_VARIABLE",
    "CURRENT",
    "SHREDDED",
    "SUPERSEDED",
    "DatasetVersion",
    "ManagedFiles",
    "VersionChange",
    "WrittenVersion",
    "crash_point",
    "frame_dtypes",
    "refuse_images",
]

CRASH_VARIABLE = "VEIL_TEST_CRASH_AT"
DIRNAME = "datasets"
CURRENT, SUPERSEDED, SHREDDED = "current", "superseded", "shredded"


def crash_point(step: str) -> None:
    """SIGKILL this process when ``VEIL_TEST_CRASH_AT`` is ``managed.<step>`` (tests only).

    A real kill -9: no rollback, no ``finally``, no flush; what is on disk and
    committed is all that survives, as after a power cut of the process.
    """
    if os.environ.get(CRASH_VARIABLE) == f"managed.{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def frame_dtypes(frame: pd.DataFrame) -> dict[str, str]:
    """Column -> dtype name, in column order (what a new version must match)."""
    return {str(c): str(t) for c, t in frame.dtypes.items()}


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a managed dataset, as recorded (no key material).

    ``state`` is ``current`` (the one loads read), ``superseded`` (replaced;
    its key is destroyed next) or ``shredded`` (key destroyed, file deleted).
    """

    dataset_id: int
    version: int
    state: str
    path: str
    object_id: str
    sha256: str
    n_rows: int
    size_bytes: int
    reason: str
    created_at: datetime
    created_by: str
    shredded_at: datetime | None = None

    @classmethod
    def from_row(cls, row: DatasetVersionRow) -> DatasetVersion:
        return cls(
            dataset_id=row.dataset_id,
            version=row.version,
            state=row.state,
            path=row.path,
            object_id=row.object_id,
            sha256=row.sha256,
            n_rows=row.n_rows,
            size_bytes=row.size_bytes,
            reason=row.reason,
            created_at=row.created_at,
            created_by=row.created_by,
            shredded_at=row.shredded_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``veil datasets versions --json`` prints)."""
        return {
            "version": self.version,
            "state": self.state,
            "n_rows": self.n_rows,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "object_id": self.object_id,
            "path": self.path,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "shredded_at": None if self.shredded_at is None else self.shredded_at.isoformat(),
        }


@dataclass(frozen=True)
class VersionChange:
    """What :meth:`Catalog.replace_version` did: the version it replaced, and the new one."""

    old: DatasetVersion
    new: DatasetVersion

    def to_dict(self) -> dict[str, Any]:
        return {"old": self.old.to_dict(), "new": self.new.to_dict()}


@dataclass(frozen=True)
class WrittenVersion:
    """A sealed version on disk, not yet recorded (what a failed transaction must undo)."""

    path: str  # relative to the workspace home
    object_id: str
    sha256: str
    n_rows: int
    size_bytes: int  # plaintext Parquet bytes


class ManagedFiles:
    """The sealed version files of a workspace, and the vault that seals them.

    The vault is opened on first use with ``master`` if given, else
    ``MasterKey.from_env()`` (created if the workspace has none yet), and kept
    for this object's life: a passphrase costs an scrypt derivation per opening.
    """

    def __init__(self, workspace: Workspace, master: MasterKey | None = None) -> None:
        self.workspace = workspace
        self._master = master
        self._vault: Vault | None = None

    @property
    def home(self) -> Path:
        return self.workspace.home

    def vault(self) -> Vault:
        """The workspace's vault, opened with the master key from the environment."""
        if self._vault is None and self._master is not None:
            self._vault = Vault.open(self._master, self.workspace, create=True)
        if self._vault is None:
            try:
                master = MasterKey.from_env()
            except NotFoundError as exc:
                raise NotFoundError(
                    "managed datasets need the vault's master key",
                    expected="VEIL_VAULT_KEY (64 hex digits) or VEIL_VAULT_PASSPHRASE set in "
                    "the environment of every process that reads or writes managed data",
                    got=exc.got or "neither variable set",
                    fix="export VEIL_VAULT_PASSPHRASE (or VEIL_VAULT_KEY from your secrets "
                    "manager) and run the command again",
                ) from None
            self._vault = Vault.open(master, self.workspace, create=True)
        return self._vault

    def directory(self, dataset_id: int) -> Path:
        return self.home / DIRNAME / str(dataset_id)

    @contextlib.contextmanager
    def lock(self, dataset_id: int) -> Iterator[None]:
        """One writer of a dataset's version files at a time (``flock``: threads and processes).

        Held from choosing a version number to shredding, so two writers never
        pick the same file name, and a clean-up never removes a file another
        writer is about to record. The kernel drops it when a process dies.
        """
        directory = self.directory(dataset_id)
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # not left 0o755
        directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- writing
    def write(self, dataset_id: int, version: int, frame: pd.DataFrame) -> WrittenVersion:
        """Seal ``frame`` as version ``version`` and write it durably (temp, fsync, rename, fsync).

        The Parquet bytes exist only in memory; the sealed file appears whole
        or not at all. The caller records it, or calls :meth:`discard`.
        """
        import pyarrow as pa  # noqa: PLC0415 - keeps `veil --help` fast
        import pyarrow.parquet as pq  # noqa: PLC0415

        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        plain = buffer.getvalue()
        del buffer, table
        relative = f"{DIRNAME}/{dataset_id}/v{version}.parquet.veil"
        blob = self.vault().seal(plain, name=relative)
        object_id = Vault.object_id(blob)
        try:
            write_bytes_atomic(self.home / relative, blob)
        except BaseException:
            self.vault().destroy(object_id, reason="the sealed file could not be written")
            raise
        return WrittenVersion(
            path=relative,
            object_id=object_id,
            sha256=hashlib.sha256(plain).hexdigest(),
            n_rows=len(frame),
            size_bytes=len(plain),
        )

    def discard(self, written: WrittenVersion, *, reason: str) -> None:
        """Undo :meth:`write` (its transaction failed): destroy the key, delete the file."""
        with contextlib.suppress(NotFoundError):
            self.vault().destroy(written.object_id, reason=reason)
        (self.home / written.path).unlink(missing_ok=True)

    # ---------------------------------------------------------------- reading
    def read(
        self, name: str, version: DatasetVersion, columns: Sequence[str] | None
    ) -> pd.DataFrame:
        """The rows of ``version``, checked against its recorded SHA-256.

        Raises:
            FileNotFoundError: The file is gone (shredded meanwhile; the caller retries).
            NotFoundError: Its data key was destroyed (crypto-shredded).
            InvalidInputError: The file, or the plaintext inside it, is not what was recorded.
        """
        import pyarrow.parquet as pq  # noqa: PLC0415 - keeps `veil --help` fast

        blob = (self.home / version.path).read_bytes()
        plain = self.vault().unseal(blob, name=version.path)
        del blob
        digest = hashlib.sha256(plain).hexdigest()
        if digest != version.sha256:
            raise InvalidInputError(
                f"version {version.version} of '{name}' does not match its recorded digest",
                expected=f"plaintext SHA-256 {version.sha256[:16]}... ({version.size_bytes} bytes)",
                got=f"SHA-256 {digest[:16]}... ({len(plain)} bytes)",
                fix="restore the workspace's datasets/ folder and its database from the same "
                "backup; do not trust this version",
                details={"version": version.version, "path": version.path},
            )
        table = pq.read_table(io.BytesIO(plain), columns=list(columns) if columns else None)
        del plain
        frame: pd.DataFrame = table.to_pandas()
        return frame

    @staticmethod
    def estimate_memory(
        version: DatasetVersion, n_columns: int, columns: Sequence[str] | None
    ) -> int:
        """Bytes a load needs: the sealed and plain Parquet, then the columns as pandas holds them."""
        wanted = len(columns) if columns else n_columns
        return 2 * version.size_bytes + (16 * wanted + 64) * version.n_rows

    # ---------------------------------------------------------------- shredding
    def shred(self, version: DatasetVersion, *, reason: str) -> None:
        """Destroy the version's data key (first: that is what makes it unreadable), then its file.

        Idempotent, so a shredding cut short by a crash is simply run again.
        """
        # NotFoundError: the vault never held it (restored from an older backup): the file goes.
        with contextlib.suppress(NotFoundError):
            self.vault().destroy(version.object_id, reason=reason)
        crash_point("key-destroyed")
        path = self.home / version.path
        if path.exists():
            path.unlink()
            fsync_directory(path.parent)

    def orphans(self, dataset_id: int, recorded: set[str]) -> list[Path]:
        """Sealed files (and temporaries) in the dataset's folder that no version row records.

        Left by a crash between writing a version and committing its row. The
        caller holds :meth:`lock`, so none of them is a version being written.
        """
        directory = self.directory(dataset_id)
        if not directory.is_dir():
            return []
        found = []
        for path in sorted(directory.iterdir()):
            relative = f"{DIRNAME}/{dataset_id}/{path.name}"
            if path.name == ".lock" or relative in recorded:
                continue
            if path.name.endswith(".parquet.veil") or path.name.endswith(".tmp"):
                found.append(path)
        return found

    def remove_orphan(self, path: Path) -> None:
        """Destroy an unrecorded sealed file's key (read from its header), then the file."""
        if path.name.endswith(".parquet.veil"):
            with contextlib.suppress(InvalidInputError, NotFoundError, OSError):
                with path.open("rb") as handle:
                    head = handle.read(4096)
                self.vault().destroy(Vault.object_id(head), reason="unrecorded version (crash)")
        path.unlink(missing_ok=True)
        fsync_directory(path.parent)


def refuse_images(reader: Reader, name: str) -> None:
    """Managed datasets are tables; an image set stays a reference dataset."""
    if reader.kind != "table":
        raise InvalidInputError(
            f"'{name}' is an image set: only tables can be managed",
            expected="a CSV, Parquet, Adult or scikit-learn table with --managed",
            got=f"format {reader.format}",
            fix="register MNIST without --managed (it stays a reference dataset; erasure "
            "and retention do not apply to it)",
        )

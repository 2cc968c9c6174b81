"""The catalogue's version operations on managed datasets, and the crash-safe protocol.

:class:`ManagedVersions` is mixed into :class:`veil.data.Catalog`; the files
and records are :mod:`veil.data._managed`.

**A new version** (:meth:`ManagedVersions.replace_version`, used by erasure
and retention) is written in three steps, so that a kill -9 anywhere leaves
either the old or the new version current, never neither, and the old key is
destroyed only once the new version is durable:

(a) the sealed file is written to a temporary name, fsynced, renamed, and
    its directory fsynced;
(b) ONE transaction: the old version ``current -> superseded``, the new row
    ``current``, the caller's records (``on_commit``) and the trail entry;
    commit;
(c) only then the old version is shredded: its data key destroyed in the
    vault (the manifest rewritten durably), its file deleted, its row
    ``superseded -> shredded``, each shredding on the trail.

A crash after (b) leaves a superseded version whose key still exists:
:meth:`ManagedVersions.finish_shredding` (run at the start of every erasure
and retention run, and by ``veil datasets versions``) completes it. A crash
before (b) commits leaves a sealed file no row records: the same call removes
it (its key first). A per-dataset file lock (:meth:`ManagedFiles.lock`) keeps
two writers from choosing the same version number, and the clean-up from
touching a file being written.

**Loads** read the current version's row, then its file; if the version is
shredded in between (a concurrent erasure), the load retries with the new
current version, so a query sees one whole version, never a mix and never an
error caused by the race.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil.access import Access, Permission
from veil.data._archive import registered_name
from veil.data._catalog_trail import record_change
from veil.data._dataset_info import DatasetInfo
from veil.data._managed import (
    CURRENT,
    SHREDDED,
    SUPERSEDED,
    DatasetVersion,
    ManagedFiles,
    VersionChange,
    WrittenVersion,
    crash_point,
    frame_dtypes,
)
from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.store import Store
from veil.store.tables import DatasetRow, DatasetVersionRow
from veil.vault import MasterKey
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.workspace import Settings

__all__ = ["ManagedVersions", "OnCommit", "reference_refusal"]

OnCommit = Callable[[Session, VersionChange | None], None]


def reference_refusal(info: DatasetInfo, doing: str) -> ConflictError:
    """Decision 1 of issue 23: a reference dataset's file is not Veil's to rewrite."""
    return ConflictError(
        f"'{info.name}' is a reference dataset: Veil does not own its file, so it cannot "
        f"remove a person from every copy ({doing} refused)",
        expected="a managed dataset (registered with --managed: Veil keeps an encrypted, "
        "versioned copy)",
        got=f"a reference to {info.source}",
        fix=f"remove it (veil datasets remove {info.name}: its budget and ledger are kept), "
        "register the same file again under the same name with --managed (veil datasets add "
        f"FILE --name {info.name} --managed, with its declarations): it rejoins its history; "
        "then delete the original file yourself",
    )


def _now() -> datetime:
    return datetime.now(UTC)


class ManagedVersions:
    """Version operations of :class:`veil.data.Catalog` (see the module docstring)."""

    store: Store
    access: Access
    settings: Settings
    workspace: Workspace | None
    master_key: MasterKey | None
    _managed_files: ManagedFiles | None

    _get: Callable[[str], DatasetInfo]  # the catalogue's lookup without a role check

    # ---------------------------------------------------------------- plumbing
    def _files(self) -> ManagedFiles:
        """The workspace's version files; the workspace is located if none was given."""
        if self._managed_files is None:
            workspace = self.workspace
            if workspace is None:
                try:
                    workspace = Workspace.locate()
                except NotFoundError as exc:
                    raise NotFoundError(
                        "managed datasets need the workspace (their files and vault live there)",
                        expected="a catalogue opened on a workspace",
                        got=exc.got or "no workspace found",
                        fix="use Catalog.open(workspace), or Catalog(store, workspace=...)",
                    ) from None
            self._managed_files = ManagedFiles(workspace, self.master_key)
        return self._managed_files

    def _version_row(self, info: DatasetInfo, version: int | None) -> DatasetVersion:
        """The current version (``version=None``), or the given one if it is not shredded."""
        with self.store.session() as session:
            query = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == info.dataset_id)
            if version is None:
                query = query.where(DatasetVersionRow.state == CURRENT)
            else:
                query = query.where(DatasetVersionRow.version == version)
            row = session.scalars(query).first()
            found = None if row is None else DatasetVersion.from_row(row)
        if found is None and version is None:
            raise NotFoundError(
                f"'{info.name}' has no data left: every version was destroyed",
                expected="a managed dataset with a current version",
                got="no current version (expired by its retention policy, or removed)",
                fix=f"see `veil datasets versions {info.name}`; register the data again if "
                "it may be kept",
            )
        if found is None or found.state == SHREDDED:
            raise self._gone(info, version)
        return found

    @staticmethod
    def _gone(info: DatasetInfo, version: int | None) -> NotFoundError:
        return NotFoundError(
            f"version {version} of '{info.name}' is not readable (shredded, or never existed)",
            expected="a version that is current or superseded but not yet shredded",
            got=f"version {version}",
            fix=f"see `veil datasets versions {info.name}`",
        )

    def _managed_info(self, name: str, doing: str) -> DatasetInfo:
        info = self._get(name)
        if not info.managed:
            raise reference_refusal(info, doing)
        return info

    # ---------------------------------------------------------------- reading
    def versions(self, name: str) -> list[DatasetVersion]:
        """Every version of managed dataset ``name``, oldest first (``dataset.read_metadata``).

        A reference dataset has none (an empty list).
        """
        self.access.require(Permission.DATASET_READ_METADATA, name, action="dataset.metadata")
        info = self._get(name)
        with self.store.session() as session:
            rows = session.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.dataset_id == info.dataset_id)
                .order_by(DatasetVersionRow.version)
            ).all()
            return [DatasetVersion.from_row(r) for r in rows]

    def current_version(self, name: str) -> DatasetVersion | None:
        """The current version of ``name``; ``None`` once every version was destroyed.

        Raises:
            ConflictError: ``name`` is a reference dataset (it has no versions).
        """
        self.access.require(Permission.DATASET_READ_METADATA, name, action="dataset.metadata")
        info = self._managed_info(name, "reading versions")
        current = [v for v in self.versions(name) if v.state == CURRENT]
        del info
        return current[0] if current else None

    # ---------------------------------------------------------------- writing
    def _register_version(
        self,
        session: Session,
        stack: ExitStack,
        info: DatasetInfo,
        frame: pd.DataFrame,
        written: list[WrittenVersion],
    ) -> DatasetVersion:
        """Write version 1 (or the next, for a rejoined history) inside the registration's
        transaction; ``written`` collects what a failure must undo."""
        files = self._files()
        dataset_id = int(info.dataset_id or 0)
        stack.enter_context(files.lock(dataset_id))  # held until the transaction ends
        self._clean_orphans(dataset_id, session)  # a registration killed before its commit
        last = session.scalar(
            select(func.max(DatasetVersionRow.version)).where(
                DatasetVersionRow.dataset_id == dataset_id
            )
        )
        number = int(last or 0) + 1
        done = files.write(dataset_id, number, frame)
        written.append(done)
        crash_point("registration-written")
        row = self._version_row_of(done, dataset_id, number, "registration")
        session.add(row)
        session.flush()
        return DatasetVersion.from_row(row)

    def _version_row_of(
        self, done: WrittenVersion, dataset_id: int, number: int, reason: str
    ) -> DatasetVersionRow:
        return DatasetVersionRow(
            dataset_id=dataset_id,
            version=number,
            state=CURRENT,
            path=done.path,
            object_id=done.object_id,
            sha256=done.sha256,
            n_rows=done.n_rows,
            size_bytes=done.size_bytes,
            reason=reason,
            created_by=self.access.principal.name,
        )

    def _undo_write(self, done: WrittenVersion, reason: str) -> None:
        """Discard a written version whose transaction failed, unless it was committed after all."""
        try:
            with self.store.session() as session:
                recorded = session.scalar(
                    select(DatasetVersionRow.id).where(
                        DatasetVersionRow.object_id == done.object_id
                    )
                )
        except Exception:  # noqa: BLE001 - unreachable database: leave it to finish_shredding
            return
        if recorded is None:
            self._files().discard(done, reason=reason)

    def replace_version(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        reason: str,
        action: str,
        on_commit: OnCommit | None = None,
        shred: bool = True,
        details: Mapping[str, Any] | None = None,
    ) -> VersionChange:
        """Make ``frame`` the current version of managed dataset ``name`` (crash-safe).

        Args:
            name: A managed dataset.
            frame: The new rows, with exactly the registered columns and dtypes.
            reason: Why (recorded on the version and the trail).
            action: The trail entry's action (``dataset.erase``, ``retention.apply``...).
            on_commit: ``on_commit(session, change)`` runs inside the transaction
                that makes the new version current: the caller's records
                (an erasure row) commit with it or not at all.
            shred: Destroy the old version's key at once. ``False`` keeps it
                readable (``load_frame(version=old)``) until :meth:`shred`: an
                erasure verifies its unlearning on the old rows first.
            details: More trail details (never raw identifiers).

        Needs ``dataset.erase``. The budget, ledger and registration
        fingerprint stay with the dataset: budgets are never refunded.

        Raises:
            PermissionDeniedError: Not allowed (the refusal is recorded).
            ConflictError: A reference dataset; or another writer replaced the
                version meanwhile (nothing changed).
            InvalidInputError: ``frame``'s columns or dtypes differ.
        """
        self.access.require(Permission.DATASET_ERASE, name, action=action, purpose=reason)
        info = self._managed_info(name, action)
        _check_columns(info, frame)
        files = self._files()
        dataset_id = int(info.dataset_id or 0)
        with files.lock(dataset_id):
            self._clean_orphans(dataset_id)
            old = self._version_row(info, None)
            with self.store.session() as session:
                last = session.scalar(
                    select(func.max(DatasetVersionRow.version)).where(
                        DatasetVersionRow.dataset_id == dataset_id
                    )
                )
            number = int(last or 0) + 1
            done = files.write(dataset_id, number, frame)
            crash_point("file-written")
            try:
                change = self._commit_version(
                    info,
                    old,
                    done,
                    number,
                    reason=reason,
                    action=action,
                    on_commit=on_commit,
                    details=dict(details or {}),
                )
            except BaseException:
                self._undo_write(done, reason=f"{action} failed before its commit")
                raise
            crash_point("committed")
            if shred:
                change = VersionChange(self._shred_locked(info, change.old, reason), change.new)
        return change

    def _commit_version(
        self,
        info: DatasetInfo,
        old: DatasetVersion,
        done: WrittenVersion,
        number: int,
        *,
        reason: str,
        action: str,
        on_commit: OnCommit | None,
        details: dict[str, Any],
    ) -> VersionChange:
        """Step (b): one transaction swaps the current version, with the caller's records."""
        dataset_id = int(info.dataset_id or 0)
        with self.store.session(lock=True) as session:
            current = session.scalars(
                select(DatasetVersionRow)
                .where(
                    DatasetVersionRow.dataset_id == dataset_id,
                    DatasetVersionRow.state == CURRENT,
                )
                .with_for_update()
            ).all()
            if [r.version for r in current] != [old.version]:
                raise ConflictError(
                    f"'{info.name}' got a new version while this one was being written",
                    expected=f"version {old.version} still current",
                    got=f"current: {[r.version for r in current]}",
                    fix="run the command again: it starts from the new version",
                )
            current[0].state = SUPERSEDED
            row = self._version_row_of(done, dataset_id, number, reason)
            session.add(row)
            dataset = session.get(DatasetRow, dataset_id)
            if dataset is not None:
                dataset.n_rows = done.n_rows
            session.flush()
            change = VersionChange(
                DatasetVersion.from_row(current[0]), DatasetVersion.from_row(row)
            )
            if on_commit is not None:
                on_commit(session, change)
            record_change(
                self.access,
                session,
                action,
                info,
                reason=reason,
                from_version=old.version,
                to_version=number,
                rows_before=old.n_rows,
                rows_after=done.n_rows,
                **details,
            )
            crash_point("before-commit")
        return change

    def shred(self, name: str, version: int) -> DatasetVersion:
        """Destroy a superseded version's data key, then its file (``dataset.erase``).

        Idempotent: a version already shredded is returned as it is.

        Raises:
            ConflictError: ``version`` is the current one (replace it first).
            NotFoundError: No such version.
        """
        self.access.require(Permission.DATASET_ERASE, name, action="dataset.shred")
        info = self._managed_info(name, "shredding")
        with self._files().lock(int(info.dataset_id or 0)):
            found = [v for v in self._all_versions(info) if v.version == version]
            if not found:
                raise self._gone(info, version)
            if found[0].state == CURRENT:
                raise ConflictError(
                    f"version {version} of '{name}' is current; only a superseded one is shredded",
                    expected="a superseded version",
                    got=f"version {version}, current",
                    fix="replace it first (veil erase, veil retention run)",
                )
            return self._shred_locked(info, found[0], "superseded")

    def _all_versions(self, info: DatasetInfo) -> list[DatasetVersion]:
        with self.store.session() as session:
            rows = session.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.dataset_id == info.dataset_id)
                .order_by(DatasetVersionRow.version)
            ).all()
            return [DatasetVersion.from_row(r) for r in rows]

    def _shred_locked(
        self, info: DatasetInfo, version: DatasetVersion, reason: str
    ) -> DatasetVersion:
        """Step (c), with the dataset's file lock held: key, file, then the row (on the trail)."""
        if version.state == SHREDDED:
            return version
        self._files().shred(
            version, reason=f"'{registered_name(info)}' v{version.version}: {reason}"
        )
        crash_point("file-deleted")
        with self.store.session(lock=True) as session:
            row = session.scalars(
                select(DatasetVersionRow)
                .where(
                    DatasetVersionRow.dataset_id == version.dataset_id,
                    DatasetVersionRow.version == version.version,
                )
                .with_for_update()
            ).one()
            if row.state != SHREDDED:
                row.state, row.shredded_at = SHREDDED, _now()
                record_change(
                    self.access,
                    session,
                    "dataset.shred",
                    info,
                    version=version.version,
                    object_id=version.object_id,
                    reason=reason,
                )
            session.flush()
            return DatasetVersion.from_row(row)

    def finish_shredding(self, name: str | None = None) -> list[DatasetVersion]:
        """Shred every superseded version left by a crash, and remove unrecorded files.

        ``name=None``: every managed dataset (archived ones included) on which
        the acting principal holds ``dataset.erase``; the others are skipped.
        With ``dataset.erase`` on the whole workspace, the folders of datasets
        removed by a run that died before destroying them are cleared too.
        Safe to run at any time, as often as wanted.

        Returns:
            The versions shredded now.
        """
        if name is not None:
            self.access.require(Permission.DATASET_ERASE, name, action="dataset.shred")
            targets = [self._managed_info(name, "shredding")]
        else:
            with self.store.session() as session:
                rows = session.scalars(select(DatasetRow).order_by(DatasetRow.id)).all()
                infos = [DatasetInfo.from_row(r) for r in rows]
            allows = self.access.allows
            targets = [
                i
                for i in infos
                if i.managed and allows(Permission.DATASET_ERASE, registered_name(i))
            ]
        done: list[DatasetVersion] = []
        for info in targets:
            with self._files().lock(int(info.dataset_id or 0)):
                self._clean_orphans(int(info.dataset_id or 0))
                done.extend(
                    self._shred_locked(info, version, "finishing a shredding")
                    for version in self._all_versions(info)
                    if version.state == SUPERSEDED
                )
        if name is None and self.access.allows(Permission.DATASET_ERASE, None):
            self._sweep_unregistered()
        return done

    def _clean_orphans(self, dataset_id: int, session: Session | None = None) -> None:
        """Remove sealed files no row records (a crash before a commit); the lock is held.

        ``session``: read the rows in this (open) transaction instead of a new one.
        """
        files = self._files()
        query = select(DatasetVersionRow.path).where(DatasetVersionRow.dataset_id == dataset_id)
        if session is not None:
            recorded = set(session.scalars(query).all())
        else:
            with self.store.session() as own:
                recorded = set(own.scalars(query).all())
        for path in files.orphans(dataset_id, recorded):
            files.remove_orphan(path)

    def _sweep_unregistered(self) -> None:
        """Destroy the keys and files of dataset folders no registration owns any more.

        Left by a crash between a removal's commit and its shredding, or by a
        registration killed before its commit. Each folder is re-checked under
        its lock: a registration holds that lock until it commits.
        """
        files = self._files()
        base = files.home / "datasets"
        if not base.is_dir():
            return
        folders = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        for folder in folders:
            dataset_id = int(folder.name)
            with files.lock(dataset_id):
                with self.store.session() as session:
                    if session.get(DatasetRow, dataset_id) is not None:
                        continue
                for path in files.orphans(dataset_id, set()):
                    files.remove_orphan(path)


def _check_columns(info: DatasetInfo, frame: pd.DataFrame) -> None:
    """A new version keeps the registered columns and dtypes (a version is not a new schema)."""
    expected = dict(info.report.get("managed", {}).get("dtypes", {}))
    got = frame_dtypes(frame)
    if not isinstance(frame, pd.DataFrame) or got != expected:
        raise InvalidInputError(
            f"the new version of '{info.name}' has other columns or types than registered",
            expected=", ".join(f"{c}:{t}" for c, t in expected.items()),
            got=", ".join(f"{c}:{t}" for c, t in got.items())
            if isinstance(frame, pd.DataFrame)
            else type(frame).__name__,
            fix="keep every column with its dtype; only rows may change (frame.loc[mask])",
        )

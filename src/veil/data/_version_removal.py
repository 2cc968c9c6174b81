"""Ending a managed dataset's versions: an expiry (every version destroyed) and a removal.

Mixed into :class:`veil.data.Catalog` with :class:`veil.data._versions.ManagedVersions`
(see there for the shredding protocol these reuse).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.access import Permission
from veil.data._catalog_trail import record_change
from veil.data._dataset_info import DatasetInfo
from veil.data._managed import SHREDDED, SUPERSEDED, DatasetVersion, crash_point
from veil.data._versions import ManagedVersions, OnCommit
from veil.store.tables import DatasetRow, DatasetVersionRow

__all__ = ["VersionRemoval"]


class VersionRemoval(ManagedVersions):
    """Destroying every version of a managed dataset (expiry, removal)."""

    def destroy_versions(
        self,
        name: str,
        *,
        reason: str,
        action: str,
        on_commit: OnCommit | None = None,
    ) -> list[DatasetVersion]:
        """Destroy every version of ``name`` (an expiry): the registration and ledger stay.

        One transaction supersedes every live version (``on_commit(session,
        None)`` and the trail entry in it); then each is shredded. Loads refuse
        the dataset afterwards (no data left). Needs ``dataset.erase``.
        """
        self.access.require(Permission.DATASET_ERASE, name, action=action, purpose=reason)
        info = self._managed_info(name, action)
        dataset_id = int(info.dataset_id or 0)
        with self._files().lock(dataset_id):
            with self.store.session(lock=True) as session:
                rows = session.scalars(
                    select(DatasetVersionRow)
                    .where(
                        DatasetVersionRow.dataset_id == dataset_id,
                        DatasetVersionRow.state != SHREDDED,
                    )
                    .with_for_update()
                ).all()
                for row in rows:
                    row.state = SUPERSEDED
                dataset = session.get(DatasetRow, dataset_id)
                if dataset is not None:
                    dataset.n_rows = 0
                session.flush()
                live = [DatasetVersion.from_row(r) for r in rows]
                if on_commit is not None:
                    on_commit(session, None)
                record_change(
                    self.access,
                    session,
                    action,
                    info,
                    reason=reason,
                    destroyed_versions=[v.version for v in live],
                )
            crash_point("committed")
            return [self._shred_locked(info, v, reason) for v in live]

    def _supersede_for_removal(
        self, session: Session, dataset_id: int, *, delete: bool
    ) -> list[DatasetVersion]:
        """Inside a removal's transaction: its live versions, superseded (or their rows deleted)."""
        rows = session.scalars(
            select(DatasetVersionRow)
            .where(DatasetVersionRow.dataset_id == dataset_id)
            .with_for_update()
        ).all()
        live = [DatasetVersion.from_row(r) for r in rows if r.state != SHREDDED]
        for row in rows:
            if delete:
                session.delete(row)
            elif row.state != SHREDDED:
                row.state = SUPERSEDED
        session.flush()
        return live

    def _destroy_removed(
        self, info: DatasetInfo, live: list[DatasetVersion], *, deleted: bool
    ) -> None:
        """After a removal committed: destroy its versions' keys and files."""
        files = self._files()
        dataset_id = int(info.dataset_id or 0)
        with files.lock(dataset_id):
            for version in live:
                if deleted:
                    files.shred(version, reason=f"'{info.name}' removed")
                else:
                    self._shred_locked(info, version, "the dataset was removed")
            if deleted:
                self._clean_orphans(dataset_id)

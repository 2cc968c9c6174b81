"""The budget belongs to the data, not to the name: archiving, rejoining, the same bytes refused.

A dataset with ledger history (a budget or a release) is archived when it is
removed, not deleted, so its charges stay: its row is renamed out of the way
(the name is free again) and the removal stamped in its registration report.
Registering the same bytes again (same SHA-256) brings that history back (a
*rejoin*), and registering them under a second name while a first registration
is active is refused, whether or not it has a budget yet. The limitation: only
identical bytes are recognised (a re-export, a reordered or a subsampled copy is
other data to the catalogue).

:class:`veil.data.Catalog` calls these inside its own transactions; they check
no role and record nothing themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil.data._dataset_info import DatasetInfo
from veil.errors import ConflictError
from veil.store.tables import (
    BudgetChangeRow,
    ConsentRecordRow,
    DatasetConsentRow,
    DatasetRow,
    DerivedArtifactRow,
    ErasureRow,
    LedgerCheckpointRow,
    PrivacyBudgetRow,
    PrivacyEventRow,
    RetentionPolicyRow,
)

__all__ = [
    "ARCHIVED",
    "archive",
    "governance_history",
    "ledger_history",
    "lock_digest",
    "registered_name",
    "rejoin",
    "same_data",
]

ARCHIVED = "~archived-"  # a name no user can choose (``~`` is outside the catalogue's names)


def registered_name(info: DatasetInfo) -> str:
    """The name ``info`` was registered under (an archived row's original name)."""
    if info.archived is not None and info.archived.get("name"):
        return str(info.archived["name"])
    return info.name


def ledger_history(session: Session, dataset_id: int) -> tuple[int, bool]:
    """Releases charged to a dataset, and whether it has any ledger history at all."""
    events = session.scalar(
        select(func.count())
        .select_from(PrivacyEventRow)
        .where(PrivacyEventRow.dataset_id == dataset_id)
    )
    changes = session.scalar(
        select(func.count())
        .select_from(BudgetChangeRow)
        .where(BudgetChangeRow.dataset_id == dataset_id)
    )
    budget = session.get(PrivacyBudgetRow, dataset_id)
    return int(events or 0), bool(events or changes or budget is not None)


def governance_history(session: Session, dataset_id: int) -> bool:
    """Whether records that must outlive the registration name the dataset.

    Erasure and consent records are kept after a removal (docs/erasure.md), and
    models and retention policies point at the dataset: deleting its row would
    orphan them (the database refuses it), so such a dataset is archived, as one
    with ledger history is.
    """
    tables = (
        ErasureRow,
        ConsentRecordRow,
        DatasetConsentRow,
        RetentionPolicyRow,
        DerivedArtifactRow,
        LedgerCheckpointRow,
    )
    return any(
        session.scalar(select(table.dataset_id).where(table.dataset_id == dataset_id).limit(1))
        is not None
        for table in tables
    )


def lock_digest(session: Session, backend: str, digest: str) -> None:
    """Serialise registrations of the same bytes (SQLite: the write lock is held already)."""
    if backend != "sqlite":
        session.execute(select(func.pg_advisory_xact_lock(int(digest[:15], 16))))


def same_data(session: Session, digest: str) -> DatasetRow | None:
    """The archived registration of the same bytes, to rejoin (``None``: new data).

    Raises:
        ConflictError: The same bytes are registered (not archived) already,
            with or without ledger history: a second name would be a second,
            fresh budget.
    """
    rows = session.scalars(
        select(DatasetRow).where(DatasetRow.content_sha256 == digest).order_by(DatasetRow.id)
    ).all()
    active = [r for r in rows if "archived" not in r.registration_report]
    if active:
        info = DatasetInfo.from_row(active[0])
        raise ConflictError(
            f"the same data is already registered as '{info.name}'; a second name "
            "would give it a second, fresh privacy budget",
            expected="data not registered yet (a budget belongs to the data, not to the name)",
            got=f"SHA-256 {digest[:16]}... ({info.n_rows:,} rows), registered as '{info.name}'",
            fix=f"use the name '{info.name}', or change its declarations with "
            f"`veil datasets update {info.name} ...` (--bounds, --categories, "
            "--categories-from, --id, --qi, --sensitive)",
            details={"dataset": info.name, "same_data": [r.name for r in active]},
        )
    return rows[0] if rows else None


def rejoin(
    session: Session, row: DatasetRow, fields: dict[str, Any], report: dict[str, Any]
) -> DatasetInfo:
    """Register the data again on its archived row: its ledger carries over."""
    archived = row.registration_report["archived"]
    report["rejoined"] = {
        "name": archived.get("name"),
        "archived_at": archived.get("at"),
        "releases": archived.get("releases", 0),
    }
    report["history"] = [*row.registration_report.get("history", []), archived]
    for key, value in fields.items():
        setattr(row, key, value)
    row.registration_report = report
    session.flush()
    return DatasetInfo.from_row(row)


def archive(row: DatasetRow, info: DatasetInfo, *, by: str, releases: int) -> str:
    """Rename ``row`` out of the way and stamp the removal in its report; the new name."""
    row.name = f"{info.name[:100]}{ARCHIVED}{row.id}"
    row.registration_report = {
        **info.report,
        "archived": {
            "name": info.name,
            "at": datetime.now(UTC).isoformat(),
            "by": by,
            "releases": releases,
        },
    }
    return row.name

"""The catalogue's role checks and trail entries: what a load needs, what a read or change records.

A load names what its rows are for (:class:`DataUse`), which decides the
permission it needs; the check is recorded when it refuses. An allowed load is
put on the trail (``dataset.read``) before a byte is read; a registration,
update or removal is appended in the transaction that writes it, so the entry
commits with the change. Every entry links the dataset's row and the SHA-256 of
its bytes. :class:`veil.data.Catalog` is the only caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from veil.access import Access, Permission
from veil.data._archive import registered_name
from veil.data._dataset_info import DatasetInfo
from veil.errors import InvalidInputError

__all__ = ["DataUse", "check_use", "record_change", "record_read"]


class DataUse(StrEnum):
    """What loaded rows are for; it decides the permission a load needs."""

    RAW = "raw"  # the rows go to the caller: dataset.read_rows (owners)
    MECHANISM = "mechanism"  # a DP mechanism or an audit reads them, returns none: dataset.use
    # Rows read to write the dataset's next version (an erasure, a retention run):
    # dataset.erase (owners). Nothing is released, so no consent filter applies: the new
    # version must keep the people who consented to nothing (yet) as well.
    MAINTENANCE = "maintenance"

    @property
    def permission(self) -> Permission:
        """The permission a load for this use needs."""
        if self is DataUse.MAINTENANCE:
            return Permission.DATASET_ERASE
        return Permission.DATASET_READ_ROWS if self is DataUse.RAW else Permission.DATASET_USE


def check_use(access: Access, name: str, use: DataUse | str, purpose: str) -> DataUse:
    """Refuse (and record) a load the acting principal may not make, before anything else."""
    try:
        chosen = DataUse(use)
    except ValueError:
        raise InvalidInputError(
            "unknown data use",
            expected=f"one of {', '.join(u.value for u in DataUse)}",
            got=repr(use),
            fix="pass DataUse.RAW for rows you keep, DataUse.MECHANISM for a DP "
            "mechanism or an audit",
        ) from None
    access.require(chosen.permission, name, action="dataset.read", purpose=purpose)
    return chosen


def record_read(
    access: Access,
    info: DatasetInfo,
    use: DataUse,
    columns: Sequence[str] | None,
    purpose: str,
    *,
    consent: dict[str, Any] | None = None,
) -> None:
    """Put the load on the trail, before any of its bytes are read.

    ``consent``: the consent snapshot the load applies (purpose term, last
    record, moment, default), on a dataset under consent management.
    """
    details: dict[str, Any] = {
        "use": str(use),
        "columns": None if columns is None else list(columns),
        "n_rows": info.n_rows,
    }
    if consent is not None:
        details["consent"] = consent
    access.record(
        "dataset.read",
        dataset=info.name,
        purpose=purpose,
        links={"dataset_id": info.dataset_id, "content_sha256": info.content_sha256},
        details=details,
    )


def record_change(
    access: Access, session: Session, action: str, info: DatasetInfo, **details: Any
) -> None:
    """Record a change of ``info`` in ``session``: the entry commits with the change.

    The details are the registration's source, format and row count, then ``details``.
    """
    access.append(
        session,
        action,
        dataset=registered_name(info),
        links={"dataset_id": info.dataset_id, "content_sha256": info.content_sha256},
        details={"source": info.source, "format": info.format, "n_rows": info.n_rows} | details,
    )

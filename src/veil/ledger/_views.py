"""Pages of a dataset's releases, read in the database a page at a time.

:func:`release_page` is what :meth:`veil.ledger.Ledger.releases` runs: keyset
pagination on ``(dataset_id, seq)`` (the unique index every ledger has), the
filters in the ``WHERE`` clause, and ``LIMIT`` one more than the page to learn
whether another page follows. The page's keys are read first, then its rows by
key, and only those are turned into :class:`~veil.ledger.LedgerEntry` objects.
Unfiltered, or filtered by actor, operation or time (migration 0009's
indexes), a page is an index range read and costs the same at the 100th
release as at the 100,000th. A ``purpose`` or ``mechanism`` substring has no
index: releases are checked in ``seq`` order until the page fills, so a rare
match reads far (a page's cost grows with the releases it skips).

Filters:

* ``actor`` and ``operation``: exact matches.
* ``purpose``: a substring of the stated purpose, case-insensitive for ASCII
  letters (SQLite's ``lower`` folds no others).
* ``mechanism``: a mechanism's name (``laplace``, ``gaussian``,
  ``poisson_subsampled_gaussian``, ...), matched in SQL as the text
  ``"name": "<mechanism>"`` inside the stored mechanisms JSON (one release
  matches when any of its mechanisms has that name; a mechanism parameter
  that is itself called ``name`` with that value would match too).
* ``since`` / ``until``: ``since <= created_at < until`` (a time without a
  zone is read as UTC).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, select
from sqlalchemy.orm import Session

from veil.errors import InvalidInputError
from veil.ledger._entry import LedgerEntry
from veil.store.tables import DatasetRow, PrivacyEventRow

__all__ = ["MAX_PAGE", "ReleaseFilters", "ReleasePage", "release_page"]

# The most releases one page may hold (a page is built into objects in memory).
MAX_PAGE = 1000


@dataclass(frozen=True)
class ReleaseFilters:
    """What a page of releases is narrowed to (``None``: no filter on that field)."""

    actor: str | None = None
    purpose: str | None = None
    operation: str | None = None
    mechanism: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "purpose": self.purpose,
            "operation": self.operation,
            "mechanism": self.mechanism,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }


@dataclass(frozen=True)
class ReleasePage:
    """One page of a dataset's releases.

    Attributes:
        items: The releases, in the page's order: oldest first when paging
            forward (``after=``), newest first otherwise (``before=``, or
            neither: the newest page).
        next_after: Pass as ``after=`` for the releases after this page
            (``None``: none match after it).
        next_before: Pass as ``before=`` for the releases before this page
            (``None``: none match before it).
        total: How many releases the dataset has (unfiltered pages only);
            ``None`` under a filter (counting the matches would read each one).
        order: ``"asc"`` (oldest first) or ``"desc"`` (newest first).
    """

    dataset: str
    items: list[LedgerEntry]
    next_after: int | None
    next_before: int | None
    total: int | None
    order: str
    filters: ReleaseFilters

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "items": [item.to_dict() for item in self.items],
            "next_after": self.next_after,
            "next_before": self.next_before,
            "total": self.total,
            "order": self.order,
            "filters": self.filters.to_dict(),
        }


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"{name} must be a date and time",
            expected="a datetime (ISO 8601 over HTTP, e.g. 2026-12-06T17:00:00Z)",
            got=repr(value),
        )
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first representable UTC time
        raise InvalidInputError(
            f"'{name}' is outside the range of times this can compare",
            expected="a time between 0001-01-02 and 9999-12-30 (UTC)",
            got=value.isoformat(),
            fix="give a time within those years",
        ) from None


def _check_seq(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            f"{name} must be a release sequence number",
            expected="a whole number >= 0 (the seq of a release on a page)",
            got=repr(value),
            fix=f"pass the next_{name} of the page before",
        )
    return value


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(ds: DatasetRow, filters: ReleaseFilters) -> list[ColumnElement[bool]]:
    table = PrivacyEventRow
    where: list[ColumnElement[bool]] = [table.dataset_id == ds.id]
    if filters.actor is not None:
        where.append(table.actor == filters.actor)
    if filters.operation is not None:
        where.append(table.operation == filters.operation)
    if filters.purpose is not None:
        pattern = f"%{_like_escaped(filters.purpose.lower())}%"
        where.append(func.lower(table.purpose).like(pattern, escape="\\"))
    if filters.mechanism is not None:
        # The stored JSON is json.dumps output on both backends: '"name": "laplace"'.
        needle = f'"name": {json.dumps(filters.mechanism)}'
        pattern = f"%{_like_escaped(needle)}%"
        where.append(cast(table.mechanisms, String).like(pattern, escape="\\"))
    if filters.since is not None:
        where.append(table.created_at >= filters.since)
    if filters.until is not None:
        where.append(table.created_at < filters.until)
    return where


def normalised_filters(
    *,
    actor: str | None,
    purpose: str | None,
    operation: str | None,
    mechanism: str | None,
    since: datetime | None,
    until: datetime | None,
) -> ReleaseFilters:
    """The filters, checked: empty strings mean no filter, times become UTC."""
    texts = {"actor": actor, "purpose": purpose, "operation": operation, "mechanism": mechanism}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(
                f"the {name} filter must be text", expected="a string", got=repr(value)
            )
    start, end = _utc(since, "since"), _utc(until, "until")
    if start is not None and end is not None and end <= start:
        raise InvalidInputError(
            "the time filter is empty: until is not after since",
            expected="since < until",
            got=f"since={start.isoformat()}, until={end.isoformat()}",
            fix="swap them, or leave one out",
        )
    return ReleaseFilters(
        actor=actor or None,
        purpose=purpose or None,
        operation=operation or None,
        mechanism=mechanism or None,
        since=start,
        until=end,
    )


def release_page(
    session: Session,
    ds: DatasetRow,
    filters: ReleaseFilters,
    *,
    after: int | None,
    before: int | None,
    limit: int,
) -> ReleasePage:
    """One page of ``ds``'s releases matching ``filters`` (see the module)."""
    after, before = _check_seq(after, "after"), _check_seq(before, "before")
    if after is not None and before is not None:
        raise InvalidInputError(
            "a page is asked for after a release or before one, not both",
            expected="after= (forward, oldest first) or before= (backward, newest first)",
            got=f"after={after}, before={before}",
            fix="pass only the next_after or the next_before of the page you have",
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(
            "a page's limit is out of range",
            expected=f"a whole number from 1 to {MAX_PAGE}",
            got=repr(limit),
        )
    table = PrivacyEventRow
    where = _conditions(ds, filters)
    forward = after is not None
    if forward:
        keyed = [*where, table.seq > after]
        order = table.seq.asc()
    else:
        keyed = [*where, table.seq < before] if before is not None else list(where)
        order = table.seq.desc()
    # The page's keys first (from an index where the filters allow), then its rows by key:
    # a time range is read from (dataset_id, created_at, seq) without touching the rows.
    keys = list(
        session.scalars(select(table.seq).where(*keyed).order_by(order).limit(limit + 1)).all()
    )
    more = len(keys) > limit
    keys = keys[:limit]
    found = {
        row.seq: row
        for row in session.scalars(
            select(table).where(table.dataset_id == ds.id, table.seq.in_(keys))
        ).all()
    }
    rows: Sequence[PrivacyEventRow] = [found[seq] for seq in keys]
    items = [LedgerEntry.from_row(row, ds.name) for row in rows]
    next_after: int | None
    next_before: int | None
    if not rows:
        # Nothing here: point back at where the caller came from, if anything lies there.
        edge = after if forward else before
        next_after = next_before = None
        if edge is not None and _exists(session, where, table.seq < edge + int(forward)):
            next_before = edge + int(forward)
        if not forward and before is not None and _exists(session, where, table.seq >= before):
            next_after = before - 1
    elif forward:
        next_after = rows[-1].seq if more else None
        earlier = _exists(session, where, table.seq < rows[0].seq)
        next_before = rows[0].seq if earlier else None
    else:
        next_before = rows[-1].seq if more else None
        later = before is not None and _exists(session, where, table.seq > rows[0].seq)
        next_after = rows[0].seq if later else None
    total = None
    if filters == ReleaseFilters():
        # Releases are numbered 1..n without gaps (the chain links each to the one before):
        # the last seq is the count, read from the index (COUNT(*) reads every row).
        total = int(session.scalar(select(func.max(table.seq)).where(*where)) or 0)
    return ReleasePage(
        dataset=ds.name,
        items=items,
        next_after=next_after,
        next_before=next_before,
        total=total,
        order="asc" if forward else "desc",
        filters=filters,
    )


def _exists(session: Session, where: list[ColumnElement[bool]], edge: ColumnElement[bool]) -> bool:
    found = session.scalar(
        select(PrivacyEventRow.seq).where(*where, edge).order_by(PrivacyEventRow.seq).limit(1)
    )
    return found is not None

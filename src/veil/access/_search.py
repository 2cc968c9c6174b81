"""Pages of the trail, newest first: keyset paging on ``seq`` with indexed filters.

A page is one index range read at any trail size: each exact filter (actor,
action, dataset, outcome) has an index ``(column, seq)`` (revision 0008), so
"the newest 50 entries of this actor before seq N" walks that index backwards
from ``(actor, N)``. Several exact filters use one index and check the others
on the rows it yields.

**Time bounds become seq bounds.** An entry's ``at`` is stamped under the
trail's lock, so it grows with ``seq``; ``since`` and ``until`` are turned
into the first and last ``seq`` of the window through the index on ``at`` (two
index seeks) and the page is then a plain ``seq`` range. (An entry stamped by
a writer whose clock stepped back, out of order, can fall outside the window
by that step; the ``at`` conditions are still applied inside it.)

**An action prefix** (``"serve."`` or ``"serve.*"``) is expanded into the
actions it matches, each found by one seek in the action index (the trail
has tens of kinds of action, not thousands); each is read as an exact filter
and the pages are merged. Past :data:`PREFIX_ACTIONS` matching actions, or
beside another exact filter (whose index then drives), the prefix is checked
on the rows read instead.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from veil.access._entries import Outcome, TrailEntry
from veil.errors import InvalidInputError
from veil.store.tables import TrailEntryRow

__all__ = ["MAX_LIMIT", "PREFIX_ACTIONS", "Filters", "newer", "page"]

MAX_LIMIT = 10_000  # entries in one page at most (the service caps lower)
PREFIX_ACTIONS = 64  # a prefix matching more actions than this is read as a range

_T = TrailEntryRow


class Filters:
    """Checked search filters (see :meth:`veil.access.Trail.page`)."""

    def __init__(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        dataset: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self.actor = actor or None
        self.dataset = dataset or None
        self.outcome = None
        if outcome:
            try:
                self.outcome = str(Outcome(outcome))
            except ValueError:
                raise InvalidInputError(
                    "no such outcome",
                    expected=" or ".join(repr(str(o)) for o in Outcome),
                    got=repr(outcome)[:80],
                    fix="filter on one of the outcomes an entry can have",
                ) from None
        self.action, self.prefix = action or None, None
        if self.action is not None and (self.action.endswith(("*", "."))):
            self.prefix = self.action.rstrip("*")
            self.action = None
            if not self.prefix:
                self.prefix = None
        self.since, self.until = _utc(since, "since"), _utc(until, "until")

    def exact(self, query: Any, action: str | None) -> Any:
        for column, value in (
            (_T.actor, self.actor),
            (_T.action, action or self.action),
            (_T.dataset, self.dataset),
            (_T.outcome, self.outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(_T.at >= self.since)
        if self.until is not None:
            query = query.where(_T.at < self.until)
        return query


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"'{name}' is not a date and time",
            expected="a datetime (ISO 8601 on the command line and the API)",
            got=type(value).__name__,
            fix="pass a datetime such as 2026-12-06T10:00:00Z",
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


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(
            "the page size is out of range",
            expected=f"an integer from 1 to {MAX_LIMIT}",
            got=repr(limit)[:40],
            fix="ask for a smaller page and follow next_before",
        )
    return limit


def _check_seq(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            f"'{name}' is not an entry number",
            expected="an integer of 0 or more (an entry's seq)",
            got=repr(value)[:40],
            fix="pass the next_before value of the previous page",
        )
    return value


def _window(connection: Connection, filters: Filters) -> tuple[int, int | None] | None:
    """The seq range ``[lo, hi]`` of the time window (``hi=None``: open), or None when empty."""
    lo, hi = 1, None
    if filters.since is not None:
        first = connection.execute(
            select(_T.seq).where(_T.at >= filters.since).order_by(_T.at, _T.seq).limit(1)
        ).scalar()
        if first is None:
            return None
        lo = first
    if filters.until is not None:
        last = connection.execute(
            select(_T.seq)
            .where(_T.at < filters.until)
            .order_by(_T.at.desc(), _T.seq.desc())
            .limit(1)
        ).scalar()
        if last is None or last < lo:
            return None
        hi = last
    return lo, hi


def _actions(connection: Connection, prefix: str) -> list[str] | None:
    """The actions that start with ``prefix`` (one index seek each), None past the cap."""
    found: list[str] = []
    last = prefix
    inclusive = True
    while len(found) <= PREFIX_ACTIONS:
        query = select(_T.action).where(_T.action >= last if inclusive else _T.action > last)
        hit = connection.execute(query.order_by(_T.action).limit(1)).scalar()
        if hit is None or not hit.startswith(prefix):
            return found
        found.append(hit)
        last, inclusive = hit, False
    return None


def _read(
    connection: Connection,
    filters: Filters,
    *,
    descending: bool,
    bound: int | None,
    window: tuple[int, int | None],
    limit: int,
) -> list[tuple[str, str]]:
    """Up to ``limit`` (body, leaf) rows, newest first (or oldest first above ``bound``)."""
    lo, hi = window
    if descending and bound is not None:
        hi = bound - 1 if hi is None else min(hi, bound - 1)
    if not descending and bound is not None:
        lo = max(lo, bound + 1)
    actions: list[str | None] = [None]
    range_prefix = None
    if filters.prefix is not None:
        # With another exact filter, that filter's index drives and the prefix is checked on
        # its rows; alone, the prefix is expanded into exact actions, one index range each.
        others = (filters.actor, filters.dataset, filters.outcome)
        listed = (
            None if any(v is not None for v in others) else _actions(connection, filters.prefix)
        )
        if listed is None:
            range_prefix = filters.prefix
        elif not listed:
            return []
        else:
            actions = list(listed)
    runs: list[list[tuple[int, str, str]]] = []
    for action in actions:
        query = filters.exact(select(_T.seq, _T.body, _T.leaf), action).where(_T.seq >= lo)
        if hi is not None:
            query = query.where(_T.seq <= hi)
        if range_prefix is not None:
            query = query.where(_T.action.startswith(range_prefix, autoescape=True))
        order = _T.seq.desc() if descending else _T.seq
        found = connection.execute(query.order_by(order).limit(limit))
        runs.append([(int(seq), body, leaf) for seq, body, leaf in found])
    if len(runs) == 1:
        merged = runs[0]
    else:
        key = (lambda r: -r[0]) if descending else (lambda r: r[0])
        merged = list(heapq.merge(*runs, key=key))[:limit]
    return [(body, leaf) for _, body, leaf in merged]


def page(
    connection: Connection, filters: Filters, *, before: int | None, limit: int
) -> tuple[list[TrailEntry], int | None]:
    """Entries before ``before`` matching ``filters``, newest first, and the next cursor."""
    limit = _check_limit(limit)
    before = _check_seq(before, "before")
    window = _window(connection, filters)
    if window is None or before == 0:
        return [], None
    rows = _read(connection, filters, descending=True, bound=before, window=window, limit=limit + 1)
    entries = [TrailEntry.from_body(body, leaf) for body, leaf in rows[:limit]]
    return entries, (entries[-1].seq if len(rows) > limit else None)


def newer(
    connection: Connection, filters: Filters, *, after: int, limit: int
) -> tuple[list[TrailEntry], bool]:
    """The ``limit`` matching entries just after ``after``, newest first, and whether more follow."""
    limit = _check_limit(limit)
    after = _check_seq(after, "after") or 0
    window = _window(connection, filters)
    if window is None:
        return [], False
    rows = _read(connection, filters, descending=False, bound=after, window=window, limit=limit + 1)
    entries = [TrailEntry.from_body(body, leaf) for body, leaf in rows[:limit]]
    entries.reverse()
    return entries, len(rows) > limit

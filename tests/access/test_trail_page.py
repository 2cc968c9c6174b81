"""Trail.page: keyset pages, newest first, equal to filtering every entry by hand.

Every combination of filters over a trail of a few hundred varied entries is
walked page by page (``before=next_before``) and back (``Trail.newer``); the
entries seen are exactly the ones a filter over all rows keeps, in order,
each once. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, update

from veil.access import Outcome, Trail
from veil.errors import InvalidInputError
from veil.store import Store
from veil.store.tables import TrailEntryRow

ACTORS = ["alice", "bob", "carol"]
ACTIONS = ["serve.request", "serve.refused", "dataset.read", "ledger.charge", "servex.other"]
DATASETS = [None, "adult", "census"]
OUTCOMES = [Outcome.ALLOWED, Outcome.REFUSED, Outcome.FAILED]
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def trail(store: Store) -> Trail:
    made = Trail(store)
    entries = [
        {
            "actor": ACTORS[i % 3],
            "action": ACTIONS[(i * 7) % 5],
            "dataset": DATASETS[(i // 2) % 3],
            "outcome": OUTCOMES[(i // 5) % 3],
        }
        for i in range(400)
    ]
    with store.session(lock=True) as session:
        made.append_many(session, entries)
    # One entry a minute (the column a search reads; the bodies keep their own times).
    with store.session() as session:
        for seq in range(1, 402):
            session.execute(
                update(TrailEntryRow)
                .where(TrailEntryRow.seq == seq)
                .values(at=BASE + timedelta(minutes=seq))
            )
    return made


def _rows(store: Store) -> list[Any]:
    with store.session() as session:
        return list(
            session.execute(
                select(
                    TrailEntryRow.seq,
                    TrailEntryRow.actor,
                    TrailEntryRow.action,
                    TrailEntryRow.dataset,
                    TrailEntryRow.outcome,
                    TrailEntryRow.at,
                ).order_by(TrailEntryRow.seq.desc())
            ).all()
        )


def _expected(rows: list[Any], filters: dict[str, Any]) -> list[int]:
    keep = []
    for seq, actor, action, dataset, outcome, stamp in rows:
        at = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        wanted = filters.get("action")
        if wanted is not None:
            prefix = wanted.rstrip("*") if wanted.endswith(("*", ".")) else None
            if (prefix is not None and not action.startswith(prefix)) or (
                prefix is None and action != wanted
            ):
                continue
        if filters.get("actor") not in {None, actor}:
            continue
        if filters.get("dataset") not in {None, dataset}:
            continue
        if filters.get("outcome") not in {None, outcome}:
            continue
        if filters.get("since") is not None and at < filters["since"]:
            continue
        if filters.get("until") is not None and at >= filters["until"]:
            continue
        keep.append(seq)
    return keep


CHOICES: dict[str, list[Any]] = {
    "actor": [None, "bob"],
    "action": [None, "serve.request", "serve.", "serve.*", "nothing."],
    "dataset": [None, "adult"],
    "outcome": [None, "refused"],
    "since": [None, BASE + timedelta(minutes=100)],
    "until": [None, BASE + timedelta(minutes=300, seconds=30)],
}


def test_every_filter_combination_pages_like_a_full_scan(trail: Trail) -> None:
    rows = _rows(trail.store)
    combos = 0
    for values in itertools.product(*list(CHOICES.values())):
        filters = dict(zip(CHOICES, values, strict=True))
        expected = _expected(rows, filters)
        seen: list[int] = []
        before = None
        while True:
            entries, before = trail.page(**filters, before=before, limit=17)
            assert len(entries) <= 17
            seen.extend(e.seq for e in entries)
            if before is None:
                break
            assert entries and before == entries[-1].seq
        assert seen == expected, filters
        if len(expected) > 17:  # and back: the page just newer than the second one
            second, _ = trail.page(**filters, before=expected[16], limit=17)
            back, more = trail.newer(after=second[0].seq, limit=17, **filters)
            assert [e.seq for e in back] == expected[:17]
            assert more is False
        combos += 1
    assert combos == 2 * 5 * 2 * 2 * 2 * 2


def test_entries_keep_their_bodies(trail: Trail) -> None:
    entries, _ = trail.page(limit=3)
    assert [e.seq for e in entries] == [401, 400, 399]
    assert entries[0].to_dict() == trail.entry(401).to_dict()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "page size"),
        ({"limit": 10**6}, "page size"),
        ({"before": -1}, "entry number"),
        ({"outcome": "maybe"}, "no such outcome"),
        ({"since": "yesterday"}, "date and time"),
        # Before the first UTC time once moved to UTC (a 500 under schema fuzzing).
        ({"since": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "outside the range"),
        ({"until": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "outside"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(
    trail: Trail, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        trail.page(**arguments)


def test_an_empty_window_or_before_the_start_is_an_empty_page(trail: Trail) -> None:
    assert trail.page(since=BASE + timedelta(days=9)) == ([], None)
    assert trail.page(until=BASE) == ([], None)
    assert trail.page(before=1) == ([], None)
    assert trail.page(before=0) == ([], None)

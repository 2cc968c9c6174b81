"""Verify in worker processes finds exactly what verify in one process finds.

A long trail is checked in ranges by worker processes (``veil._trailscan``),
joined in the parent; these tests force two workers on a small trail (the
ranges are then a few rows each, so several joins are exercised) and compare
every result with the single-process walk, on a clean trail and after edits.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from veil.access import Trail
from veil.store import Store

KEY = bytes(range(32))
pytestmark = pytest.mark.slow  # worker processes take about a second to start


def _trail(url: str, count: int = 300) -> Trail:
    store = Store.open(url, upgrade=True)
    trail = Trail(store, signing_key=KEY)
    entries = [
        {
            "actor": "alice" if i % 3 else "svc:etl",
            "action": "dataset.read",
            "dataset": "d" if i % 2 else None,
            "purpose": f"report {i}",
            "details": {"use": "mechanism", "note": 'a "quoted" word'},
        }
        for i in range(count)
    ]
    with store.session(lock=True) as session:
        trail.append_many(session, entries)
    trail.checkpoint()
    return trail


def _same(trail: Trail) -> None:
    one, two = trail.verify(workers=1), trail.verify(workers=2)
    assert (two.ok, two.size, two.root, two.heads_checked) == (
        one.ok,
        one.size,
        one.root,
        one.heads_checked,
    )
    assert [p.to_dict() for p in two.problems] == [p.to_dict() for p in one.problems]


@pytest.fixture
def trail(store_url: str) -> Iterator[Trail]:
    made = _trail(store_url)
    try:
        yield made
    finally:
        made.store.dispose()


def test_a_clean_trail_verifies_alike_in_workers(trail: Trail):
    _same(trail)
    assert trail.verify(workers=2).ok


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE trail_entries SET actor = 'mallory' WHERE seq = 150",
        "UPDATE trail_entries SET body = replace(body, 'report', 'rep0rt') WHERE seq = 77",
        "DELETE FROM trail_entries WHERE seq = 200",
        "DELETE FROM trail_entries WHERE seq BETWEEN 96 AND 140",
    ],
    ids=["column", "body", "one-row", "many-rows"],
)
def test_an_edit_is_found_alike_in_workers(trail: Trail, edit: str):
    with trail.store.engine.begin() as connection:
        connection.execute(sa.text(edit))
    report = trail.verify(workers=2)
    assert not report.ok
    _same(trail)

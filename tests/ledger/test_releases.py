"""Ledger.releases on SQLite and PostgreSQL: pages read in the database, with every filter.

Each filtered walk (forward with ``after=``, backward with ``before=``) is
compared with the same filter applied in Python to the whole history
(``Ledger.entries``): every matching release once, in order, no other, and
the page links (``next_after``, ``next_before``) and ``total`` consistent.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from veil.access import Access, Principal
from veil.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from veil.ledger import Budget, Ledger, LedgerEntry, Mechanism, PrivacyEvent, ReleasePage
from veil.workspace import Settings, login_name

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DATASET = "diab"
CONSENT = {"purpose": "research", "persons_excluded": 3, "rows_excluded": 7, "as_of": 12}


def _event(kind: int) -> PrivacyEvent:
    if kind == 0:
        return PrivacyEvent("count(*)", (Mechanism.laplace(scale=10.0, sensitivity=1.0),))
    if kind == 1:
        return PrivacyEvent(
            "mean(bmi)", (Mechanism.gaussian(sigma=30.0, sensitivity=1.0),), operation="mechanism"
        )
    if kind == 2:
        return PrivacyEvent(
            "histogram(age)",
            (Mechanism.discrete_laplace(scale=20.0, sensitivity=1),),
            details={"consent": dict(CONSENT)},
        )
    return PrivacyEvent(
        "model",
        (
            Mechanism.subsampled_gaussian(0.01, 2.0, 5),
            Mechanism.laplace(scale=40.0, sensitivity=1.0),
        ),
        operation="training",
    )


@pytest.fixture
def ledgers(store, catalog) -> dict[str, Ledger]:
    """An owner and two analysts who have charged 36 releases of four kinds between them."""
    catalog.add("sklearn:diabetes", name=DATASET)
    owner = Ledger(store, Settings(store.display_url, None, login_name()))
    owner.set_budget(DATASET, Budget(epsilon=100.0, delta=1e-6))
    owner.access.grant("alice", "analyst", DATASET)
    owner.access.grant("bob", "analyst", DATASET)
    made = {
        "owner": owner,
        "alice": Ledger(store, access=Access(store, Principal("alice"))),
        "bob": Ledger(store, access=Access(store, Principal("bob"))),
    }
    who = ["alice", "bob", "owner"]
    purposes = ["Monthly cohort report", "ad-hoc 100% check", "model training"]
    for i in range(12):
        batch = [(DATASET, _event((3 * i + j) % 4)) for j in range(3)]
        made[who[i % 3]].charge_many(batch, purpose=purposes[i % 3])
    return made


def _walk(ledger: Ledger, *, forward: bool, limit: int, **filters: object) -> list[ReleasePage]:
    pages = [
        ledger.releases(DATASET, after=0, limit=limit, **filters)  # type: ignore[arg-type]
        if forward
        else ledger.releases(DATASET, limit=limit, **filters)  # type: ignore[arg-type]
    ]
    while True:
        last = pages[-1]
        key = last.next_after if forward else last.next_before
        if key is None:
            return pages
        nxt = (
            ledger.releases(DATASET, after=key, limit=limit, **filters)  # type: ignore[arg-type]
            if forward
            else ledger.releases(DATASET, before=key, limit=limit, **filters)  # type: ignore[arg-type]
        )
        pages.append(nxt)
        assert len(pages) < 100, "the pages never end"


def _matches(entry: LedgerEntry, filters: dict[str, object]) -> bool:
    checks = {
        "actor": lambda v: entry.actor == v,
        "operation": lambda v: entry.operation == v,
        "purpose": lambda v: str(v).lower() in entry.purpose.lower(),
        "mechanism": lambda v: any(m.name == v for m in entry.mechanisms),
        "since": lambda v: entry.created_at >= v,
        "until": lambda v: entry.created_at < v,
    }
    return all(checks[k](v) for k, v in filters.items())


def _filter_cases(entries: list[LedgerEntry]) -> list[dict[str, object]]:
    middle = entries[len(entries) // 2].created_at
    return [
        {},
        {"actor": "alice"},
        {"actor": login_name()},
        {"operation": "training"},
        {"purpose": "COHORT"},
        {"purpose": "100%"},  # a LIKE wildcard, matched literally
        {"mechanism": "laplace"},  # not discrete_laplace
        {"mechanism": "discrete_laplace"},
        {"mechanism": "poisson_subsampled_gaussian", "actor": "owner-nobody"},
        {"since": middle},
        {"until": middle},
        {"since": middle, "operation": "query", "actor": "bob"},
    ]


def test_every_filter_pages_forward_and_backward_across_page_boundaries(ledgers):
    owner = ledgers["owner"]
    entries = owner.entries(DATASET)
    assert len(entries) == 36
    for filters in _filter_cases(entries):
        expected = [e.seq for e in entries if _matches(e, filters)]
        for limit in (1, 4, 50):
            forward = _walk(owner, forward=True, limit=limit, **filters)
            seqs = [e.seq for page in forward for e in page.items]
            assert seqs == expected, (filters, limit)
            backward = _walk(owner, forward=False, limit=limit, **filters)
            assert [e.seq for page in backward for e in page.items] == expected[::-1]
            for page in forward + backward:
                assert page.total == (len(expected) if not filters else None)
                assert len(page.items) <= limit
                assert page.order == ("asc" if page in forward else "desc")
            # Each page's links point at the neighbouring pages (none past either end).
            for i, page in enumerate(forward):
                if not page.items:
                    assert expected == [] and page.next_after is None
                    continue
                assert page.next_before == (page.items[0].seq if i > 0 else None)
                if i + 1 < len(forward):
                    assert page.next_after == page.items[-1].seq
        # The full records come back, equal to entries()'s.
        page = owner.releases(DATASET, after=0, limit=50, **filters)  # type: ignore[arg-type]
        assert page.items == [e for e in entries if _matches(e, filters)]


def test_the_newest_page_comes_first_without_a_key(ledgers):
    page = ledgers["alice"].releases(DATASET, limit=5)
    assert [e.seq for e in page.items] == [36, 35, 34, 33, 32]
    assert page.next_after is None and page.next_before == 32
    older = ledgers["alice"].releases(DATASET, before=page.next_before, limit=5)
    assert [e.seq for e in older.items] == [31, 30, 29, 28, 27]
    assert older.next_after == 31  # the newer page is there again


def test_an_empty_page_says_where_the_releases_are(ledgers):
    owner = ledgers["owner"]
    beyond = owner.releases(DATASET, after=36)
    assert beyond.items == [] and beyond.next_after is None and beyond.next_before == 37
    assert [e.seq for e in owner.releases(DATASET, before=37, limit=2).items] == [36, 35]
    none = owner.releases(DATASET, actor="nobody")
    assert none.items == [] and none.total is None  # a filtered page is not counted
    assert none.next_after is None and none.next_before is None


def test_consent_counts_are_hidden_from_a_reader_without_consent_read(ledgers):
    alice = ledgers["alice"]  # an analyst: ledger.read, not consent.read
    shown = alice.releases(DATASET, mechanism="discrete_laplace", after=0, limit=50)
    assert shown.items
    for entry in shown.items:
        consent = entry.details["consent"]
        assert consent["persons_excluded"] is None and consent["rows_excluded"] is None
        assert consent["counts"] == "hidden: needs consent.read"
        assert consent["purpose"] == "research" and consent["as_of"] == 12
    # As entries() hides them, page for page.
    hidden = [
        e for e in alice.entries(DATASET) if e.operation == "query" and "consent" in e.details
    ]
    assert shown.items == hidden
    # The owner holds consent.read and sees the counts.
    owned = ledgers["owner"].releases(DATASET, mechanism="discrete_laplace", after=0, limit=50)
    assert all(e.details["consent"] == CONSENT for e in owned.items)


def test_bad_pages_and_filters_are_refused_with_what_to_do(ledgers):
    owner = ledgers["owner"]
    cases = [
        ({"after": 3, "before": 9}, "not both"),
        ({"after": -1}, "sequence number"),
        ({"before": True}, "sequence number"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"actor": 7}, "text"),
        ({"since": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "outside the range"),
    ]
    for kwargs, words in cases:
        with pytest.raises(InvalidInputError, match=words):
            owner.releases(DATASET, **kwargs)  # type: ignore[arg-type]
    now = owner.entries(DATASET)[0].created_at
    with pytest.raises(InvalidInputError, match="until is not after since"):
        owner.releases(DATASET, since=now, until=now - timedelta(seconds=1))
    with pytest.raises(NotFoundError):
        owner.releases("nope")


def test_a_reader_without_ledger_read_is_refused(ledgers, store):
    ledgers["owner"].access.grant("carol", "consumer")
    carol = Ledger(store, access=Access(store, Principal("carol")))
    with pytest.raises(PermissionDeniedError, match=r"ledger\.read"):
        carol.releases(DATASET)
    with pytest.raises(PermissionDeniedError, match=r"ledger\.read"):
        carol.burndown(DATASET)

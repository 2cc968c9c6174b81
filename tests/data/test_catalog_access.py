"""The catalogue's role checks and trail records: who may register, see and load which data."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.access import Access, Outcome, Principal
from veil.data import Catalog, DataUse
from veil.dp import query_dataset
from veil.errors import PermissionDeniedError, SchemaError
from veil.ledger import Budget, LocalBudget
from veil.store.tables import DatasetRow

DATASET = "diab"
SQL = "SELECT COUNT(*) FROM t"


@pytest.fixture
def owner(store) -> Catalog:
    """Alice claims the workspace and registers one dataset."""
    catalog = Catalog(store, access=Access(store, Principal("alice")))
    catalog.add("sklearn:diabetes", name=DATASET, bounds={"bmi": (-0.1, 0.2)})
    return catalog


def as_(store, name: str) -> Catalog:
    return Catalog(store, access=Access(store, Principal(name)))


def granted(owner: Catalog, name: str, role: str, dataset: str | None = DATASET) -> Catalog:
    owner.access.grant(name, role, dataset, reason="test")
    return as_(owner.store, name)


def entries(catalog: Catalog, **filters):
    return catalog.access.trail.entries(**filters)


def test_registration_is_on_the_trail_with_its_row(owner: Catalog):
    info = owner.get(DATASET)
    [entry] = entries(owner, action="dataset.register")
    assert entry.actor == "alice" == info.created_by
    assert entry.outcome is Outcome.ALLOWED
    assert entry.dataset == DATASET
    assert entry.links == {"dataset_id": info.dataset_id, "content_sha256": info.content_sha256}
    assert entry.details["n_rows"] == info.n_rows == 442
    assert entry.details["source"] == "sklearn:diabetes"
    assert entry.details["format"] == "sklearn"
    assert entry.details["rejoined"] is None
    assert owner.access.trail.verify().ok


def test_a_registration_refused_for_bad_data_writes_nothing(owner: Catalog, tmp_path: Path):
    before = owner.access.trail.head().size
    path = tmp_path / "ages.csv"
    path.write_text("age\n20\nunknown\n", encoding="utf-8")
    with pytest.raises(SchemaError):
        owner.add(path, name="ages", bounds={"age": (0, 120)})
    assert owner.access.trail.head().size == before
    assert [i.name for i in owner.list()] == [DATASET]


def test_update_and_remove_commit_with_their_entries(owner: Catalog):
    owner.update(DATASET, bounds={"bmi": (-0.2, 0.2)})
    [update] = entries(owner, action="dataset.update")
    assert update.actor == "alice" and update.dataset == DATASET
    assert update.details["changed"] == {"bounds": {"bmi": [-0.2, 0.2]}}
    assert owner.get(DATASET).report["updates"][-1]["by"] == "alice"
    info = owner.get(DATASET)
    result = owner.remove(DATASET)
    [remove] = entries(owner, action="dataset.remove")
    assert remove.links["content_sha256"] == info.content_sha256
    assert remove.details["archived"] is result["archived"] is False
    assert owner.list() == []
    assert owner.access.trail.verify().ok


def test_an_analyst_uses_rows_through_a_mechanism_but_never_sees_them(owner: Catalog):
    bob = granted(owner, "bob", "analyst")
    frame = bob.load_frame(DATASET, ["bmi"], use=DataUse.MECHANISM, purpose="a DP count")
    assert list(frame.columns) == ["bmi"]
    [read] = entries(bob, action="dataset.read", actor="bob")
    assert read.outcome is Outcome.ALLOWED
    assert read.purpose == "a DP count"
    assert read.details == {"use": "mechanism", "columns": ["bmi"], "n_rows": 442}
    assert read.links["content_sha256"] == owner.get(DATASET).content_sha256

    with pytest.raises(PermissionDeniedError, match=r"bob may not dataset\.read_rows") as caught:
        bob.load_frame(DATASET, purpose="curiosity")
    assert caught.value.exit_code == 9
    assert caught.value.code == "permission_denied"
    refused = entries(bob, action="dataset.read", actor="bob")[-1]
    assert refused.outcome is Outcome.REFUSED
    assert refused.details["missing"] == "dataset.read_rows"
    assert refused.purpose == "curiosity"
    # Only the one allowed read: the refused load recorded its refusal and read nothing.
    reads = [e for e in entries(bob, actor="bob") if e.outcome is Outcome.ALLOWED]
    assert [e.action for e in reads] == ["dataset.read"]


def test_the_owner_reads_raw_rows_and_that_is_recorded(owner: Catalog):
    frame = owner.load_frame(DATASET, purpose="cleaning")
    assert len(frame) == 442
    [read] = entries(owner, action="dataset.read")
    assert (read.actor, read.details["use"], read.details["columns"]) == ("alice", "raw", None)


def test_an_analyst_cannot_register_update_or_remove(owner: Catalog, tmp_path: Path):
    bob = granted(owner, "bob", "analyst")
    path = tmp_path / "x.csv"
    path.write_text("x\n1\n2\n", encoding="utf-8")
    with pytest.raises(PermissionDeniedError, match=r"dataset\.register"):
        bob.add(path, name="mine", bounds={"x": (0, 5)})
    with pytest.raises(PermissionDeniedError):
        bob.update(DATASET, bounds={"bmi": (-1.0, 1.0)})
    with pytest.raises(PermissionDeniedError):
        bob.remove(DATASET)
    refusals = entries(owner, actor="bob")
    assert [(e.action, e.outcome) for e in refusals] == [
        ("dataset.register", Outcome.REFUSED),
        ("dataset.update", Outcome.REFUSED),
        ("dataset.remove", Outcome.REFUSED),
    ]
    with owner.store.session() as session:
        names = sorted(r.name for r in session.query(DatasetRow).all())
    assert names == [DATASET]  # nothing but the refusals was written
    assert owner.get(DATASET).report.get("updates") is None


def test_a_consumer_sees_no_metadata(owner: Catalog):
    carol = granted(owner, "carol", "consumer", None)
    with pytest.raises(PermissionDeniedError, match=r"dataset\.read_metadata"):
        carol.get(DATASET)
    assert carol.list() == []  # left out, not refused
    assert [e.action for e in entries(owner, actor="carol")] == ["dataset.metadata"]


def test_a_grant_on_one_dataset_shows_only_that_one(owner: Catalog):
    owner.add("sklearn:digits", name="digits")
    bob = granted(owner, "bob", "analyst", "digits")
    assert [i.name for i in bob.list()] == ["digits"]
    assert [i.name for i in owner.list()] == [DATASET, "digits"]
    with pytest.raises(PermissionDeniedError):
        bob.load_frame(DATASET, use=DataUse.MECHANISM)


def test_an_auditor_query_is_refused_before_any_row_is_read(owner: Catalog):
    dave = granted(owner, "dave", "auditor")
    guard = LocalBudget(Budget(epsilon=10.0), dataset=DATASET)
    with pytest.raises(PermissionDeniedError, match=r"budget\.spend"):
        query_dataset(dave, guard, DATASET, SQL, epsilon=1.0, purpose="look")
    assert entries(owner, action="dataset.read") == []
    [refused] = entries(owner, actor="dave")
    assert (refused.action, refused.outcome) == ("privacy.charge", Outcome.REFUSED)
    assert not guard.status(DATASET).spent.epsilon  # nothing charged


def test_an_analyst_query_reads_through_the_mechanism(owner: Catalog):
    bob = granted(owner, "bob", "analyst")
    guard = LocalBudget(Budget(epsilon=10.0), dataset=DATASET)
    result = query_dataset(bob, guard, DATASET, SQL, epsilon=1.0, purpose="headcount")
    assert result.rows
    [read] = entries(owner, action="dataset.read")
    assert (read.actor, read.details["use"], read.purpose) == ("bob", "mechanism", "headcount")

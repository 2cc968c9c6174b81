"""Migration 0003: a ledger written at revision 0002 gets its event chain.

The upgrade links every existing event, per dataset and in ``seq`` order,
with the same :func:`veil.store.chain.link` a charge uses, so that
``Ledger.verify`` accepts the old history and charging goes on from it.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from veil.data import Catalog
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent, recompose
from veil.store import Store, head_revision
from veil.store import _store as store_module
from veil.store.chain import GENESIS, link
from veil.store.tables import utcnow
from veil.workspace import Settings, login_name

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DELTA = 1e-6


def _downgrade(store: Store, revision: str) -> None:
    config = store_module._alembic_config()
    with store.engine.connect() as connection, connection.begin():
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _columns(store: Store, table: str) -> set[str]:
    with store.engine.connect() as connection:
        return {column["name"] for column in sa.inspect(connection).get_columns(table)}


def _tables(store: Store) -> set[str]:
    with store.engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def _events(store: Store) -> list[tuple[int, int, list, str]]:
    table = sa.table(
        "privacy_events",
        sa.column("dataset_id", sa.Integer),
        sa.column("seq", sa.Integer),
        sa.column("mechanisms", sa.JSON),
        sa.column("chain", sa.String),
    )
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.dataset_id, table.c.seq, table.c.mechanisms, table.c.chain).order_by(
                table.c.dataset_id, table.c.seq
            )
        ).all()
    return [tuple(row) for row in rows]


def _spent(store: Store, name: str, dataset_id: int) -> float:
    return recompose(
        [
            PrivacyEvent("", tuple(Mechanism.from_dict(m) for m in mechanisms)).dp_event
            for ds, _, mechanisms, _ in _events(store)
            if ds == dataset_id
        ]
    ).epsilon(DELTA)


def _dataset_ids(store: Store) -> dict[str, int]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, id FROM datasets")).all()
    return {str(name): int(ident) for name, ident in rows}


def _check_linked(store: Store) -> None:
    with store.engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("privacy_events")}
        leaves = (
            {
                (int(d), int(q)): blob
                for d, q, blob in connection.execute(
                    sa.text("SELECT dataset_id, seq, leaves FROM privacy_events")
                ).all()
            }
            if "leaves" in columns
            else {}
        )
    previous: dict[int, str] = {}
    for dataset_id, seq, mechanisms, chain in _events(store):
        stored = leaves.get((dataset_id, seq))
        assert chain == link(previous.get(dataset_id, GENESIS), seq, mechanisms, stored)
        previous[dataset_id] = chain


def test_a_ledger_taken_down_to_0002_and_up_again_keeps_its_chain(
    store: Store, catalog: Catalog
) -> None:
    catalog.add("sklearn:diabetes", name="diab")
    catalog.add("sklearn:iris", name="iris")
    ledger = Ledger(store, Settings(store.display_url, None, login_name()), key=b"k" * 32)
    for name in ("diab", "iris"):
        ledger.set_budget(name, Budget(epsilon=50.0, delta=DELTA), reason="migration")
    releases = [
        ("diab", Mechanism.laplace(scale=2.0, sensitivity=1.0)),
        ("iris", Mechanism.gaussian(sigma=5.0, sensitivity=1.0)),
        ("diab", Mechanism.subsampled_gaussian(sampling_rate=0.01, noise_multiplier=1.1, steps=20)),
        ("diab", Mechanism.randomized_response(truth_probability=0.7, categories=4)),
        ("iris", Mechanism.discrete_laplace(scale=3.0, sensitivity=1)),
    ]
    for name, mechanism in releases:
        ledger.charge(name, PrivacyEvent("r", (mechanism,)), purpose="before the upgrade")
    ledger.record_non_private("iris", "baseline", purpose="comparison")
    before = _events(store)
    spent = {name: ledger.status(name).spent.epsilon for name in ("diab", "iris")}

    _downgrade(store, "0002")
    assert store.current_revision() == "0002"
    assert "chain" not in _columns(store, "privacy_events")
    assert "ledger_checkpoints" not in _tables(store)

    store.upgrade()
    assert store.current_revision() == head_revision()
    # The same events; their stored distributions went with the downgrade, so the links are
    # recomputed without them (and the ledger builds those distributions again when needed).
    assert [row[:3] for row in _events(store)] == [row[:3] for row in before]
    _check_linked(store)
    ids = _dataset_ids(store)
    for name in ("diab", "iris"):
        fresh = Ledger(store, key=b"k" * 32)
        report = fresh.verify(name)
        assert report["ok"] is True, report["problems"]
        assert report["chain"] == "intact"
        assert report["spent"]["epsilon"] == spent[name] == _spent(store, name, ids[name])
        receipt = Ledger(store, key=b"k" * 32).charge(
            name,
            PrivacyEvent("r", (Mechanism.laplace(scale=4.0, sensitivity=1.0),)),
            purpose="after",
        )
        assert receipt.status.spent.epsilon == _spent(store, name, ids[name])
    _check_linked(store)


@pytest.mark.parametrize("order", ["in-order", "shuffled"])
def test_events_written_at_0002_are_linked_in_seq_order_per_dataset(
    store_url: str, catalog_at_0002: None, order: str
) -> None:
    store = Store.open(store_url, check=False)
    try:
        ids = _dataset_ids(store)
        table = sa.Table("privacy_events", sa.MetaData(), autoload_with=store.engine)
        mechanisms = {
            ("a", 1): Mechanism.laplace(scale=1.0, sensitivity=1.0),
            ("a", 2): Mechanism.gaussian(sigma=3.0, sensitivity=1.0),
            ("a", 3): Mechanism.laplace(scale=5.0, sensitivity=2.0),
            ("b", 1): Mechanism.gaussian(sigma=9.0, sensitivity=1.0),
            ("b", 2): Mechanism.discrete_gaussian(sigma=4.0, sensitivity=1),
        }
        keys = list(mechanisms)
        if order == "shuffled":  # ids no longer follow seq, and the datasets interleave
            keys = [("a", 3), ("b", 2), ("a", 1), ("b", 1), ("a", 2)]
        with store.engine.begin() as connection:
            for name, seq in keys:
                connection.execute(
                    table.insert().values(
                        dataset_id=ids[name],
                        seq=seq,
                        created_at=utcnow(),
                        actor="old veil",
                        purpose="before 0003",
                        operation="query",
                        what="q",
                        mechanisms=[mechanisms[name, seq].to_dict()],
                        details={},
                        accountant="pld",
                        epsilon=None,
                        rho=None,
                        spent_epsilon=None,
                        spent_delta=None,
                        spent_rho=None,
                    )
                )
        store.upgrade()
        store.check_version()
        _check_linked(store)
        for name, count in (("a", 3), ("b", 2)):
            report = Ledger(store).verify(name)
            assert report["ok"] is True, report["problems"]
            assert report["events"] == count
            expected = recompose([mechanisms[name, s].dp_event for s in range(1, count + 1)])
            assert report["spent"]["epsilon"] == expected.epsilon(DELTA)
    finally:
        store.dispose()


@pytest.fixture
def catalog_at_0002(store_url: str) -> None:
    """A database at revision 0002 holding datasets 'a' and 'b' with budgets, no events."""
    store = Store.open(store_url, upgrade=True)
    try:
        catalog = Catalog(store, Settings(store.display_url, None, login_name()))
        catalog.add("sklearn:diabetes", name="a")
        catalog.add("sklearn:iris", name="b")
        ledger = Ledger(store)
        for name in ("a", "b"):
            ledger.set_budget(name, Budget(epsilon=50.0, delta=DELTA), reason="old budget")
        _downgrade(store, "0002")
        assert store.current_revision() == "0002"
    finally:
        store.dispose()

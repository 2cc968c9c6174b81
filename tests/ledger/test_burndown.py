"""Ledger.burndown and the status's RDP cross-check on SQLite and PostgreSQL.

The RDP figures come from curves grouped by mechanism set in SQL; each point
is checked against :class:`RDPAccountant` run on the history up to that
release, one event at a time (an independent path), and the last against the
status's cross-check; the PLD figure against the ledger's own spend.
"""

from __future__ import annotations

import math

import pytest

from veil.errors import InvalidInputError
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent, RDPAccountant
from veil.workspace import Settings, login_name

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DATASET = "diab"
DELTA = 1e-6

KINDS = [
    PrivacyEvent("count(*)", (Mechanism.laplace(scale=10.0, sensitivity=1.0),)),
    PrivacyEvent("mean(bmi)", (Mechanism.gaussian(sigma=20.0, sensitivity=1.0),)),
    PrivacyEvent("model", (Mechanism.subsampled_gaussian(0.01, 1.1, 100),), operation="training"),
    PrivacyEvent(
        "top-k and count",
        (
            Mechanism.epsilon_delta("exponential", 0.05, 1e-9),
            Mechanism.laplace(scale=5.0, sensitivity=1.0),
        ),
        operation="mechanism",
    ),
    PrivacyEvent("hist", (Mechanism.discrete_gaussian(sigma=25.0, sensitivity=1),)),
]


@pytest.fixture
def ledger(store, catalog) -> Ledger:
    catalog.add("sklearn:diabetes", name=DATASET)
    return Ledger(store, Settings(store.display_url, None, login_name()))


def _charge(ledger: Ledger, count: int, start: int = 0) -> None:
    batch = [(DATASET, KINDS[(start + i) * 3 % len(KINDS)]) for i in range(count)]
    ledger.charge_many(batch, purpose="burn-down test")


def _history(ledger: Ledger) -> list:
    return [PrivacyEvent("", e.mechanisms).dp_event for e in ledger.entries(DATASET)]


def test_each_point_is_the_rdp_of_the_history_so_far_and_the_last_is_the_status(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=200.0, delta=DELTA))
    _charge(ledger, 23)
    ledger.record_non_private(DATASET, "baseline", purpose="a non-private baseline")
    _charge(ledger, 17, start=23)
    history = _history(ledger)
    entries = ledger.entries(DATASET)
    assert len(history) == 41
    burn = ledger.burndown(DATASET, points=6)
    seqs = [p.seq for p in burn.points]
    assert seqs[0] == 1 and seqs[-1] == 41 and seqs == sorted(set(seqs))
    assert len(seqs) <= 6
    assert burn.events == 41 and burn.rdp_delta == DELTA
    rdp = RDPAccountant()
    for point in burn.points:
        expected = rdp.epsilon(history[: point.seq], DELTA)
        assert point.rdp_epsilon == pytest.approx(expected, rel=1e-9), point.seq
        entry = entries[point.seq - 1]
        assert point.epsilon == entry.spent_epsilon and point.at == entry.created_at
        assert point.delta == DELTA
    status = ledger.status(DATASET, cross_check=True)
    last = burn.points[-1]
    assert last.epsilon == status.spent.epsilon
    assert last.rdp_epsilon == pytest.approx(status.cross_check["epsilon"], rel=1e-9)
    assert status.cross_check["epsilon"] == pytest.approx(rdp.epsilon(history, DELTA), rel=1e-9)
    # PLD is the tighter bound at every point.
    assert all(p.epsilon <= p.rdp_epsilon for p in burn.points)
    # More points than releases: every release is a point.
    every = ledger.burndown(DATASET, points=500)
    assert [p.seq for p in every.points] == list(range(1, 42))
    for point in every.points[::7]:
        expected = rdp.epsilon(history[: point.seq], DELTA)
        assert point.rdp_epsilon == pytest.approx(expected, rel=1e-9)


def test_a_new_release_moves_the_last_point_and_budget_changes_are_listed(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=50.0, delta=DELTA))
    _charge(ledger, 5)
    before = ledger.burndown(DATASET, points=3)  # cached by its last release
    ledger.set_budget(DATASET, Budget(epsilon=60.0, delta=DELTA), reason="more for Q4")
    _charge(ledger, 1, start=5)
    after = ledger.burndown(DATASET, points=3)
    assert before.events == 5 and after.events == 6
    assert after.points[-1].seq == 6
    assert after.points[-1].rdp_epsilon > before.points[-1].rdp_epsilon
    assert after.points[-1].rdp_epsilon == pytest.approx(
        RDPAccountant().epsilon(_history(ledger), DELTA), rel=1e-9
    )
    assert [c.budget.epsilon for c in after.changes] == [50.0, 60.0]
    assert after.changes[1].reason == "more for Q4" and after.budget == Budget(60.0, DELTA)
    shown = after.to_dict()
    assert shown["budget"] == {"kind": "approx_dp", "epsilon": 60.0, "delta": DELTA}
    assert shown["points"][-1]["seq"] == 6 and shown["changes"][1]["reason"] == "more for Q4"


def test_rdp_is_read_at_the_current_budgets_delta(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=50.0, delta=DELTA))
    _charge(ledger, 8)
    ledger.set_budget(DATASET, Budget(epsilon=50.0, delta=1e-8), reason="a smaller delta")
    burn = ledger.burndown(DATASET, points=4)
    last = burn.points[-1]
    assert burn.rdp_delta == 1e-8
    assert last.rdp_epsilon == pytest.approx(
        RDPAccountant().epsilon(_history(ledger), 1e-8), rel=1e-9
    )
    assert last.delta == DELTA  # the PLD spend as stored, at the delta of its charge


def test_pure_rho_and_empty_ledgers(ledger):
    assert ledger.burndown(DATASET).to_dict()["points"] == []
    ledger.set_budget(DATASET, Budget(epsilon=50.0))
    assert ledger.burndown(DATASET).events == 0
    pure = PrivacyEvent("count(*)", (Mechanism.laplace(scale=4.0, sensitivity=1.0),))
    ledger.charge_many([(DATASET, pure)] * 3, purpose="pure")
    burn = ledger.burndown(DATASET, points=2)
    assert [p.seq for p in burn.points] == [1, 3]
    assert [p.rdp_epsilon for p in burn.points] == pytest.approx([0.25, 0.75])
    ledger.set_budget(DATASET, Budget(rho=5.0), reason="zCDP")
    burn = ledger.burndown(DATASET, points=2)
    assert burn.rdp_delta is None and all(p.rdp_epsilon is None for p in burn.points)


def test_a_bad_number_of_points_is_refused(ledger):
    for points in (1, 0, -3, 2001, 2.5, True):
        with pytest.raises(InvalidInputError, match="number of points") as caught:
            ledger.burndown(DATASET, points=points)  # type: ignore[arg-type]
        assert "2 to 2000" in str(caught.value.expected), points


def test_a_history_rdp_cannot_bound_is_infinite_not_a_number(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=90.0, delta=1e-6))
    # Two (epsilon, delta) releases whose deltas together reach the budget's: RDP has no bound.
    big = PrivacyEvent("sv", (Mechanism.epsilon_delta("sparse_vector", 1.0, 5e-7),))
    ledger.charge_many([(DATASET, big), (DATASET, big)], purpose="two")
    burn = ledger.burndown(DATASET)
    assert burn.points[0].rdp_epsilon is not None and math.isfinite(burn.points[0].rdp_epsilon)
    assert math.isinf(burn.points[-1].rdp_epsilon)
    assert burn.to_dict()["points"][-1]["rdp_epsilon"] is None
    assert math.isinf(RDPAccountant().epsilon(_history(ledger), 1e-6))


def test_kept_buckets_stay_exact_as_the_history_grows(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=500.0, delta=DELTA))
    rdp = RDPAccountant()
    # Buckets complete, then are reused and extended; past 128 releases a wide bucket is a
    # sum of kept 64-release ones.
    for size in (9, 17, 18, 33, 140):
        _charge(ledger, size - len(ledger.entries(DATASET)), start=size)
        history = _history(ledger)
        for points in (3, 4, 6):
            burn = ledger.burndown(DATASET, points=points)
            assert burn.points[0].seq == 1 and burn.points[-1].seq == size
            assert len(burn.points) <= points
            for point in burn.points:
                expected = rdp.epsilon(history[: point.seq], DELTA)
                assert point.rdp_epsilon == pytest.approx(expected, rel=1e-9), (size, point.seq)
        check = ledger.status(DATASET).cross_check["epsilon"]
        assert check == pytest.approx(rdp.epsilon(history, DELTA), rel=1e-9)
    # Another process (nothing kept) reads the same figures.
    fresh = Ledger(ledger.store, ledger.settings).burndown(DATASET, points=6).points
    kept = ledger.burndown(DATASET, points=6).points
    assert [p.seq for p in fresh] == [p.seq for p in kept]
    assert [p.rdp_epsilon for p in fresh] == pytest.approx([p.rdp_epsilon for p in kept], rel=1e-12)


def test_the_curve_cache_is_shared_by_ledgers_and_sound_across_databases(ledger, tmp_path):
    """One cache per process (the gateway keeps a Ledger per key); another database whose
    dataset has the same id but another history gets its own figures, not the kept ones."""
    from veil.data import Catalog
    from veil.store import Store

    ledger.set_budget(DATASET, Budget(epsilon=1e4, delta=DELTA))
    _charge(ledger, 140)
    other_store = Store.open(f"sqlite:///{tmp_path / 'other.db'}", upgrade=True)
    try:
        settings = Settings(other_store.display_url, None, login_name())
        Catalog(other_store, settings).add("sklearn:diabetes", name=DATASET)
        other = Ledger(other_store, settings)
        assert other._curves is ledger._curves
        other.set_budget(DATASET, Budget(epsilon=1e4, delta=DELTA))
        other.charge_many([(DATASET, KINDS[1])] * 140, purpose="another history")
        rdp = RDPAccountant()
        for _ in range(2):  # each read after the other's, so each meets the other's kept buckets
            for which in (ledger, other):
                expected = rdp.epsilon(_history(which), DELTA)
                status = which.status(DATASET, cross_check=True)
                assert status.cross_check["epsilon"] == pytest.approx(expected, rel=1e-9)
                last = which.burndown(DATASET, points=8).points[-1]
                assert last.rdp_epsilon == pytest.approx(expected, rel=1e-9)
    finally:
        other_store.dispose()

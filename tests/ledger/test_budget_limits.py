"""Budgets that mean something: delta below 1 / n, a cap on one release, bounded accounting work.

Issue 18: a budget delta of 0.5 was accepted and an epsilon-1 COUNT was charged 0.0 under it;
`--epsilon 1e4` ran the PLD out of memory (SUM) or for 261 s (COUNT), and afterwards every
`veil budget show` of the dataset took 10 s and 1.3 GB.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select

from veil.cli._app import main
from veil.data import ColumnSpec, PrivacySchema
from veil.dp import PrivateFrame
from veil.errors import InvalidInputError
from veil.ledger import (
    MAX_RELEASE_EPSILON,
    Budget,
    Composition,
    Ledger,
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
    recompose,
)
from veil.ledger._accountants import PLD_MAX_POINTS
from veil.ledger.params import check_budget_delta
from veil.store.chain import GENESIS, link
from veil.store.tables import DatasetRow, PrivacyBudgetRow, PrivacyEventRow, utcnow
from veil.workspace import Settings, login_name

DATASET = "diab"  # sklearn's diabetes: 442 rows, one person each
UNITS = 442


@pytest.fixture
def ledger(store, catalog) -> Ledger:
    catalog.add("sklearn:diabetes", name=DATASET)
    return Ledger(store, Settings(store.display_url, None, login_name()))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def people(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A workspace with dataset 'p': 100 people, x in [0, 10]."""
    csv = tmp_path / "people.csv"
    pl.DataFrame({"x": [float(i % 10) for i in range(100)]}).write_csv(csv)
    assert run(capsys, "init")[0] == 0
    code, _, err = run(capsys, "datasets", "add", str(csv), "--name", "p", "--bounds", "x=0:10")
    assert code == 0, err
    return csv


def _force_budget(ledger: Ledger, dataset: str, epsilon: float, delta: float) -> None:
    """A budget written before the 1 / n rule existed (straight into the store)."""
    with ledger.store.session(lock=True) as session:
        ds = session.scalar(select(DatasetRow).where(DatasetRow.name == dataset))
        assert ds is not None
        session.add(
            PrivacyBudgetRow(dataset_id=ds.id, epsilon=epsilon, delta=delta, updated_by="old")
        )


def _force_event(ledger: Ledger, dataset: str, mechanism: Mechanism, seq: int) -> None:
    """A release recorded before the cap on one release existed (linked into the chain)."""
    with ledger.store.session(lock=True) as session:
        ds = session.scalar(select(DatasetRow).where(DatasetRow.name == dataset))
        assert ds is not None
        previous = session.scalar(
            select(PrivacyEventRow.chain).where(
                PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq == seq - 1
            )
        )
        session.add(
            PrivacyEventRow(
                dataset_id=ds.id,
                seq=seq,
                created_at=utcnow(),
                actor="old",
                purpose="before the cap",
                operation="query",
                what="SELECT SUM(x) FROM t",
                mechanisms=[mechanism.to_dict()],
                details={},
                accountant="pld",
                epsilon=1e4,
                rho=None,
                spent_epsilon=1e4,
                spent_delta=1e-6,
                spent_rho=None,
                chain=link(previous or GENESIS, seq, [mechanism.to_dict()]),
            )
        )


# ---------------------------------------------------------------------------- delta < 1 / n


@pytest.mark.parametrize("delta", [0.5, 0.999999, 1.0 / UNITS])
def test_a_budget_delta_at_or_above_one_over_n_is_refused(ledger, delta):
    with pytest.raises(InvalidInputError, match="1 / n") as info:
        ledger.set_budget(DATASET, Budget(epsilon=1.0, delta=delta))
    assert "442 privacy units" in str(info.value)
    assert "publishing one person's record" in str(info.value)
    assert ledger.history(DATASET) == []  # nothing written


def test_a_budget_delta_just_below_one_over_n_is_accepted(ledger):
    status = ledger.set_budget(DATASET, Budget(epsilon=1.0, delta=0.99 / UNITS))
    assert status.budget is not None and status.budget.delta == pytest.approx(0.99 / UNITS)


def test_check_budget_delta_states_the_rule():
    assert check_budget_delta(0.0, 10) == 0.0
    assert check_budget_delta(0.0999, 10) == pytest.approx(0.0999)
    with pytest.raises(InvalidInputError, match="1 / n"):
        check_budget_delta(0.1, 10)


def test_cli_budget_set_refuses_delta_half(capsys, people):
    code, out, err = run(capsys, "budget", "set", "p", "--epsilon", "1", "--delta", "0.5", "--json")
    assert code == 3
    assert json.loads(out)["error"]["code"] == "invalid_input"
    assert "100 privacy units" in err and "1 / n" in err
    code, out, _ = run(capsys, "budget", "history", "p", "--json")
    assert code == 0 and json.loads(out)["history"] == []


def test_an_old_budget_with_a_huge_delta_charges_nothing(capsys, people):
    """Under delta 0.5 an epsilon-1 COUNT was charged 0.0; now it is refused, before the charge."""
    ledger = Ledger.open()
    try:
        _force_budget(ledger, "p", epsilon=1.0, delta=0.5)
        code, _, err = run(
            capsys, "query", "p", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1"
        )
        assert code == 3, err
        assert "1 / n" in err
        frame = pl.read_csv(people)
        schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
        pf = PrivateFrame(frame, schema, ledger=ledger, dataset="p", purpose="test")
        with pytest.raises(InvalidInputError, match="1 / n"):
            pf.count(epsilon=1.0)
        assert ledger.entries("p") == []
    finally:
        ledger.store.dispose()


# ---------------------------------------------------------------------------- one release's epsilon


def test_cli_query_epsilon_1e4_is_refused_before_any_accounting(capsys, people):
    assert run(capsys, "budget", "set", "p", "--epsilon", "1e6", "--delta", "1e-6")[0] == 0
    for sql in ("SELECT COUNT(*) FROM t", "SELECT SUM(x) FROM t"):
        code, out, err = run(capsys, "query", "p", "--sql", sql, "--epsilon", "1e4", "--json")
        assert code == 3, err
        body = json.loads(out)["error"]
        assert body["code"] == "invalid_input"
        assert "largest epsilon one release may spend" in err
        assert "--non-private" in err
    ledger = Ledger.open()
    try:
        assert ledger.entries("p") == []
        frame = pl.read_csv(people)
        schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
        pf = PrivateFrame(frame, schema, ledger=ledger, dataset="p", purpose="test")
        with pytest.raises(InvalidInputError, match="largest epsilon"):
            pf.sum("x", epsilon=1e4)
        # The cap itself is allowed.
        assert pf.count(epsilon=MAX_RELEASE_EPSILON).rows
    finally:
        ledger.store.dispose()


def test_the_ledger_refuses_one_release_above_the_cap(ledger):
    """Whatever builds the event (a query, training, a caller's own Mechanism)."""
    ledger.set_budget(DATASET, Budget(epsilon=1e6, delta=1e-6))
    huge = PrivacyEvent("SUM", (Mechanism.laplace(scale=1e-4, sensitivity=1.0),))
    with pytest.raises(InvalidInputError, match="at most epsilon 100"):
        ledger.charge(DATASET, huge, purpose="a baseline")
    assert ledger.entries(DATASET) == []
    # The refusal's accounting stayed small: a pure event that large is added, not discretised.
    assert Composition().add(huge.dp_event).points == 0


# ---------------------------------------------------------------------------- bounded work


def test_budget_show_of_a_history_with_epsilon_1e4_events_is_cheap(capsys, people):
    ledger = Ledger.open()
    try:
        _force_budget(ledger, "p", epsilon=1e6, delta=1e-6)
        # The releases: a discrete-Laplace COUNT and a Laplace SUM at epsilon 1e4, plus a
        # near-noiseless Gaussian and an (epsilon, delta) partition selection.
        old = [
            Mechanism.discrete_laplace(scale=1e-4, sensitivity=1),
            Mechanism.laplace(scale=1e-3, sensitivity=10.0),
            Mechanism.gaussian(sigma=1e-4, sensitivity=1.0),
            Mechanism.epsilon_delta("partition_selection", 1e4, 1e-8),
            Mechanism.gaussian(sigma=5.0, sensitivity=1.0),  # and an ordinary release
        ]
        for seq, mech in enumerate(old, start=1):
            _force_event(ledger, "p", mech, seq)
        status = ledger.status("p")
        # Work: the composed distribution stays within the cap on points.
        composed = recompose([m.dp_event for m in old])
        assert 0 < composed.points <= PLD_MAX_POINTS
        # Still an upper bound: at least the basic epsilons of the pure releases.
        assert status.spent.epsilon is not None and status.spent.epsilon >= 2e4
        code, out, err = run(capsys, "budget", "show", "p", "--json")
        assert code == 0, err
        assert json.loads(out)["events"] == len(old)
    finally:
        ledger.store.dispose()


@pytest.mark.parametrize(
    "mechanism",
    [
        Mechanism.laplace(scale=1e-4, sensitivity=1.0),
        Mechanism.discrete_laplace(scale=1e-4, sensitivity=1),
        Mechanism.gaussian(sigma=1e-4, sensitivity=1.0),
        Mechanism.discrete_gaussian(sigma=1e-4, sensitivity=1),
        Mechanism.epsilon_delta("selection", 1e4, 1e-9),
        Mechanism.subsampled_gaussian(0.01, 1e-3, 1000),
        Mechanism.laplace(scale=1e-2, sensitivity=1.0),
    ],
    ids=lambda m: m.name,
)
def test_pld_work_is_bounded_for_any_event(mechanism):
    accountant = PLDAccountant()
    history = [mechanism.dp_event, Mechanism.gaussian(sigma=5.0, sensitivity=1.0).dp_event]
    eps = accountant.epsilon(history, 1e-6)
    assert accountant.last_points <= PLD_MAX_POINTS
    assert math.isfinite(eps)
    # The ledger's incremental composition bounds its work the same way.
    composed = recompose(history)
    assert composed.points <= PLD_MAX_POINTS
    assert math.isfinite(composed.epsilon(1e-6))
    # An upper bound: never below what the huge release alone costs at no delta for pure ones.
    alone = accountant.epsilon([mechanism.dp_event], 1e-6)
    assert eps >= alone - 1e-6


def test_ordinary_histories_keep_the_fine_discretisation():
    accountant = PLDAccountant()
    gaussian = Mechanism.gaussian(sigma=5.0, sensitivity=1.0).dp_event
    assert round(accountant.epsilon([gaussian] * 100, delta=1e-5), 2) == 10.0
    assert accountant.interval_for([(gaussian, 100)]) == accountant.discretization

"""DP queries go through the one budget gate.

``PrivateFrame`` charges a :class:`~veil.ledger.BudgetGuard` (its own
``LocalBudget`` or the workspace ``Ledger``), and ``query_dataset`` plans a
query once: the plan previewed is the plan charged and computed. The ledger
here is a real SQLite store with a registered dataset (sklearn's diabetes).
"""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
from dp_accounting import dp_event

import veil.dp._frame
from veil.data import ColumnSpec, PrivacySchema
from veil.dp import PrivateFrame, QueryPlan, query_dataset
from veil.errors import BudgetExceededError, InvalidInputError, SchemaError
from veil.ledger import Budget, BudgetGuard, Ledger, LocalBudget, Mechanism, PrivacyEvent
from veil.workspace import Settings, login_name

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DATASET = "diab"
SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("age", "numeric", bounds=(0.0, 100.0)),
        ColumnSpec("g", "categorical", categories=("a", "b")),
    )
)


@pytest.fixture
def ledger(store, catalog) -> Ledger:
    catalog.add("sklearn:diabetes", name=DATASET, bounds={"bmi": (-0.1, 0.2)})
    return Ledger(store, Settings(store.display_url, None, login_name()))


def data(n: int = 400) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "age": [float(20 + i % 50) for i in range(n)],
            "g": ["a" if i % 3 else "b" for i in range(n)],
        }
    )


def record_plans(monkeypatch: pytest.MonkeyPatch) -> list[QueryPlan]:
    """The plans veil.dp._frame makes, kept as the real plan_query returns them (instrumentation)."""
    plans: list[QueryPlan] = []
    real = veil.dp._frame.plan_query

    def recorded(*args, **kwargs):
        plans.append(real(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(veil.dp._frame, "plan_query", recorded)
    return plans


# ---------------------------------------------------------------- query_dataset plans once


def test_query_dataset_plans_once_and_charges_that_plan(ledger, catalog, monkeypatch):
    ledger.set_budget(DATASET, Budget(epsilon=2.0))
    plans = record_plans(monkeypatch)
    result = query_dataset(
        catalog,
        ledger,
        DATASET,
        "SELECT COUNT(*), AVG(bmi) FROM diab",
        epsilon=0.5,
        purpose="cohort size",
    )
    [plan] = plans  # planned once
    # The event recorded is that plan's, and the answer carries the ledger's receipt for it.
    [entry] = ledger.entries(DATASET)
    assert entry.mechanisms == plan.mechanisms
    assert entry.what == plan.event.what == "SELECT COUNT(*), AVG(bmi) FROM diab"
    assert (result.charged["event_id"], result.charged["seq"]) == (entry.id, entry.seq)
    assert result.charged["charged"]["epsilon"] == pytest.approx(0.5)
    assert result.rows[0]["count"]["noise_scale"] == plan.components[0].scale


def test_query_dataset_refuses_a_short_budget_before_loading(ledger, catalog, monkeypatch):
    ledger.set_budget(DATASET, Budget(epsilon=0.4))
    loads: list[str] = []
    real_load = catalog.load_frame

    def recorded_load(name, *args, **kwargs):  # instrumentation: the real load, counted
        loads.append(name)
        return real_load(name, *args, **kwargs)

    monkeypatch.setattr(catalog, "load_frame", recorded_load)
    with pytest.raises(BudgetExceededError):
        query_dataset(catalog, ledger, DATASET, "SELECT COUNT(*) FROM t", epsilon=0.5, purpose="x")
    assert loads == []  # refused by the preview, before any data was read
    assert ledger.entries(DATASET) == []


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT SUM(nope) FROM t", SchemaError),  # not a declared column
        ("SELECT COUNT(*) FROM t WHERE nope > 1", SchemaError),
        ("SELECT SUM(age) FROM t", SchemaError),  # declared, but no bounds
    ],
)
def test_a_query_on_missing_columns_costs_nothing(ledger, catalog, sql, error):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    with pytest.raises(error):
        query_dataset(catalog, ledger, DATASET, sql, epsilon=1.0, purpose="x")
    assert ledger.entries(DATASET) == []
    assert ledger.status(DATASET).events == 0


def test_a_frame_lacking_a_declared_column_costs_nothing(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    pf = PrivateFrame(data().drop("age"), SCHEMA, guard=ledger, dataset=DATASET, purpose="x")
    with pytest.raises(InvalidInputError, match="lacks declared columns"):
        pf.sum("age", epsilon=1.0)
    assert ledger.entries(DATASET) == []
    pf.count(epsilon=1.0)  # the whole budget is still there


# ---------------------------------------------------------------- running a plan


def test_run_answers_the_plan_it_is_given_and_charges_its_event():
    pf = PrivateFrame(data(), SCHEMA, budget=Budget(epsilon=1.0))
    plan = pf.plan("SELECT g, COUNT(*) FROM t GROUP BY g", epsilon=0.25)
    result = pf.run(plan)
    assert [r["g"] for r in result.rows] == ["a", "b"]
    assert result.rows[0]["count"]["noise_scale"] == plan.components[0].scale
    assert result.charged["charged"]["epsilon"] == pytest.approx(0.25)
    assert pf.guard.history[0]["what"] == plan.event.what
    assert pf.guard.history[0]["mechanisms"] == [m.to_dict() for m in plan.mechanisms]


def test_run_refuses_a_changed_plan_or_another_schema_and_charges_nothing():
    pf = PrivateFrame(data(), SCHEMA, budget=Budget(epsilon=1.0))
    plan = pf.plan("SELECT COUNT(*) FROM t", epsilon=1.0)
    cheaper = dataclasses.replace(plan, mechanisms=(Mechanism.laplace(1e6, 1.0),))
    with pytest.raises(InvalidInputError, match="unchanged"):
        pf.run(cheaper)
    other = PrivateFrame(
        data(), PrivacySchema(columns=SCHEMA.columns[:1]), budget=Budget(epsilon=1)
    )
    with pytest.raises(InvalidInputError, match="another privacy schema"):
        pf.run(other.plan("SELECT COUNT(*) FROM t", epsilon=1.0))
    assert pf.guard.status(pf.dataset).events == 0
    assert pf.run(plan).rows  # the whole budget is still there


# ---------------------------------------------------------------- one gate, two guards


def test_the_ledger_and_a_local_budget_refuse_the_same_query(ledger):
    """Same budget, same history: the second query is refused by both, with the same numbers."""
    budget = Budget(epsilon=1.0)
    ledger.set_budget(DATASET, budget)
    guards: list[BudgetGuard] = [LocalBudget(budget, dataset=DATASET), ledger]
    refusals = []
    for guard in guards:
        pf = PrivateFrame(data(), SCHEMA, guard=guard, dataset=DATASET, purpose="same history")
        first = pf.mean("age", by=["g"], epsilon=0.6)
        assert first.charged["charged"]["epsilon"] == pytest.approx(0.6)
        with pytest.raises(BudgetExceededError) as refused:
            pf.count(epsilon=0.6)
        refusals.append(refused.value)
        assert guard.status(DATASET).events == 1  # nothing charged by the refusal
        assert pf.count(epsilon=0.4).charged["budget"]["remaining"] == pytest.approx(0.0, abs=1e-6)
    local, workspace = refusals
    assert str(local) == str(workspace)
    assert local.details == workspace.details


def test_both_guards_give_the_same_receipt_shape(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    shapes = []
    for pf in (
        PrivateFrame(data(), SCHEMA, budget=Budget(epsilon=1.0), dataset=DATASET),
        PrivateFrame(data(), SCHEMA, guard=ledger, dataset=DATASET, purpose="shape"),
    ):
        charged = pf.count(epsilon=0.5).charged
        shapes.append((sorted(charged), sorted(charged["budget"]), charged["budget"]["remaining"]))
    assert shapes[0] == shapes[1]


def test_a_malformed_event_is_refused_by_both_guards(ledger):
    """A Laplace noise multiplier of -0.5 once composed to epsilon -2 and refunded a budget."""
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    bad = PrivacyEvent(
        "hand-built", (Mechanism("laplace", {"scale": -0.5}, dp_event.LaplaceDpEvent(-0.5)),)
    )
    local = LocalBudget(Budget(epsilon=1.0), dataset=DATASET)
    for guard in (local, ledger):
        before = guard.status(DATASET)
        with pytest.raises(InvalidInputError):
            guard.preview(DATASET, bad)
        with pytest.raises(InvalidInputError):
            guard.charge(DATASET, bad, purpose="a refund")
        assert guard.status(DATASET) == before
        assert before.events == 0
    assert local.history == []
    assert ledger.entries(DATASET) == []


# ---------------------------------------------------------------- construction


def test_a_frame_needs_exactly_one_guard(ledger):
    with pytest.raises(InvalidInputError, match="exactly one place"):
        PrivateFrame(data(), SCHEMA, budget=Budget(epsilon=1.0), guard=ledger, dataset=DATASET)
    with pytest.raises(InvalidInputError, match="dataset"):
        PrivateFrame(data(), SCHEMA, guard=ledger)
    with pytest.raises(InvalidInputError, match="budget gate"):
        PrivateFrame(data(), SCHEMA, guard=object(), dataset=DATASET)  # type: ignore[arg-type]


def test_a_guard_refuses_a_charge_without_purpose(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    pf = PrivateFrame(data(), SCHEMA, guard=ledger, dataset=DATASET)
    with pytest.raises(InvalidInputError, match="purpose"):
        pf.count(epsilon=0.5)
    assert ledger.entries(DATASET) == []
    assert pf.count(epsilon=0.5, purpose="a count").charged["seq"] == 1


def test_ledger_is_a_deprecated_alias_of_guard(ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    pf = PrivateFrame(data(), SCHEMA, ledger=ledger, dataset=DATASET, purpose="old spelling")
    assert pf.guard is ledger
    pf.count(epsilon=0.5)
    assert len(ledger.entries(DATASET)) == 1


def test_a_non_private_use_counts_as_an_event_in_both_guards(store) -> None:
    """The gate's two implementations count a non-private record alike (composed: nothing)."""
    from veil.data import Catalog
    from veil.ledger import Budget, Ledger, LocalBudget

    Catalog(store).add("sklearn:diabetes", name="diab")
    ledger = Ledger(store)
    ledger.set_budget("diab", Budget(epsilon=1.0))
    local = LocalBudget(Budget(epsilon=1.0), dataset="diab")
    for guard in (ledger, local):
        receipt = guard.record_non_private("diab", "baseline", purpose="comparison")
        assert receipt.seq == 1
        assert guard.status("diab").events == 1
        assert guard.status("diab").spent.epsilon == 0.0
    assert local.history[0]["details"] == {"private": False}

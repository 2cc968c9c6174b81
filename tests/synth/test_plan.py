"""The privacy plan of a synthesis, checked against independent zCDP and PLD computations.

zCDP by hand: the discrete Gaussian with L2 sensitivity 1 is 1/(2 sigma^2)-zCDP
(Canonne, Kamath and Steinke 2020, Theorem 4), the exponential mechanism at
epsilon is epsilon^2/8-zCDP (Cesar and Rogers 2021). PLD: dp_accounting's
privacy-loss distributions built and composed here directly, not through
veil.ledger: the discrete Gaussian's own distribution (a continuous Gaussian
is not in general an upper bound for it) and the worst-case (epsilon, 0)
distribution for each selection. Both are pessimistic (every loss rounded
up), so each is an upper bound on the plan's epsilon; the smaller of two
valid bounds is valid.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from veil.errors import BudgetExceededError, InvalidInputError
from veil.ledger import Budget, LocalBudget
from veil.synth import SynthPlan, plan_for

DELTA = 1e-6
# The shape of a small AIM run: 5 columns, 3 rounds, the 2-way workload's 15 candidates.
AIM = {"columns": 5, "rounds": 3, "candidates": 15, "sensitivity": 8.0}
MST = {"columns": 5, "rounds": 4, "candidates": 10, "sensitivity": 1.0}
# The ledger's own PLD discretisation (veil.ledger._accountants.PLD_DISCRETIZATION); the check
# below also composes at a 10x finer interval, which is tighter and still an upper bound.
INTERVAL = 1e-3


def hand_rho(plan: SynthPlan) -> float:
    total = 0.0
    for m in plan.mechanisms():
        # The recorded parameters are what the ledger's event composes.
        if m.name == "discrete_gaussian":
            assert (m.dp_event.sigma, m.dp_event.sensitivity) == (
                m.parameters["sigma"],
                m.parameters["sensitivity"],
            )
            total += m.parameters["sensitivity"] ** 2 / (2 * m.parameters["sigma"] ** 2)
        elif m.name == "exponential":
            assert m.dp_event.epsilon == m.parameters["epsilon"]
            total += m.parameters["epsilon"] ** 2 / 8
        else:  # pragma: no cover - a plan holds only these two
            raise AssertionError(m.name)
    return total


def independent_epsilon(plan: SynthPlan, delta: float, interval: float = INTERVAL) -> float:
    """The plan's epsilon at ``delta`` from dp_accounting's PLDs, composed here."""
    kinds = Counter(
        (m.name, m.parameters.get("sigma"), m.parameters.get("epsilon")) for m in plan.mechanisms()
    )
    gaussians = None
    pure = 0.0
    selections = None
    for (kind, sigma, eps), count in kinds.items():
        if kind == "discrete_gaussian":
            pld = pld_lib.from_discrete_gaussian_mechanism(
                sigma, sensitivity=1, value_discretization_interval=interval
            ).self_compose(count)
            gaussians = pld if gaussians is None else gaussians.compose(pld)
        else:
            pure += count * eps
            pld = pld_lib.from_privacy_parameters(
                pld_common.DifferentialPrivacyParameters(eps, 0.0),
                value_discretization_interval=interval,
            ).self_compose(count)
            selections = pld if selections is None else selections.compose(pld)
    assert gaussians is not None
    together = gaussians if selections is None else gaussians.compose(selections)
    # Two valid bounds: everything composed as distributions, or the selections' pure
    # epsilons added to the Gaussians' (basic composition of an (e1, d) and an (e2, 0) mechanism).
    return min(together.get_epsilon_for_delta(delta), gaussians.get_epsilon_for_delta(delta) + pure)


# ---------------------------------------------------------------- zCDP plans


@pytest.mark.parametrize(("method", "shape"), [("aim", AIM), ("mst", MST)])
@pytest.mark.parametrize("rho", [0.01, 0.5, 7.0])
def test_a_rho_plan_spends_the_hand_summed_rho_and_no_more(method, shape, rho):
    plan = plan_for(method, rho=rho, **shape)
    kinds = Counter(m.name for m in plan.mechanisms())
    assert kinds == {
        "discrete_gaussian": shape["columns"] + shape["rounds"],
        "exponential": shape["rounds"],
    }
    assert hand_rho(plan) == pytest.approx(plan.rho, rel=1e-12)
    assert hand_rho(plan) <= rho * (1 + 1e-12)
    assert hand_rho(plan) >= rho * (1 - 1e-9)  # nothing left unspent
    if method == "aim":  # the AIM paper's split: 90% to measurements
        measured = sum(
            1 / (2 * m.parameters["sigma"] ** 2)
            for m in plan.mechanisms()
            if m.name == "discrete_gaussian"
        )
        assert measured == pytest.approx(0.9 * rho, rel=1e-9)


def test_the_selection_sensitivity_and_candidates_are_the_plans():
    plan = plan_for("aim", rho=1.0, **AIM)
    selections = [m for m in plan.mechanisms() if m.name == "exponential"]
    assert len(selections) == AIM["rounds"]
    for select in selections:
        assert select.parameters["sensitivity"] == AIM["sensitivity"]
        assert select.parameters["candidates"] == AIM["candidates"]


# ---------------------------------------------------------------- (epsilon, delta) plans


@pytest.fixture(scope="module")
def aim_plan() -> SynthPlan:
    return plan_for("aim", epsilon=1.0, delta=DELTA, **AIM)


@pytest.fixture(scope="module")
def mst_plan() -> SynthPlan:
    return plan_for("mst", epsilon=1.0, delta=DELTA, **MST)


@pytest.mark.parametrize("which", ["aim_plan", "mst_plan"])
def test_an_epsilon_plan_is_within_epsilon_by_an_independent_pld(which, request):
    plan = request.getfixturevalue(which)
    assert (plan.epsilon, plan.delta) == (1.0, DELTA)
    spent = independent_epsilon(plan, DELTA)
    assert spent <= 1.0 + 1e-9
    # And not wastefully below it: the bisection stops within 0.1% of rho.
    assert spent > 0.99
    shape = AIM if plan.method == "aim" else MST
    bigger = plan_for(plan.method, rho=plan.rho * 1.01, **shape)  # type: ignore[arg-type]
    assert independent_epsilon(bigger, DELTA) > 1.0


def test_a_finer_discretisation_confirms_the_bound(aim_plan):
    # Rounding losses up to a 1e-4 grid instead of 1e-3: a tighter upper bound, still <= epsilon.
    fine = independent_epsilon(aim_plan, DELTA, interval=1e-4)
    assert fine <= 1.0
    assert fine <= independent_epsilon(aim_plan, DELTA) + 1e-9


def test_the_pld_epsilon_is_below_the_zcdp_conversion_of_the_same_plan(aim_plan):
    # rho-zCDP implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP (Bun and Steinke 2016, Prop. 1.3):
    # a looser bound for the same mechanisms, so the PLD's epsilon is below it.
    rho = hand_rho(aim_plan)
    assert independent_epsilon(aim_plan, DELTA) < rho + 2 * math.sqrt(rho * math.log(1 / DELTA))


def test_a_budget_of_exactly_the_requested_epsilon_accepts_the_plan(aim_plan):
    guard = LocalBudget(Budget(epsilon=1.0, delta=DELTA))
    receipt = guard.charge("local", aim_plan.event("synthetic data"), purpose="plan check")
    assert receipt.epsilon is not None and receipt.epsilon <= 1.0
    assert len(guard.history) == 1
    assert [m["name"] for m in guard.history[0]["mechanisms"]] == [
        m.name for m in aim_plan.mechanisms()
    ]


def test_a_plan_one_percent_richer_is_refused_by_the_same_budget(aim_plan):
    guard = LocalBudget(Budget(epsilon=1.0, delta=DELTA))
    richer = plan_for("aim", rho=aim_plan.rho * 1.01, **AIM)
    with pytest.raises(BudgetExceededError):
        guard.charge("local", richer.event("synthetic data"), purpose="plan check")
    assert guard.history == []


def test_a_larger_epsilon_buys_less_noise(aim_plan):
    richer = plan_for("aim", epsilon=4.0, delta=DELTA, **AIM)
    assert richer.rho > aim_plan.rho
    assert richer.measure_sigma < aim_plan.measure_sigma
    assert independent_epsilon(richer, DELTA) <= 4.0


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rho": 1.0, "epsilon": 1.0, "delta": DELTA}, "not both"),
        ({"epsilon": 1.0}, "delta"),
        ({"epsilon": 1.0, "delta": 0.0}, "delta"),
        ({"epsilon": 0.0, "delta": DELTA}, "budget"),
        ({"epsilon": math.nan, "delta": DELTA}, "budget"),
        ({}, "budget"),
        ({"rho": -1.0}, "rho"),
        ({"rho": math.inf}, "rho"),
    ],
    ids=str,
)
def test_bad_budgets_are_refused(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        plan_for("aim", **AIM, **kwargs)


def test_bad_shapes_are_refused():
    with pytest.raises(InvalidInputError, match="method"):
        plan_for("pgm", rho=1.0, **AIM)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="round"):
        plan_for("aim", rho=1.0, **{**AIM, "rounds": 0})
    with pytest.raises(InvalidInputError, match="column"):
        plan_for("mst", rho=1.0, **{**MST, "columns": 0})

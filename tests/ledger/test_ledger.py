"""The privacy ledger on SQLite and PostgreSQL: budgets, charges, refusals and the auditor's history.

Every refusal is checked to leave the ledger exactly as it was (history and
status compared before and after), and the composition the ledger applies is
checked against numbers derived independently of ``dp_accounting``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pytest

from veil.access import Access, Principal
from veil.errors import BudgetExceededError, InvalidInputError, NotFoundError
from veil.ledger import (
    Budget,
    Ledger,
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
    RDPAccountant,
    recompose,
)
from veil.workspace import Settings, login_name

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

DATASET = "diab"


@pytest.fixture
def ledger(store, catalog) -> Ledger:
    catalog.add("sklearn:diabetes", name=DATASET)
    return Ledger(store, Settings(store.display_url, None, login_name()))


def laplace(epsilon: float, what: str = "count(*)") -> PrivacyEvent:
    """A pure epsilon-DP Laplace release (scale 1, sensitivity epsilon)."""
    return PrivacyEvent(what, (Mechanism.laplace(scale=1.0, sensitivity=epsilon),))


def gaussian(sigma: float) -> PrivacyEvent:
    return PrivacyEvent("mean(bmi)", (Mechanism.gaussian(sigma=sigma, sensitivity=1.0),))


def snapshot(ledger: Ledger, dataset: str = DATASET) -> tuple[list, dict, list]:
    """Everything a refusal must leave untouched."""
    return (
        ledger.history(dataset),
        ledger.status(dataset).to_dict(),
        [entry.to_dict() for entry in ledger.entries(dataset)],
    )


def charge_until_refused(ledger: Ledger, event: PrivacyEvent, limit: int = 200) -> int:
    """Charge ``event`` until the ledger refuses; return how many were accepted."""
    for accepted in range(limit):
        try:
            receipt = ledger.charge(DATASET, event, purpose="fill the budget")
        except BudgetExceededError:
            return accepted
        assert receipt.seq == accepted + 1
    pytest.fail(f"the ledger accepted {limit} releases and never refused")


# ------------------------------------------------------------------ budgets
def test_set_and_show_budget(ledger: Ledger):
    before = ledger.status(DATASET)
    assert before.budget is None
    assert before.remaining is None
    assert before.events == 0
    assert before.to_dict()["budget"] is None

    returned = ledger.set_budget(DATASET, Budget(epsilon=3, delta=1e-5), reason="initial")
    shown = ledger.status(DATASET)
    assert returned.budget == shown.budget == Budget(epsilon=3.0, delta=1e-5)
    assert shown.spent.epsilon == 0.0
    assert shown.spent.delta == 1e-5
    assert shown.remaining == 3.0
    assert shown.events == 0
    assert shown.accountant == "pld"
    assert shown.to_dict() == {
        "dataset": DATASET,
        "budget": {"kind": "approx_dp", "epsilon": 3.0, "delta": 1e-5},
        "spent": {"epsilon": 0.0, "delta": 1e-5},
        "remaining": 3.0,
        "events": 0,
        "accountant": "pld",
        "cross_check": {},
    }
    json.dumps(shown.to_dict(), allow_nan=False)

    # Without delta the budget is pure epsilon-DP; a second call replaces the first.
    ledger.set_budget(DATASET, Budget(epsilon=2), reason="tighter")
    assert ledger.status(DATASET).budget == Budget(epsilon=2.0, delta=0.0)
    ledger.set_budget(DATASET, Budget(rho=0.25), reason="zcdp now")
    shown = ledger.status(DATASET)
    assert shown.budget == Budget(rho=0.25)
    assert shown.accountant == "zcdp"
    assert shown.to_dict()["spent"] == {"rho": 0.0}
    assert shown.remaining == 0.25


def test_charging_spends_and_the_receipt_matches_the_status(ledger: Ledger):
    delta = 1e-6
    ledger.set_budget(DATASET, Budget(epsilon=5, delta=delta))
    events = [
        laplace(0.5),
        gaussian(4.0),
        PrivacyEvent(
            "histogram(age) and mean(bmi)",
            (
                Mechanism.laplace(scale=2.0, sensitivity=1.0),
                Mechanism.gaussian(sigma=6.0, sensitivity=1.0),
            ),
            operation="mechanism",
        ),
    ]
    pld = PLDAccountant()
    for number, event in enumerate(events, start=1):
        receipt = ledger.charge(DATASET, event, purpose="cohort report")
        status = ledger.status(DATASET)
        assert receipt.seq == number
        assert receipt.dataset == DATASET
        assert receipt.rho is None
        assert receipt.epsilon == pytest.approx(pld.epsilon([event.dp_event], delta), rel=1e-9)
        # What the receipt reports is exactly what the ledger now shows.
        assert receipt.status.spent == status.spent
        assert receipt.status.events == status.events == number
        assert receipt.status.remaining == status.remaining
        expected = pld.epsilon([e.dp_event for e in events[:number]], delta)
        assert status.spent.epsilon == pytest.approx(expected, rel=1e-9)
        assert status.remaining == pytest.approx(5 - expected, rel=1e-9)
        # The RDP cross-check is an independent bound that is never tighter than PLD.
        assert status.cross_check["accountant"] == "rdp"
        assert status.cross_check["epsilon"] >= status.spent.epsilon - 1e-9
        assert receipt.to_dict()["charged"]["epsilon"] == receipt.epsilon
        json.dumps(receipt.to_dict(), allow_nan=False)

    entries = ledger.entries(DATASET)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[-1].spent_epsilon == pytest.approx(ledger.status(DATASET).spent.epsilon)
    assert entries[-1].operation == "mechanism"


def test_charges_on_one_dataset_do_not_touch_another(ledger: Ledger, catalog):
    catalog.add("sklearn:iris", name="iris")
    ledger.set_budget(DATASET, Budget(epsilon=1))
    ledger.set_budget("iris", Budget(epsilon=1))
    ledger.charge(DATASET, laplace(1.0), purpose="use it all")
    assert ledger.status("iris").spent.epsilon == 0.0
    assert ledger.entries("iris") == []
    assert ledger.charge("iris", laplace(1.0), purpose="its own budget").seq == 1


# ------------------------------------------------------------------ refusals
def test_a_release_beyond_the_budget_is_refused_and_changes_nothing(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1.0))
    ledger.charge(DATASET, laplace(0.6), purpose="first look")
    before = snapshot(ledger)

    with pytest.raises(BudgetExceededError, match="exceed the privacy budget") as caught:
        ledger.charge(DATASET, laplace(0.5), purpose="one too many")
    error = caught.value
    assert error.code == "budget_exceeded"
    assert error.exit_code == 8
    assert error.details["spent"]["epsilon"] == pytest.approx(0.6)
    assert error.details["requested"]["epsilon"] == pytest.approx(0.5)
    assert error.details["would_spend"]["epsilon"] == pytest.approx(1.1)
    assert error.details["remaining"] == pytest.approx(0.4)
    json.dumps(error.to_dict(), allow_nan=False)
    assert snapshot(ledger) == before

    # preview refuses the same way, and a preview that fits records nothing either.
    with pytest.raises(BudgetExceededError):
        ledger.preview(DATASET, laplace(0.5))
    previewed = ledger.preview(DATASET, laplace(0.4))
    assert previewed.spent.epsilon == pytest.approx(1.0)
    assert previewed.events == 2
    assert snapshot(ledger) == before

    # What remains can still be spent, exactly to the budget and not beyond.
    receipt = ledger.charge(DATASET, laplace(0.4), purpose="the rest")
    assert receipt.seq == 2
    assert ledger.status(DATASET).remaining == pytest.approx(0.0, abs=1e-12)
    after_full = snapshot(ledger)
    with pytest.raises(BudgetExceededError):
        ledger.charge(DATASET, laplace(1e-6), purpose="even a tiny one")
    assert snapshot(ledger) == after_full


def test_without_a_budget_nothing_may_be_released(ledger: Ledger):
    before = snapshot(ledger)
    with pytest.raises(BudgetExceededError, match="no privacy budget") as caught:
        ledger.charge(DATASET, laplace(0.1), purpose="before the owner decided")
    assert caught.value.code == "budget_exceeded"
    assert caught.value.exit_code == 8
    with pytest.raises(BudgetExceededError, match="no privacy budget"):
        ledger.preview(DATASET, laplace(0.1))
    assert snapshot(ledger) == before
    assert ledger.history(DATASET) == []


def test_a_mechanism_without_a_pure_guarantee_is_refused_under_a_pure_budget(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=10))
    before = snapshot(ledger)
    with pytest.raises(BudgetExceededError, match="exceed the privacy budget") as caught:
        ledger.charge(DATASET, gaussian(1.0), purpose="gaussian at delta 0")
    assert caught.value.details["requested"] == {"epsilon": None, "delta": 0.0}
    json.dumps(caught.value.to_dict(), allow_nan=False)
    assert snapshot(ledger) == before


def test_lowering_the_budget_below_the_spend_blocks_further_releases(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=2), reason="generous")
    ledger.charge(DATASET, laplace(1.5), purpose="big query")
    ledger.access.grant("dpo", "owner", DATASET, reason="the DPO owns the dataset's budget")
    dpo = Ledger(ledger.store, access=Access(ledger.store, Principal("dpo")))
    status = dpo.set_budget(DATASET, Budget(epsilon=1), reason="policy change")
    assert status.spent.epsilon == pytest.approx(1.5)
    assert status.remaining == 0.0
    with pytest.raises(BudgetExceededError):
        ledger.charge(DATASET, laplace(0.01), purpose="anything")
    budget_changes = [h for h in ledger.history(DATASET) if h["type"] == "budget"]
    assert [(h["reason"], h["actor"], h["budget"]["epsilon"]) for h in budget_changes] == [
        ("generous", login_name(), 2.0),
        ("policy change", "dpo", 1.0),
    ]


# ------------------------------------------------------------------ history
def test_history_records_who_when_what_why_and_how(ledger: Ledger):  # noqa: PLR0915 - one story
    started = datetime.now(UTC)
    ledger.set_budget(DATASET, Budget(epsilon=50, delta=1e-6), reason="approved by the board")
    mechanisms = [
        Mechanism.laplace(scale=2.0, sensitivity=1.0, column="age"),
        Mechanism.discrete_laplace(scale=3.0, sensitivity=1),
        Mechanism.gaussian(sigma=5.0, sensitivity=2.0),
        Mechanism.discrete_gaussian(sigma=4.0, sensitivity=1),
        Mechanism.subsampled_gaussian(sampling_rate=0.01, noise_multiplier=1.1, steps=100),
        Mechanism.randomized_response(truth_probability=0.75, categories=3),
        Mechanism.epsilon_delta("exponential", epsilon=0.5),
        Mechanism.epsilon_delta("sparse_vector", epsilon=0.3, delta=1e-8),
    ]
    first = PrivacyEvent(
        "SELECT avg(age) FROM diab",
        (mechanisms[0],),
        operation="query",
        details={"rows": 442, "sql": "SELECT avg(age) FROM diab"},
    )
    second = PrivacyEvent("everything at once", tuple(mechanisms[1:]), operation="mechanism")
    r1 = ledger.charge(DATASET, first, purpose="  monthly cohort report  ")
    ledger.access.grant("alice", "analyst", DATASET)
    ledger.access.grant("bob", "owner", DATASET)
    alice = Ledger(ledger.store, access=Access(ledger.store, Principal("alice")))
    bob = Ledger(ledger.store, access=Access(ledger.store, Principal("bob")))
    r2 = alice.charge(DATASET, second, purpose="model audit")
    bob.set_budget(DATASET, Budget(epsilon=60, delta=1e-6), reason="extension")
    finished = datetime.now(UTC)

    history = ledger.history(DATASET)
    assert [h["type"] for h in history] == ["budget", "release", "release", "budget"]
    text = json.dumps(history, allow_nan=False)
    assert json.loads(text) == history

    times = [datetime.fromisoformat(h["at"]) for h in history]
    assert all(t.tzinfo is not None for t in times)
    assert times == sorted(times)
    assert started <= times[0] and times[-1] <= finished

    grant, release1, release2, extension = history
    assert grant["actor"] == login_name()
    assert grant["reason"] == "approved by the board"
    assert grant["budget"] == {"kind": "approx_dp", "epsilon": 50.0, "delta": 1e-6}
    assert (extension["actor"], extension["reason"]) == ("bob", "extension")
    assert extension["budget"]["epsilon"] == 60.0

    assert release1["id"] == r1.event_id and release1["seq"] == 1
    assert release1["dataset"] == DATASET
    assert release1["actor"] == login_name()  # the account running the process
    assert release1["purpose"] == "monthly cohort report"
    assert release1["what"] == "SELECT avg(age) FROM diab"
    assert release1["operation"] == "query"
    assert release1["details"] == {"rows": 442, "sql": "SELECT avg(age) FROM diab"}
    assert release1["accountant"] == "pld"
    assert release1["mechanisms"][0]["name"] == "laplace"
    assert release1["mechanisms"][0]["parameters"] == {
        "scale": 2.0,
        "sensitivity": 1.0,
        "column": "age",
    }
    assert release1["charged"]["epsilon"] == pytest.approx(r1.epsilon)
    assert release1["spent_after"]["epsilon"] == pytest.approx(r1.status.spent.epsilon)
    assert release1["spent_after"]["delta"] == 1e-6

    assert release2["id"] == r2.event_id and release2["seq"] == 2
    assert release2["actor"] == "alice"
    assert release2["purpose"] == "model audit"
    assert [m["name"] for m in release2["mechanisms"]] == [m.name for m in mechanisms[1:]]
    assert release2["mechanisms"][3]["parameters"] == {
        "sampling_rate": 0.01,
        "noise_multiplier": 1.1,
        "steps": 100,
    }
    assert release2["spent_after"]["epsilon"] == pytest.approx(ledger.status(DATASET).spent.epsilon)

    # The mechanisms come back exactly as they were charged (from JSON and from entries()).
    from_json = [Mechanism.from_dict(m) for h in json.loads(text)[1:3] for m in h["mechanisms"]]
    assert from_json == mechanisms
    from_entries = [m for entry in ledger.entries(DATASET) for m in entry.mechanisms]
    assert from_entries == mechanisms
    delta = 1e-6
    # The incremental spend is exactly the from-scratch fold, and the batch PLD accountant (which
    # self-composes identical events) agrees to float precision.
    spent = ledger.status(DATASET).spent.epsilon
    assert recompose([m.dp_event for m in from_json]).epsilon(delta) == spent
    recomposed = PLDAccountant().epsilon([m.dp_event for m in from_json], delta)
    assert recomposed == pytest.approx(spent, rel=1e-9)


def test_budget_switch_to_rho_is_refused_while_history_has_no_zcdp_bound(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=3, delta=1e-5))
    sparse_vector = PrivacyEvent("svt", (Mechanism.epsilon_delta("svt", 0.5, 1e-6),))
    ledger.charge(DATASET, sparse_vector, purpose="threshold queries")
    before = snapshot(ledger)
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        ledger.set_budget(DATASET, Budget(rho=1.0))
    assert snapshot(ledger) == before


# ------------------------------------------------------------------ bad input
def test_unknown_dataset(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=1))
    calls = [
        lambda: ledger.status("nope"),
        lambda: ledger.history("nope"),
        lambda: ledger.entries("nope"),
        lambda: ledger.preview("nope", laplace(0.1)),
        lambda: ledger.charge("nope", laplace(0.1), purpose="typo"),
        lambda: ledger.set_budget("nope", Budget(epsilon=1)),
    ]
    for call in calls:
        with pytest.raises(NotFoundError, match="no dataset named 'nope'") as caught:
            call()
        assert caught.value.code == "not_found"
        assert DATASET in (caught.value.fix or "")
    assert ledger.entries(DATASET) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"delta": 1e-5},
        {"epsilon": math.nan},
        {"epsilon": math.inf},
        {"epsilon": -math.inf},
        {"epsilon": -1.0},
        {"epsilon": 0.0},
        {"epsilon": "1.0"},
        {"epsilon": True},
        {"epsilon": 1.0, "delta": 1.0},
        {"epsilon": 1.0, "delta": 2.0},
        {"epsilon": 1.0, "delta": -1e-9},
        {"epsilon": 1.0, "delta": math.nan},
        {"epsilon": 1.0, "delta": math.inf},
        {"rho": 0.0},
        {"rho": -0.5},
        {"rho": math.nan},
        {"rho": math.inf},
        {"rho": 0.5, "epsilon": 1.0},
        {"rho": 0.5, "delta": 1e-6},
    ],
    ids=repr,
)
def test_invalid_budgets_are_rejected(kwargs):
    with pytest.raises(InvalidInputError) as caught:
        Budget(**kwargs)
    assert caught.value.code == "invalid_input"
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("purpose", ["", "   ", "\n\t"])
def test_a_release_needs_a_purpose(ledger: Ledger, purpose: str):
    ledger.set_budget(DATASET, Budget(epsilon=1))
    before = snapshot(ledger)
    with pytest.raises(InvalidInputError, match="needs a purpose"):
        ledger.charge(DATASET, laplace(0.1), purpose=purpose)
    assert snapshot(ledger) == before


# ------------------------------------------------------------------ zCDP budgets
def test_rho_budget_sums_gaussian_and_pure_epsilon_rho(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(rho=0.5))
    # Gaussian with sigma 2 on sensitivity 1: rho = 1 / (2 * 2^2) = 0.125.
    # Laplace with epsilon 0.5 (pure DP): rho = 0.5^2 / 2 = 0.125.
    # Randomized response with epsilon ln(3): rho = ln(3)^2 / 2.
    first = ledger.charge(DATASET, gaussian(2.0), purpose="mean")
    assert first.rho == pytest.approx(0.125)
    assert first.epsilon is None
    assert first.status.spent.rho == pytest.approx(0.125)
    second = ledger.charge(DATASET, laplace(0.5), purpose="count")
    assert second.rho == pytest.approx(0.125)
    assert ledger.status(DATASET).spent.rho == pytest.approx(0.25)
    third = ledger.charge(DATASET, gaussian(2.0), purpose="mean again")
    assert third.status.spent.rho == pytest.approx(0.375)
    status = ledger.status(DATASET)
    assert status.accountant == "zcdp"
    assert status.to_dict()["spent"] == {"rho": pytest.approx(0.375)}
    assert status.remaining == pytest.approx(0.125)
    assert status.cross_check == {}

    # Randomized response with epsilon ln(1.5): rho = ln(1.5)^2 / 2 = 0.0822 each.
    rr = Mechanism.randomized_response(truth_probability=0.6, categories=2)
    rr_rho = math.log(1.5) ** 2 / 2
    before = snapshot(ledger)
    with pytest.raises(BudgetExceededError) as caught:
        ledger.charge(DATASET, PrivacyEvent("survey twice", (rr, rr)), purpose="survey")
    assert caught.value.details["requested"] == {"rho": pytest.approx(2 * rr_rho)}
    assert caught.value.details["remaining"] == pytest.approx(0.125)
    assert snapshot(ledger) == before
    receipt = ledger.charge(DATASET, PrivacyEvent("survey", (rr,)), purpose="survey")
    assert receipt.rho == pytest.approx(rr_rho)
    assert ledger.status(DATASET).spent.rho == pytest.approx(0.375 + rr_rho)


def test_rho_budget_charges_until_exhausted(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(rho=0.5))
    # Four Gaussian releases of rho 0.125 fill a rho budget of 0.5 exactly.
    assert charge_until_refused(ledger, gaussian(2.0)) == 4
    assert ledger.status(DATASET).spent.rho == pytest.approx(0.5)
    assert ledger.status(DATASET).remaining == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("epsilon", "fits"), [(1.0, 2), (0.5, 8), (0.25, 32)])
def test_rho_budget_charges_pure_epsilon_as_epsilon_squared_over_two(
    ledger: Ledger, epsilon: float, fits: int
):
    ledger.set_budget(DATASET, Budget(rho=1.0))
    assert charge_until_refused(ledger, laplace(epsilon)) == fits
    assert ledger.status(DATASET).spent.rho == pytest.approx(fits * epsilon**2 / 2)


@pytest.mark.parametrize(
    "mechanism",
    [
        Mechanism.epsilon_delta("sparse_vector", epsilon=0.5, delta=1e-6),
        Mechanism.subsampled_gaussian(sampling_rate=0.01, noise_multiplier=1.0, steps=10),
    ],
    ids=["epsilon_delta", "subsampled_gaussian"],
)
def test_rho_budget_refuses_a_mechanism_without_a_zcdp_bound(ledger: Ledger, mechanism):
    ledger.set_budget(DATASET, Budget(rho=1.0))
    ledger.charge(DATASET, gaussian(3.0), purpose="before")
    before = snapshot(ledger)
    event = PrivacyEvent("no zCDP bound", (mechanism,))
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        ledger.charge(DATASET, event, purpose="should be refused")
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        ledger.preview(DATASET, event)
    # Mixed with a Gaussian in one release it is refused as a whole.
    mixed = PrivacyEvent("mixed", (Mechanism.gaussian(sigma=3.0, sensitivity=1.0), mechanism))
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        ledger.charge(DATASET, mixed, purpose="should be refused too")
    assert snapshot(ledger) == before


# ------------------------------------------------------------------ composition
def exact_laplace_delta(releases: int, epsilon: float, target: float) -> float:
    """Exact delta(target) of ``releases`` Laplace mechanisms of ``epsilon`` each.

    Independent of ``dp_accounting``: the privacy loss of one Laplace release
    (scale 1/epsilon, sensitivity 1) under the first distribution is +epsilon
    with probability 1/2, -epsilon with probability exp(-epsilon)/2, and
    (1 - 2x) epsilon for x in (0, 1) in between. Its distribution is
    discretised pessimistically (rounded up) on a fine grid, convolved
    ``releases`` times by FFT, and delta(target) = E[max(0, 1 - exp(target - L))].
    """
    points = 8001
    step = 2 * epsilon / (points - 1)
    losses = -epsilon + step * np.arange(points)
    pmf = np.zeros(points)
    pmf[-1] += 0.5
    pmf[0] += 0.5 * math.exp(-epsilon)
    x = (1 - losses / epsilon) / 2  # where the loss equals each grid value
    mass_below = 0.5 * (1 - np.exp(-epsilon * x))  # P(0 < X < x) for X ~ Laplace(1/epsilon)
    pmf[1:] += mass_below[:-1] - mass_below[1:]  # (l_j, l_{j+1}] rounded up to l_{j+1}
    size = releases * (points - 1) + 1
    fft_size = 1 << (size - 1).bit_length()
    composed = np.fft.irfft(np.fft.rfft(pmf, fft_size) ** releases, fft_size)[:size]
    composed = np.clip(composed, 0.0, None)
    total_loss = -releases * epsilon + step * np.arange(size)
    return float(np.sum(composed * np.maximum(0.0, 1.0 - np.exp(target - total_loss))))


def test_pld_composes_laplace_releases_tightly(ledger: Ledger):
    """Budget (3, 1e-5) and Laplace releases of epsilon 0.15: 26 fit, not 20 (basic) and not 30.

    Basic composition would allow floor(3 / 0.15) = 20 releases; PLD admits 26
    (a sum of 3.9). The 27th would cost epsilon 3.0098 at delta 1e-5. The exact
    delta of 26 releases at epsilon 3 is 5.5e-6 and of 27 is 1.07e-5, so 26 is
    the true answer; 30 releases need delta 3.4e-5 at epsilon 3 and do not fit.
    """
    epsilon, budget, delta = 0.15, 3.0, 1e-5
    ledger.set_budget(DATASET, Budget(epsilon=budget, delta=delta))
    fitted = charge_until_refused(ledger, laplace(epsilon))
    assert fitted == 26
    assert fitted > math.floor(budget / epsilon)  # tighter than summing epsilons
    status = ledger.status(DATASET)
    assert status.events == 26
    assert 2.9 < status.spent.epsilon <= budget
    assert status.spent.epsilon < fitted * epsilon
    assert status.cross_check["epsilon"] > status.spent.epsilon  # RDP is looser

    # The same count from the exact composition, computed without dp_accounting.
    assert exact_laplace_delta(fitted, epsilon, budget) <= delta
    assert exact_laplace_delta(fitted + 1, epsilon, budget) > delta
    assert exact_laplace_delta(30, epsilon, budget) > 3 * delta
    # And every charge's recorded total is the PLD of the history up to it.
    pld = PLDAccountant()
    spent_after = [entry.spent_epsilon for entry in ledger.entries(DATASET)]
    for count in (1, 10, 26):
        history = [laplace(epsilon).dp_event] * count
        assert spent_after[count - 1] == recompose(history).epsilon(delta)
        assert spent_after[count - 1] == pytest.approx(pld.epsilon(history, delta), rel=1e-9)
    assert RDPAccountant().epsilon([laplace(epsilon).dp_event] * 26, delta) > budget


@pytest.mark.parametrize(
    ("budget", "epsilon"),
    [("1", "0.1"), ("0.3", "0.1"), ("3", "0.7"), ("2.5", "0.5"), ("1", "0.3")],
)
def test_pure_budget_admits_exactly_floor_budget_over_epsilon(
    ledger: Ledger, budget: str, epsilon: str
):
    expected = math.floor(Fraction(budget) / Fraction(epsilon))
    ledger.set_budget(DATASET, Budget(epsilon=float(budget)))
    assert charge_until_refused(ledger, laplace(float(epsilon))) == expected
    status = ledger.status(DATASET)
    assert status.events == expected
    assert status.spent.epsilon == pytest.approx(expected * float(epsilon), rel=1e-12)
    assert status.remaining == pytest.approx(float(budget) - expected * float(epsilon), abs=1e-9)


def test_pure_epsilon_mechanisms_add_up_under_a_pure_budget(ledger: Ledger):
    ledger.set_budget(DATASET, Budget(epsilon=2.0))
    rr = Mechanism.randomized_response(truth_probability=0.75, categories=2)  # epsilon ln 3
    event = PrivacyEvent(
        "three pure mechanisms",
        (
            Mechanism.laplace(scale=4.0, sensitivity=1.0),  # 0.25
            Mechanism.discrete_laplace(scale=2.0, sensitivity=1),  # 0.5
            rr,
        ),
    )
    receipt = ledger.charge(DATASET, event, purpose="pure")
    assert receipt.epsilon == pytest.approx(0.25 + 0.5 + math.log(3))
    assert ledger.status(DATASET).spent.epsilon == pytest.approx(receipt.epsilon)

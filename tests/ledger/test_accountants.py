"""Accountants and privacy events: pinned values, cross-checks and properties.

Tier 1 (STYLE.md): epsilons for fixed parameters, pinned and checked against
a second analysis (the exact Gaussian closed form, the RDP accountant, basic
and advanced composition). Tier 2: Hypothesis properties (monotonicity,
round trips, refusals). Nothing here is random.
"""

from __future__ import annotations

import json
import math

import pytest
from dp_accounting import dp_event
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.ledger import (
    EpsilonDeltaDpEvent,
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
    RDPAccountant,
    gaussian_epsilon,
    pure_epsilon,
    zcdp_rho,
)
from veil.ledger._events import event_from_dict, event_to_dict
from veil.ledger.params import check_delta, check_epsilon, check_rho

PLD = PLDAccountant()
RDP = RDPAccountant()


def gaussians(noise_multiplier: float, count: int) -> list[dp_event.DpEvent]:
    return [Mechanism.gaussian(sigma=noise_multiplier, sensitivity=1.0).dp_event] * count


# ------------------------------------------------------------------ tier 1: Gaussian


def test_pld_of_100_gaussians_matches_the_exact_closed_form():
    events = gaussians(5.0, 100)
    exact = gaussian_epsilon(5.0, 1e-5, 100)
    pld = PLD.epsilon(events, delta=1e-5)
    assert pld == pytest.approx(exact, rel=1e-3)
    # Pessimistic discretisation: PLD never reports less than the truth.
    assert pld >= exact - 1e-9
    # And the inverse query: at the exact epsilon, PLD's delta is the target delta.
    assert PLD.delta(events, epsilon=exact) == pytest.approx(1e-5, rel=1e-3)


def test_rdp_is_an_upper_bound_on_pld_and_not_a_loose_one():
    events = gaussians(5.0, 100)
    pld = PLD.epsilon(events, delta=1e-5)
    rdp = RDP.epsilon(events, delta=1e-5)
    assert pld <= rdp <= 1.15 * pld


def test_tight_composition_is_far_below_basic_composition():
    single = gaussian_epsilon(5.0, 1e-5, 1)
    pld = PLD.epsilon(gaussians(5.0, 100), delta=1e-5)
    assert pld < 0.2 * (100 * single)


# ------------------------------------------------------------------ tier 1: Laplace


def test_pure_laplace_composition_adds_epsilons_exactly():
    laplace = Mechanism.laplace(scale=3.0, sensitivity=1.5).dp_event  # epsilon 0.5
    assert pure_epsilon(laplace) == 0.5
    assert PLD.epsilon([laplace] * 50, delta=0.0) == 25.0


def test_laplace_composition_with_delta_beats_basic_composition():
    laplace = Mechanism.laplace(scale=3.0, sensitivity=1.5).dp_event
    pld = PLD.epsilon([laplace] * 50, delta=1e-5)
    assert pld < 25.0
    assert pld <= RDP.epsilon([laplace] * 50, delta=1e-5)


def test_mechanisms_with_delta_have_no_pure_epsilon():
    assert PLD.epsilon(gaussians(5.0, 1), delta=0.0) == math.inf
    assert PLD.epsilon([], delta=0.0) == 0.0
    assert PLD.epsilon([], delta=1e-5) == 0.0


# ------------------------------------------------------------------ tier 1: pinned values

M = Mechanism
# (events, delta, PLD epsilon, RDP epsilon), computed once with dp_accounting 0.6 and the
# default discretisation (1e-3). rel=1e-6 pins them; a finer grid (1e-4) moves the PLD
# values by up to 8e-4 (relative), so a change of discretisation shows up here on purpose.
PINNED = {
    "gaussian x100": (gaussians(5.0, 100), 1e-5, 9.997256439824454, 10.725509696418232),
    "laplace x50": (
        [M.laplace(3.0, 1.5).dp_event] * 50,
        1e-5,
        17.473914965540686,
        18.327318756451003,
    ),
    "poisson-subsampled gaussian": (
        [M.subsampled_gaussian(0.01, 1.1, 1000).dp_event],
        1e-5,
        1.5161946679293754,
        1.7117701662429012,
    ),
    "discrete laplace x10": (
        [M.discrete_laplace(2.0, 1).dp_event] * 10,
        1e-6,
        4.999885471110101,
        8.84687435850794,
    ),
    "discrete gaussian x10": (
        [M.discrete_gaussian(3.0, 1).dp_event] * 10,
        1e-6,
        5.195097969866262,
        5.5429213799302115,
    ),
    "gaussian+laplace+rr x5": (
        [
            PrivacyEvent(
                "q", (M.gaussian(4.0, 1.0), M.laplace(2.0, 1.0), M.randomized_response(0.75, 2))
            ).dp_event
        ]
        * 5,
        1e-6,
        9.928985394731507,
        16.817467537018054,
    ),
    "(0.1, 1e-7) x100": (
        [M.epsilon_delta("svt", 0.1, 1e-7).dp_event] * 100,
        1e-4,
        3.77569672815893,
        10.0,
    ),
}


@pytest.mark.parametrize("name", PINNED)
def test_pinned_epsilons_and_pld_below_rdp(name):
    events, delta, pld_pinned, rdp_pinned = PINNED[name]
    pld = PLD.epsilon(events, delta)
    rdp = RDP.epsilon(events, delta)
    assert pld == pytest.approx(pld_pinned, rel=1e-6)
    assert rdp == pytest.approx(rdp_pinned, rel=1e-6)
    assert pld <= rdp


def test_discrete_gaussian_is_close_to_the_continuous_one():
    # Same sigma on integers: the discrete Gaussian leaks very slightly more (pinned above).
    pld = PLD.epsilon([M.discrete_gaussian(3.0, 1).dp_event] * 10, 1e-6)
    assert pld == pytest.approx(gaussian_epsilon(3.0, 1e-6, 10), rel=2e-3)


# ------------------------------------------------------------------ tier 1: (epsilon, delta) events


def test_one_epsilon_delta_event_costs_its_own_epsilon():
    event = M.epsilon_delta("svt", 1.0, 1e-6).dp_event
    assert PLD.epsilon([event], delta=1e-6) == pytest.approx(1.0, rel=1e-6)
    # Accepting a larger delta than the event's own buys a smaller epsilon.
    assert PLD.epsilon([event], delta=1e-3) < 1.0


@pytest.mark.parametrize(("epsilon", "delta", "k"), [(1.0, 1e-6, 10), (0.1, 1e-7, 100)])
def test_epsilon_delta_composition_never_exceeds_basic_or_advanced_composition(epsilon, delta, k):
    events = [M.epsilon_delta("em", epsilon, delta).dp_event] * k
    # Basic composition: (k eps, k delta).
    assert PLD.epsilon(events, delta=k * delta) <= k * epsilon + 1e-9
    # Advanced composition (Dwork, Rothblum and Vadhan 2010) with delta' = 9 k delta.
    slack = 9 * k * delta
    advanced = math.sqrt(2 * k * math.log(1 / slack)) * epsilon + k * epsilon * math.expm1(epsilon)
    assert PLD.epsilon(events, delta=k * delta + slack) <= min(k * epsilon, advanced)


def test_rdp_falls_back_to_basic_composition_for_epsilon_delta_events():
    events = [M.epsilon_delta("em", 1.0, 1e-6).dp_event] * 10
    assert RDP.epsilon(events, delta=5e-6) == math.inf  # basic composition needs delta >= 1e-5
    assert RDP.epsilon(events, delta=2e-5) == pytest.approx(10.0)


# ------------------------------------------------------------------ tier 1: zCDP


def test_zcdp_rho_adds_up_per_mechanism():
    events = [
        PrivacyEvent(
            "q",
            (
                M.gaussian(sigma=4.0, sensitivity=2.0),  # noise multiplier 2: rho 1/8
                M.laplace(scale=2.0, sensitivity=1.0),  # epsilon 0.5: rho 1/8
                M.discrete_gaussian(sigma=3.0, sensitivity=1),  # rho 1/18
                M.randomized_response(0.75, 2),  # epsilon ln 3
            ),
        ).dp_event
    ] * 3
    expected = 3 * (1 / 8 + 1 / 8 + 1 / 18 + math.log(3) ** 2 / 2)
    assert zcdp_rho(events) == pytest.approx(expected, rel=1e-12)
    assert zcdp_rho(gaussians(2.0, 7)) == pytest.approx(7 / 8, rel=1e-12)


@pytest.mark.parametrize(
    "mechanism",
    [
        M.epsilon_delta("sparse_vector", 1.0, 1e-6),
        M.subsampled_gaussian(0.01, 1.1, 100),
    ],
    ids=["epsilon-delta", "subsampled"],
)
def test_zcdp_refuses_mechanisms_without_a_zcdp_guarantee(mechanism):
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        zcdp_rho([mechanism.dp_event])
    mixed = PrivacyEvent("q", (M.gaussian(4.0, 1.0), mechanism)).dp_event
    with pytest.raises(InvalidInputError, match="zero-concentrated"):
        zcdp_rho([mixed])


# ------------------------------------------------------------------ tier 2: events as JSON

finite = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
sensitivities = st.integers(min_value=1, max_value=100)


@st.composite
def randomized_responses(draw: st.DrawFn) -> Mechanism:
    k = draw(st.integers(min_value=2, max_value=50))
    p = draw(st.floats(min_value=1 / k, max_value=0.999, exclude_max=False))
    return M.randomized_response(p, k)


mechanisms = st.one_of(
    st.builds(M.laplace, finite, finite),
    st.builds(M.discrete_laplace, finite, sensitivities),
    st.builds(M.gaussian, finite, finite),
    st.builds(M.discrete_gaussian, finite, sensitivities),
    st.builds(
        M.subsampled_gaussian,
        st.floats(min_value=1e-6, max_value=1.0),
        finite,
        st.integers(min_value=1, max_value=10_000),
    ),
    randomized_responses(),
    st.builds(
        M.epsilon_delta,
        st.sampled_from(["exponential", "sparse_vector"]),
        finite,
        st.floats(min_value=0.0, max_value=0.5),
    ),
)


def _through_json(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))


@given(mechanisms)
def test_mechanisms_round_trip_through_json(mechanism):
    assert Mechanism.from_dict(_through_json(mechanism.to_dict())) == mechanism
    assert event_from_dict(_through_json(event_to_dict(mechanism.dp_event))) == mechanism.dp_event


@given(st.lists(mechanisms, min_size=2, max_size=5), st.integers(min_value=1, max_value=50))
def test_composed_events_round_trip_through_json(parts, count):
    composed = dp_event.SelfComposedDpEvent(PrivacyEvent("q", tuple(parts)).dp_event, count)
    assert event_from_dict(_through_json(event_to_dict(composed))) == composed


def test_unknown_event_types_are_refused_both_ways():
    with pytest.raises(InvalidInputError, match="unknown privacy event type"):
        event_from_dict({"type": "QuantumDpEvent", "epsilon": 1.0})
    with pytest.raises(InvalidInputError, match="unknown privacy event type"):
        event_from_dict({"epsilon": 1.0})
    # dp_accounting events the ledger does not record (replace-one neighbours, unsupported).
    for event in (dp_event.RandomizedResponseDpEvent(0.5, 2), dp_event.UnsupportedDpEvent()):
        with pytest.raises(InvalidInputError, match="cannot be recorded"):
            event_to_dict(event)
    with pytest.raises(InvalidInputError, match="cannot be recorded"):
        event_to_dict(dp_event.ComposedDpEvent([dp_event.UnsupportedDpEvent()]))


def test_epsilon_delta_event_json_is_what_an_auditor_reads():
    event = EpsilonDeltaDpEvent(epsilon=0.5, delta=1e-7)
    assert event_to_dict(event) == {"type": "EpsilonDeltaDpEvent", "epsilon": 0.5, "delta": 1e-7}


# ------------------------------------------------------------------ tier 2: monotonicity

# PLD costs grow as the noise shrinks (0.1 s for 20 Gaussians at multiplier 1, 3 s at 0.3).
multipliers = st.floats(min_value=1.0, max_value=8.0)
deltas = st.floats(min_value=1e-9, max_value=1e-3)


@pytest.mark.slow
@settings(deadline=None, max_examples=15)
@given(multipliers, multipliers, st.integers(min_value=1, max_value=20), deltas)
def test_pld_epsilon_does_not_increase_with_more_noise(s1, s2, k, delta):
    low, high = sorted((s1, s2))
    assert PLD.epsilon(gaussians(high, k), delta) <= PLD.epsilon(gaussians(low, k), delta)
    assert gaussian_epsilon(high, delta, k) <= gaussian_epsilon(low, delta, k) + 1e-9


@pytest.mark.slow
@settings(deadline=None, max_examples=15)
@given(multipliers, st.integers(1, 20), st.integers(1, 20), deltas)
def test_pld_epsilon_does_not_decrease_with_more_compositions(s, k1, k2, delta):
    low, high = sorted((k1, k2))
    assert PLD.epsilon(gaussians(s, low), delta) <= PLD.epsilon(gaussians(s, high), delta)


@pytest.mark.slow
@settings(deadline=None, max_examples=15)
@given(multipliers, st.integers(1, 20), deltas)
def test_pld_is_an_upper_bound_close_to_the_truth_and_below_rdp(s, k, delta):
    events = gaussians(s, k)
    exact = gaussian_epsilon(s, delta, k)
    pld = PLD.epsilon(events, delta)
    assert exact - 1e-9 <= pld <= exact * (1 + 1e-3) + 1e-9
    assert pld <= RDP.epsilon(events, delta)


# ------------------------------------------------------------------ tier 2: parameter checks

non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
negative = st.floats(max_value=0.0, exclude_max=True, allow_infinity=False, allow_nan=False)
positive = st.floats(min_value=5e-324, max_value=1e300)
non_numbers = st.sampled_from([None, "1.0", True, [1.0]])


@given(st.one_of(non_finite, negative, st.just(0.0), st.just(-0.0), non_numbers))
def test_check_epsilon_and_rho_reject_non_positive_and_non_finite(value):
    with pytest.raises(InvalidInputError):
        check_epsilon(value)
    with pytest.raises(InvalidInputError):
        check_rho(value)


@given(positive)
def test_check_epsilon_and_rho_accept_positive_numbers(value):
    assert check_epsilon(value) == value
    assert check_rho(value) == value


@given(st.one_of(non_finite, negative, st.floats(min_value=1.0), non_numbers))
def test_check_delta_rejects_outside_zero_one(value):
    with pytest.raises(InvalidInputError):
        check_delta(value)
    with pytest.raises(InvalidInputError):
        check_delta(value, allow_zero=False)


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_check_delta_accepts_zero_one(value):
    assert check_delta(value) == value
    if value == 0:
        with pytest.raises(InvalidInputError, match=r"\(0, 1\)"):
            check_delta(value, allow_zero=False)
    else:
        assert check_delta(value, allow_zero=False) == value

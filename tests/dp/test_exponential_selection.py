"""exponential_selection: the exponential mechanism by Gumbel noisy max, and its audit.

Tier 1: the noise scale against OpenDP's own privacy maps (rho = epsilon^2 / 8
under zCDP, epsilon under pure DP) and the ledger's charge; refusals. Tier 3
(statistical; OpenDP reads the operating system's CSPRNG and cannot be
seeded): the choice follows the softmax, and an empirical audit on
neighbouring score vectors bounds epsilon from below with Clopper-Pearson
intervals. Each statistical assertion states its type I error.
"""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest
from scipy import special
from tests._dpstats import audit_power_floor, clopper_pearson, epsilon_lower_bound

from veil.dp import _noise, exponential_selection
from veil.errors import InvalidInputError
from veil.ledger import ExponentialDpEvent, PLDAccountant, zcdp_rho

ALPHA = 1e-6

# ------------------------------------------------------------------ tier 1: calibration


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(1.0, 1.0), (0.3, 2.5), (3.0, 0.5)])
def test_scale_matches_opendp_privacy_maps_and_the_ledger_charge(epsilon, sensitivity):
    _, mech = exponential_selection([0.0, 1.0, 2.0], epsilon, sensitivity)
    scale = mech.parameters["noise_scale"]
    assert scale == 2 * sensitivity / epsilon
    assert mech.dp_event == ExponentialDpEvent(epsilon)
    assert mech.parameters["candidates"] == 3
    # The measurement that runs: OpenDP's map for scores moving by `sensitivity` is the rho
    # the ledger charges (OpenDP rounds up, so equal up to float rounding).
    rho = _noise._gumbel_max(scale).map(sensitivity)
    assert rho == pytest.approx(epsilon**2 / 8, rel=1e-12)
    assert rho == pytest.approx(zcdp_rho([mech.dp_event]), rel=1e-12)
    # And the same noisy max under pure DP is epsilon-DP, what PLD charges at delta 0.
    pure = dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.linf_distance(T=float),
        dp.max_divergence(),
        scale,
    )
    assert pure.map(sensitivity) == pytest.approx(epsilon, rel=1e-12)
    assert PLDAccountant().epsilon([mech.dp_event], 0.0) == pytest.approx(epsilon, rel=1e-15)


def test_the_measurement_is_built_once_per_scale():
    exponential_selection([1.0, 2.0], 0.7, 1.3)
    before = _noise._gumbel_max.cache_info()
    for _ in range(5):
        exponential_selection(list(range(600)), 0.7, 1.3)
    after = _noise._gumbel_max.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 5


def test_one_candidate_is_chosen_and_still_charged():
    index, mech = exponential_selection(np.array([4.0]), 1.0, 1.0)
    assert index == 0
    assert mech.dp_event == ExponentialDpEvent(1.0)


@pytest.mark.parametrize(
    ("scores", "epsilon", "sensitivity", "match"),
    [
        ([], 1.0, 1.0, "no candidates"),
        ([0.0, math.nan], 1.0, 1.0, "finite"),
        ([0.0, math.inf], 1.0, 1.0, "finite"),
        ([0.0, 1.0], 0.0, 1.0, "epsilon"),
        ([0.0, 1.0], math.nan, 1.0, "epsilon"),
        ([0.0, 1.0], -1.0, 1.0, "epsilon"),
        ([0.0, 1.0], 1.0, 0.0, "sensitivity"),
        ([0.0, 1.0], 1.0, math.inf, "sensitivity"),
    ],
)
def test_refuses_bad_input(scores, epsilon, sensitivity, match):
    with pytest.raises(InvalidInputError, match=match):
        exponential_selection(scores, epsilon, sensitivity)


# ------------------------------------------------------------------ tier 3: the softmax


@pytest.mark.slow  # statistical (a declared false-failure rate)
def test_choices_follow_the_softmax():
    # P(i) = exp(eps s_i / (2 sensitivity)) / sum: with eps 2, sensitivity 1 and these
    # scores, about 0.09, 0.24 and 0.67. Each count lies in its Clopper-Pearson interval
    # (Bonferroni over the three).
    scores, epsilon, n = [0.0, 1.0, 2.0], 2.0, 3_000
    expected = special.softmax(np.asarray(scores) * epsilon / 2)
    counts = np.bincount(
        [exponential_selection(scores, epsilon, 1.0)[0] for _ in range(n)], minlength=3
    )
    for i, (k, p) in enumerate(zip(counts, expected, strict=True)):
        low, high = clopper_pearson(int(k), n, ALPHA / 3)
        assert low <= p <= high, (
            f"candidate {i} chosen {k}/{n} times, softmax P = {p:.4f} outside "
            f"[{low:.4f}, {high:.4f}]; type I error <= {ALPHA}"
        )


# ------------------------------------------------------------------ tier 3: the audit
#
# Neighbouring scores D0 = [0, 2s] and D1 = [s, s] (each score moves by the sensitivity s, in
# opposite directions: the worst case of a non-monotonic score), event S = {index 0}, fixed
# before sampling. With epsilon 2 the logit of S moves from -2 to 0: P0 = expit(-2) = 0.119,
# P1 = 1/2, a log-ratio of 1.43 <= 2. With the noise wrongly halved (scale s / eps) the logit
# moves from -4 to 0: P0 = 0.018, a log-ratio of 3.33, and n = 5,000 draws per side bound it
# above 2.36 with probability >= 1 - 2 ALPHA (audit_power_floor; asserted below), so the
# audit tells a halved noise from the right one. Failure rates: the bound above the claim
# <= ALPHA; the frequencies outside their intervals <= 2 ALPHA; the power check <= 2 ALPHA.

AUDIT_EPSILON, AUDIT_SENSITIVITY, AUDIT_N = 2.0, 1.5, 5_000
D0 = [0.0, 2 * AUDIT_SENSITIVITY]
D1 = [AUDIT_SENSITIVITY, AUDIT_SENSITIVITY]


def _wins_of_first(choose, scores: list[float], n: int) -> int:
    return sum(1 for _ in range(n) if choose(scores) == 0)


def _theory(scale: float) -> tuple[float, float]:
    """P(index 0) on D0 and on D1 for Gumbel noise of ``scale`` (the softmax of two)."""
    return (
        float(special.expit((D0[0] - D0[1]) / scale)),
        float(special.expit((D1[0] - D1[1]) / scale)),
    )


@pytest.mark.slow  # statistical (a declared false-failure rate), 20,000 draws
def test_empirical_epsilon_stays_below_the_claim_and_the_audit_has_power():
    scale = 2 * AUDIT_SENSITIVITY / AUDIT_EPSILON

    def choose(scores: list[float]) -> int:
        return exponential_selection(scores, AUDIT_EPSILON, AUDIT_SENSITIVITY)[0]

    k0, k1 = _wins_of_first(choose, D0, AUDIT_N), _wins_of_first(choose, D1, AUDIT_N)
    bound = epsilon_lower_bound(k0, AUDIT_N, k1, AUDIT_N, alpha=ALPHA)
    assert bound <= AUDIT_EPSILON, (
        f"privacy leak: index 0 won {k1}/{AUDIT_N} on D1 against {k0}/{AUDIT_N} on D0, "
        f"proving epsilon >= {bound:.3f} > {AUDIT_EPSILON}; type I error <= {ALPHA}"
    )
    for label, k, p in zip(("D0", "D1"), (k0, k1), _theory(scale), strict=True):
        low, high = clopper_pearson(k, AUDIT_N, ALPHA)
        assert low <= p <= high, (
            f"not the softmax: {k}/{AUDIT_N} wins on {label}, theory P = {p:.4f} outside "
            f"[{low:.4f}, {high:.4f}]; type I error <= {ALPHA}"
        )

    # Power: the same audit of OpenDP's measurement with half the noise must catch it.
    half = dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.linf_distance(T=float),
        dp.zero_concentrated_divergence(),
        scale / 2,
    )
    p0_half, p1_half = _theory(scale / 2)
    floor = audit_power_floor(p0_half, AUDIT_N, p1_half, AUDIT_N, alpha=ALPHA)
    assert floor > AUDIT_EPSILON, "design: this n cannot catch a halved noise"
    h0, h1 = _wins_of_first(half, D0, AUDIT_N), _wins_of_first(half, D1, AUDIT_N)
    caught = epsilon_lower_bound(h0, AUDIT_N, h1, AUDIT_N, alpha=ALPHA)
    assert caught > AUDIT_EPSILON, (
        f"no power: with half the noise index 0 won {h1}/{AUDIT_N} on D1 and {h0}/{AUDIT_N} "
        f"on D0, a bound of only {caught:.3f} (<= {AUDIT_EPSILON}); type I error <= {2 * ALPHA}"
    )

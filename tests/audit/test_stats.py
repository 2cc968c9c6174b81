"""Epsilon lower bounds: valid (never above the truth, type I error <= ALPHA) and tight (near it).

Randomized response with known epsilon is the oracle (STYLE.md): the bound
must approach the true epsilon but not cross it. Each "approach" check uses a
floor computed from binomial quantiles, so a correct implementation fails it
with probability at most ALPHA as well.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from veil.audit import (
    audit_mechanism,
    clopper_pearson,
    epsilon_from_scores,
    epsilon_lower_bound,
    one_run_epsilon,
)
from veil.audit._stats import one_run_p_value
from veil.dp import RandomizedResponse
from veil.errors import InvalidInputError

ALPHA = 1e-6


def test_clopper_pearson_is_the_exact_interval():
    for k, n in ((0, 10), (3, 10), (10, 10), (480, 1000)):
        lo, hi = clopper_pearson(k, n, 0.05)
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert lo == pytest.approx(ref.low, abs=1e-12)
        assert hi == pytest.approx(ref.high, abs=1e-12)
    with pytest.raises(InvalidInputError):
        clopper_pearson(11, 10, 0.05)
    with pytest.raises(InvalidInputError, match="alpha"):
        clopper_pearson(1, 10, 1.5)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_bound_on_randomized_response_approaches_but_never_crosses(epsilon, seed):
    n = 200_000
    p = math.exp(epsilon) / (1 + math.exp(epsilon))  # P[output 1 | bit 1] = P[output 0 | bit 0]
    rng = np.random.default_rng(seed)
    k1, k0 = int(rng.binomial(n, p)), int(rng.binomial(n, 1 - p))
    bound = epsilon_lower_bound(k0, n, k1, n, ALPHA)
    assert bound <= epsilon, (
        f"bound {bound} above the true epsilon {epsilon} (type I error <= {ALPHA})"
    )
    floor = epsilon_lower_bound(
        int(stats.binom.isf(ALPHA, n, 1 - p)), n, int(stats.binom.ppf(ALPHA, n, p)), n, ALPHA
    )
    assert bound >= floor > epsilon - 0.1, f"bound {bound} below its floor {floor} (<= {2 * ALPHA})"


@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_one_run_bound_on_randomized_response_canaries(epsilon, seed):
    """m canaries in by fair coins; the 'attack' sees each coin through randomized response."""
    m = 50_000
    q = 1 / (1 + math.exp(-epsilon))
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    seen = np.where(rng.random(m) < q, included, ~included)
    scores = seen + rng.random(m) * 1e-3  # ties broken at random
    result = one_run_epsilon(scores, included, alpha=ALPHA)
    assert result.epsilon_lower <= epsilon, f"{result.epsilon_lower} > {epsilon} (<= {ALPHA})"
    # The floor: the bound at the ALPHA-quantile of correct guesses when guessing on all m.
    # The largest fraction (all guesses) is one of those tried, at level ALPHA / 6.
    v_low = int(stats.binom.ppf(ALPHA, m, q))
    lo, hi = 0.0, epsilon
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if one_run_p_value(m, m, v_low, mid, 0.0) < ALPHA / 6 else (lo, mid)
    assert result.epsilon_lower >= lo - 1e-9 > epsilon - 0.25


def test_one_run_p_value_is_monotone_and_delta_makes_it_conservative():
    values = [one_run_p_value(1000, 200, 150, eps, 0.0) for eps in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values)
    assert one_run_p_value(1000, 200, 150, 1.0, 1e-4) >= values[2]
    with pytest.raises(InvalidInputError):
        one_run_p_value(10, 20, 5, 1.0, 0.0)


def test_scores_independent_of_membership_show_nothing(seed):
    rng = np.random.default_rng(seed)
    members = rng.random(20_000) < 0.5
    bound = epsilon_from_scores(rng.normal(size=20_000), members, alpha=ALPHA)
    assert bound.epsilon_lower <= 0.0, f"{bound} shows leakage of pure noise (type I <= {ALPHA})"
    assert bound.shown == 0.0


@pytest.mark.slow
def test_black_box_audit_of_veils_randomized_response():
    epsilon = 1.0
    rr = RandomizedResponse(epsilon, ("0", "1"))
    bound = audit_mechanism(rr.randomize, "0", "1", trials=3000, alpha=ALPHA)
    assert bound.epsilon_lower <= epsilon, f"{bound} (type I error <= {ALPHA})"
    assert bound.epsilon_lower > 0.2, "the audit has lost its power"  # expected ~0.7
    assert bound.detail["trials"] == 3000


def test_bad_inputs_are_refused():
    with pytest.raises(InvalidInputError, match="1-D"):
        epsilon_from_scores([1.0, 2.0], [True, False, True])
    with pytest.raises(InvalidInputError, match="trials"):
        audit_mechanism(float, 0, 1, trials=3)
    with pytest.raises(InvalidInputError, match="alpha"):
        one_run_epsilon([1.0, 2.0], [True, False], alpha=0.0)

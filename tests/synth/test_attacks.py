"""The attacks on a synthetic release see leakage when there is some, and none when there is none.

Data: 3,000 rows of adult.data as the generator's training set and 6,000 other
rows as the population (holdout), a random split, so members and non-members
are exchangeable unless the release leaks. Statistical assertions fix their
false-failure rate: "no leakage" tests are two-sided at ALPHA each (type I
error <= ALPHA), "leakage" tests require the attack to reject "no leakage" at
the same level.
"""

from __future__ import annotations

import math
from itertools import combinations, product

import numpy as np
import pytest
from scipy import special, stats
from tests.synth._evalkit import AdultCodes, load_adult

from veil.errors import InvalidInputError
from veil.synth._attacks import (
    MARGINAL_ATTACK,
    _kernel_log_density,
    _marginal_log_ratio,
    attribute_attack,
    code_matrix,
    distance_to_closest_record,
    membership_attack,
)

ALPHA = 1e-6
TRAIN, HOLDOUT, TARGETS = 3000, 6000, 1000


@pytest.fixture(scope="module")
def adult_codes(shared_data):
    train, _ = load_adult(shared_data)
    encoder = AdultCodes()
    codes = code_matrix(encoder.encode(train), encoder.columns, encoder.sizes)
    order = np.random.default_rng(0).permutation(len(codes))
    sizes = [encoder.sizes[c] for c in encoder.columns]
    return codes[order[:TRAIN]], codes[order[TRAIN : TRAIN + HOLDOUT]], sizes


def _split(train, holdout, seed):
    rng = np.random.default_rng(seed)
    members = train[rng.choice(len(train), TARGETS, replace=False)]
    order = rng.permutation(len(holdout))
    return members, holdout[order[:TARGETS]], holdout[order[TARGETS:]]


def _leaky(train, sizes, seed, share=0.1):
    """A non-private 'generator': training rows resampled, 10% of the cells redrawn at random."""
    rng = np.random.default_rng(seed)
    out = train[rng.integers(0, len(train), len(train))].copy()
    redraw = rng.random(out.shape) < share
    fresh = np.column_stack([rng.integers(0, s, len(out)) for s in sizes])
    out[redraw] = fresh[redraw]
    return out


def _three_way(sizes):
    """The default workload (3-way marginals of at most 10,000 cells), as column indices."""
    return [
        list(c)
        for c in combinations(range(len(sizes)), 3)
        if math.prod(sizes[j] for j in c) <= 10_000
    ]


def _null_band(n1, n0):
    """Two-sided ALPHA band of the AUC when scores do not depend on membership (Mann-Whitney)."""
    return stats.norm.isf(ALPHA / 2) * math.sqrt((n0 + n1 + 1) / (12 * n0 * n1))


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.0, 0.1])
def test_membership_attack_sees_a_generator_that_copies(adult_codes, seed, share):
    train, holdout, sizes = adult_codes
    members, non_members, reference = _split(train, holdout, seed)
    synth = _leaky(train, sizes, seed, share)
    result = membership_attack(
        members,
        non_members,
        reference,
        synth,
        sizes,
        cliques=_three_way(sizes),
        alpha=0.05,
        seed=seed,
    )
    assert len(result.results) == 3  # two kernel bandwidths and the workload's marginals
    band = _null_band(TARGETS, TARGETS)
    assert result.auc > 0.5 + band, (
        f"AUC {result.auc:.3f} on a copying generator (share redrawn {share}) is within the "
        f"no-leak band 0.5 +- {band:.3f} (false-failure rate <= {ALPHA})"
    )
    assert result.epsilon_lower_bound > 1.0, result.to_dict()
    for r in result.results:
        # The marginal score sees only 3-way cells, which a 10% redraw of cells breaks up:
        # there it is held to 1e-3 (AUC about 0.60, 4.7 standard errors above the cut).
        level = 1e-3 if r.attack == MARGINAL_ATTACK and share > 0 else ALPHA
        assert r.auc_p_value < level, (r.attack, r.auc, r.auc_p_value)


@pytest.mark.slow
def test_membership_attack_on_an_independent_sample_is_a_coin(adult_codes, seed):
    train, holdout, sizes = adult_codes
    members, non_members, reference = _split(train, holdout, seed)
    # The release: a bootstrap of population rows that are neither targets nor reference.
    rng = np.random.default_rng(seed + 1000)
    synth = reference[rng.integers(0, len(reference) // 2, TRAIN)]
    reference = reference[len(reference) // 2 :]
    result = membership_attack(
        members,
        non_members,
        reference,
        synth,
        sizes,
        cliques=_three_way(sizes),
        alpha=ALPHA,
        seed=seed,
    )
    band = _null_band(TARGETS, TARGETS)
    for r in result.results:
        assert abs(r.auc - 0.5) < band, (
            f"{r.attack}: AUC {r.auc:.3f} outside 0.5 +- {band:.3f} on an independent sample "
            f"(type I error <= {ALPHA} per attack)"
        )
    # The bound is at level ALPHA: above 0 with probability <= ALPHA when nothing leaks.
    assert result.epsilon_lower_bound == 0.0, result.to_dict()


def test_kernel_density_is_a_distribution_on_the_domain():
    sizes = [3, 2, 4]
    rng = np.random.default_rng(3)
    sample = np.column_stack([rng.integers(0, s, 25) for s in sizes])
    domain = np.array(list(product(*(range(s) for s in sizes))))
    for bandwidth in (0.02, 0.2, 0.6):
        log_p = _kernel_log_density(domain, sample, sizes, bandwidth)
        assert special.logsumexp(log_p) == pytest.approx(0.0, abs=1e-5)
        # Against the kernel written out cell by cell.
        for i in (0, 7, len(domain) - 1):
            kernel = [
                math.prod(
                    (1 - bandwidth) if a == b else bandwidth / (s - 1)
                    for a, b, s in zip(domain[i], row, sizes, strict=True)
                )
                for row in sample
            ]
            assert math.exp(log_p[i]) == pytest.approx(np.mean(kernel), rel=1e-4)


@pytest.mark.slow
def test_attribute_attack_sees_copies_and_not_an_independent_sample(adult_codes, seed):
    train, holdout, sizes = adult_codes
    members, non_members, reference = _split(train, holdout, seed)
    income = len(sizes) - 1
    leaked = attribute_attack(
        members, non_members, reference, train, sizes, sensitive=income, column="income", seed=seed
    )
    nearest = leaked.attackers[1]
    assert nearest.gap > 0 and nearest.gap_p_value < ALPHA, leaked.to_dict()
    rng = np.random.default_rng(seed + 1)
    synth = reference[rng.integers(0, len(reference), TRAIN)]
    clean = attribute_attack(
        members,
        non_members,
        reference[: len(reference) // 2],
        synth,
        sizes,
        sensitive=income,
        column="income",
        seed=seed,
    )
    # Two-sided z-test of equal accuracies (type I error <= ALPHA per attacker).
    for attacker in clean.attackers:
        assert attacker.gap_p_value > ALPHA, clean.to_dict()
    assert 0.5 < clean.majority_accuracy <= clean.baseline_accuracy + 0.05


def test_dcr_counts_copies_and_labels_itself_a_diagnostic(adult_codes, seed):
    train, holdout, sizes = adult_codes
    copy = distance_to_closest_record(train, train, holdout, sizes, rows=500, seed=seed)
    assert copy.to_train[0] == 500
    assert copy.to_dict()["share_exact_train"] == 1.0
    assert copy.median("train") == 0
    assert sum(copy.to_train) == sum(copy.to_holdout) == 500
    assert copy.to_dict()["share_exact_holdout"] < 1.0
    assert "not a privacy guarantee" in copy.to_dict()["label"]


def test_codes_outside_a_column_are_refused():
    import pandas as pd

    frame = pd.DataFrame({"a": [0, 1, 5], "b": [0, 0, 0]})
    with pytest.raises(InvalidInputError, match="outside its 3 cells"):
        code_matrix(frame, ("a", "b"), {"a": 3, "b": 1})
    with pytest.raises(InvalidInputError, match="lacks columns"):
        code_matrix(frame, ("a", "c"), {"a": 6, "c": 1})


def test_bad_bandwidths_and_empty_samples_are_refused():
    rows = np.zeros((4, 2), dtype=np.int64)
    with pytest.raises(InvalidInputError, match="bandwidths"):
        membership_attack(rows, rows, rows, rows, [2, 2], bandwidths=(0.0,))
    with pytest.raises(InvalidInputError, match="synthetic rows"):
        membership_attack(rows, rows, rows, rows[:0], [2, 2])
    with pytest.raises(InvalidInputError, match="two members"):
        membership_attack(rows[:1], rows, rows, rows, [2, 2])
    with pytest.raises(InvalidInputError, match="columns the codes do not have"):
        membership_attack(rows, rows, rows, rows, [2, 2], cliques=[[0, 2]])
    with pytest.raises(InvalidInputError, match="columns the codes do not have"):
        membership_attack(rows, rows, rows, rows, [2, 2], cliques=[[]])


def test_the_marginal_score_is_the_log_ratio_of_smoothed_cell_frequencies():
    sizes = [2, 3]
    synthetic = np.array([[0, 1], [0, 1], [1, 2], [0, 0]])
    reference = np.array([[1, 2], [1, 2], [0, 1]])
    targets = np.array([[0, 1], [1, 0]])
    a = 0.1
    got = _marginal_log_ratio(targets, synthetic, reference, sizes, [[0], [0, 1]])
    # Target (0, 1): column 0 is 0 in 3 of 4 synthetic rows, 1 of 3 reference rows; the cell
    # (0, 1) in 2 of 4 and 1 of 3 (6 cells). Target (1, 0): 1 of 4 and 2 of 3; 0 and 0.
    want = [
        math.log((3 + a) / (4 + 2 * a))
        - math.log((1 + a) / (3 + 2 * a))
        + math.log((2 + a) / (4 + 6 * a))
        - math.log((1 + a) / (3 + 6 * a)),
        math.log((1 + a) / (4 + 2 * a))
        - math.log((2 + a) / (3 + 2 * a))
        + math.log((0 + a) / (4 + 6 * a))
        - math.log((0 + a) / (3 + 6 * a)),
    ]
    assert got == pytest.approx(want, rel=1e-12)

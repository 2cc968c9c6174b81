"""Robust aggregation: hand-worked cases, robustness to Byzantine rows, and Flower as an oracle.

Flower's ``flwr.server.strategy.aggregate`` takes ``(list of layer arrays,
num_examples)`` pairs; each random update here is split into two layers to
exercise its flattening. The documented differences from Flower (and from the
papers) each have a test of their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import InvalidInputError
from veil.federated._aggregate import (
    bulyan,
    coordinate_median,
    krum,
    krum_scores,
    multikrum,
    norm_bound,
    trimmed_mean,
    validate_update,
    weighted_mean,
)

flower = pytest.importorskip("flwr.server.strategy.aggregate")

LAYER = (3, 4)  # the first Flower "layer" of each update; the rest is the second


def _as_flower(updates, weights):
    cut = LAYER[0] * LAYER[1]
    return [
        ([row[:cut].reshape(LAYER).copy(), row[cut:].copy()], int(count))
        for row, count in zip(updates, weights, strict=True)
    ]


def _flat(layers):
    return np.concatenate([np.ravel(layer) for layer in layers])


def _random(rng, n, dim=40):
    # Offset from the origin so that distances are small next to the norms.
    return rng.normal(5.0, 1.0, size=(n, dim)), rng.integers(1, 100, size=n).astype(np.float64)


# ----------------------------------------------------------------------------- by hand

POINTS = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])


def test_weighted_mean_by_hand():
    updates = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(weighted_mean(updates, np.array([1.0, 3.0])), [2.5, 3.5])


def test_krum_scores_and_choice_by_hand():
    # n = 5, f = 1: each score sums the squared distances to the 2 nearest others.
    np.testing.assert_allclose(krum_scores(POINTS, 1), [1 + 4, 1 + 1, 1 + 4, 1 + 64, 1 + 81])
    np.testing.assert_array_equal(krum(POINTS, np.ones(5), 1), [1.0])


def test_multikrum_by_hand():
    # The three lowest scores are rows 1 (2), 0 and 2 (5 each).
    np.testing.assert_allclose(multikrum(POINTS, np.ones(5), 1, 3), [1.0])
    weights = np.array([1.0, 1.0, 2.0, 1.0, 1.0])
    np.testing.assert_allclose(multikrum(POINTS, weights, 1, 3), [(0 + 1 + 2 * 2) / 4])
    # m defaults to n - f = 4: rows 0, 1, 2 and 10.
    np.testing.assert_allclose(multikrum(POINTS, np.ones(5), 1), [13 / 4])
    np.testing.assert_array_equal(multikrum(POINTS, weights, 1, 1), krum(POINTS, weights, 1))


def test_bulyan_by_hand():
    # n = 7, f = 1: theta = 5 picks, beta = 3. Worked through: the picks are 3 (4 neighbours),
    # 2 (3), 1 (2), then 0 (1 neighbour, tied with 7: the lower index wins), then 110, which
    # in the pool {7, 110, 200} is 90 from 200 while 7 is 103 from 110. The selection's median is
    # 2, and the three values closest to it are 1, 2, 3: the outlier that got through is trimmed.
    values = np.array([[0.0], [1.0], [2.0], [3.0], [7.0], [110.0], [200.0]])
    np.testing.assert_allclose(bulyan(values, np.ones(7), 1), [2.0])
    outcome = flower.aggregate_bulyan(
        _as_flower_1d(values), num_malicious=1, aggregation_rule=flower.aggregate_krum, to_keep=0
    )
    np.testing.assert_allclose(_flat(outcome), [2.0])


def _as_flower_1d(values):
    return [([row.copy()], 1) for row in values]


def test_median_and_trimmed_mean_by_hand():
    updates = np.array([[1.0, 5.0], [2.0, 4.0], [10.0, 0.0]])
    np.testing.assert_array_equal(coordinate_median(updates), [2.0, 4.0])
    np.testing.assert_array_equal(coordinate_median(np.array([[1.0], [2.0], [3.0], [10.0]])), [2.5])
    column = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    np.testing.assert_allclose(trimmed_mean(column, 0.2), [3.0])  # drops 1 and 100
    np.testing.assert_allclose(trimmed_mean(column, 0.39), [3.0])  # int(1.95) = 1 from each end
    np.testing.assert_allclose(trimmed_mean(column, 0.0), [22.0])  # the plain mean


def test_norm_bound_by_hand():
    updates = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped, count = norm_bound(updates, 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    assert count == 1
    assert updates[0, 0] == 3.0  # the input is untouched


def test_norm_bound_never_exceeds_the_bound(seed):
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(50, 7)) * rng.uniform(0.1, 1e6, size=(50, 1))
    clipped, count = norm_bound(updates, 0.1)
    assert count == 50
    assert (np.linalg.norm(clipped, axis=1) <= 0.1).all()
    cosines = np.einsum("ij,ij->i", clipped, updates) / (
        np.linalg.norm(clipped, axis=1) * np.linalg.norm(updates, axis=1)
    )
    np.testing.assert_allclose(cosines, 1.0)


def test_validate_update_reasons():
    good = np.zeros((2, 3), dtype=np.float32)
    assert validate_update(good, (2, 3)) is None
    assert validate_update(good, (2, 3), dtype=np.float32) is None
    assert "float32" in validate_update(good, (2, 3), dtype=np.float64)
    assert "shape (2, 3)" in validate_update(good, (3, 2))
    assert "not a NumPy array" in validate_update([[0.0]], (1, 1))
    assert "not floating point" in validate_update(np.zeros(3, dtype=np.int64), (3,))
    bad = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert validate_update(bad, (4,)) == "1 NaN and 2 infinite values"


# ----------------------------------------------------------------------------- robustness


@pytest.fixture
def attacked(seed):
    """15 honest rows and 3 Byzantine rows of 1e6 (n = 18 >= 4 f + 3 for Bulyan)."""
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(15, 30))
    updates = np.vstack([honest, np.full((3, 30), 1e6)])
    return rng.permutation(updates, axis=0), honest


@pytest.mark.parametrize(
    "rule",
    [
        lambda u: krum(u, np.ones(len(u)), 3),
        lambda u: multikrum(u, np.ones(len(u)), 3),
        lambda u: bulyan(u, np.ones(len(u)), 3),
        coordinate_median,
        lambda u: trimmed_mean(u, 3 / 18),
    ],
    ids=["krum", "multikrum", "bulyan", "median", "trimmed-mean"],
)
def test_robust_rules_stay_within_the_honest_range(rule, attacked):
    updates, honest = attacked
    result = rule(updates)
    assert (result >= honest.min(axis=0)).all()
    assert (result <= honest.max(axis=0)).all()


def test_the_plain_mean_is_dragged_away(attacked):
    updates, honest = attacked
    result = weighted_mean(updates, np.ones(len(updates)))
    assert (result > honest.max(axis=0)).all()


def test_krum_returns_an_honest_row(attacked):
    updates, honest = attacked
    result = krum(updates, np.ones(len(updates)), 3)
    assert any(np.array_equal(result, row) for row in honest)


ORDER_FREE = {
    "krum": lambda u, w: krum(u, w, 2),
    "multikrum": lambda u, w: multikrum(u, w, 2, 5),
    "median": lambda u, w: coordinate_median(u),
    "trimmed-mean": lambda u, w: trimmed_mean(u, 0.2),
    "mean": weighted_mean,
}


@pytest.mark.parametrize("name", [*ORDER_FREE, "bulyan"])
def test_rules_commute_with_shifts(name, seed):
    rule = ORDER_FREE.get(name, lambda u, w: bulyan(u, w, 2))
    rng = np.random.default_rng(seed)
    updates, weights = _random(rng, 11)
    shift = rng.normal(size=updates.shape[1])
    np.testing.assert_allclose(
        rule(updates + shift, weights), rule(updates, weights) + shift, rtol=1e-9
    )


@pytest.mark.parametrize("name", ORDER_FREE)
def test_rules_ignore_row_order(name, seed):
    # Not Bulyan: late in its selection one neighbour is scored, mutual nearest neighbours tie,
    # and the lower row index wins (as in Flower), so row order can change its pick.
    rng = np.random.default_rng(seed)
    updates, weights = _random(rng, 11)
    order = rng.permutation(11)
    np.testing.assert_allclose(
        ORDER_FREE[name](updates[order], weights[order]),
        ORDER_FREE[name](updates, weights),
        rtol=1e-12,
    )


# ----------------------------------------------------------------------------- against Flower


def test_weighted_mean_matches_flower(seed):
    rng = np.random.default_rng(seed)
    updates, weights = _random(rng, 9)
    expected = _flat(flower.aggregate(_as_flower(updates, weights)))
    np.testing.assert_allclose(weighted_mean(updates, weights), expected, rtol=1e-12)


@pytest.mark.parametrize(("n", "f"), [(5, 1), (9, 3), (20, 4), (20, 8)])
def test_krum_and_multikrum_match_flower(n, f, seed):
    rng = np.random.default_rng(seed + n)
    updates, weights = _random(rng, n)
    results = _as_flower(updates, weights)
    chosen = _flat(flower.aggregate_krum(results, num_malicious=f, to_keep=0))
    np.testing.assert_array_equal(krum(updates, weights, f), chosen)
    for m in (1, n - f, n):
        expected = _flat(flower.aggregate_krum(results, num_malicious=f, to_keep=m))
        np.testing.assert_allclose(multikrum(updates, weights, f, m), expected, rtol=1e-12)


@pytest.mark.parametrize(("n", "f"), [(3, 0), (7, 1), (12, 2), (19, 4)])
def test_bulyan_matches_flower(n, f, seed):
    rng = np.random.default_rng(seed + n)
    updates, weights = _random(rng, n)
    expected = flower.aggregate_bulyan(
        _as_flower(updates, weights),
        num_malicious=f,
        aggregation_rule=flower.aggregate_krum,
        to_keep=0,
    )
    np.testing.assert_allclose(bulyan(updates, weights, f), _flat(expected), rtol=1e-12)


@pytest.mark.parametrize("n", [4, 7])
def test_median_and_trimmed_mean_match_flower(n, seed):
    rng = np.random.default_rng(seed + n)
    updates, weights = _random(rng, n)
    results = _as_flower(updates, weights)
    np.testing.assert_array_equal(
        coordinate_median(updates), _flat(flower.aggregate_median(results))
    )
    for beta in (0.0, 0.1, 0.25, 0.49):
        expected = _flat(flower.aggregate_trimmed_avg(results, proportiontocut=beta))
        np.testing.assert_allclose(trimmed_mean(updates, beta), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- the differences


def test_flower_krum_accepts_too_few_clients_and_veil_refuses():
    # n = 4, f = 1 breaks 2 f + 2 < n; Flower quietly scores with max(1, n - f - 2) = 1 neighbour.
    updates = np.array([[0.0], [1.0], [3.0], [7.0]])
    results = [([row.copy()], 1) for row in updates]
    np.testing.assert_array_equal(
        _flat(flower.aggregate_krum(results, num_malicious=1, to_keep=0)), [0.0]
    )
    with pytest.raises(
        InvalidInputError, match=r"n >= 2 f \+ 3 \(Blanchard et al\. 2017: 2f \+ 2 < n\)"
    ):
        krum(updates, np.ones(4), 1)


def test_multikrum_is_weighted_where_the_paper_is_not(seed):
    rng = np.random.default_rng(seed)
    updates, weights = _random(rng, 9)
    chosen = np.argsort(krum_scores(updates, 2))[:5]
    paper = updates[chosen].mean(axis=0)  # Blanchard et al.: the plain mean of the m selected
    weighted = multikrum(updates, weights, 2, 5)
    np.testing.assert_allclose(
        weighted, _flat(flower.aggregate_krum(_as_flower(updates, weights), 2, 5))
    )
    assert not np.allclose(weighted, paper)
    np.testing.assert_allclose(multikrum(updates, np.ones(9), 2, 5), paper)


def test_flower_bulyan_consumes_its_input_and_veil_does_not(seed):
    rng = np.random.default_rng(seed)
    updates, weights = _random(rng, 7)
    results = _as_flower(updates, weights)
    flower.aggregate_bulyan(
        results, num_malicious=1, aggregation_rule=flower.aggregate_krum, to_keep=0
    )
    assert len(results) == 7 - 5  # theta = n - 2 f entries popped from the caller's list
    copy = updates.copy()
    bulyan(updates, weights, 1)
    np.testing.assert_array_equal(updates, copy)


def test_krum_is_exact_far_from_the_origin():
    # Centring before the Gram matrix: rows at 1e8 that differ by 1e-3 still rank correctly.
    updates = 1e8 + np.array([[0.0, 0.0], [1e-3, 0.0], [2e-3, 0.0], [0.0, 5e-3], [9e-3, 9e-3]])
    np.testing.assert_array_equal(krum(updates, np.ones(5), 1), updates[1])


# ----------------------------------------------------------------------------- speed and errors


@pytest.mark.slow
def test_a_hundred_clients_by_a_hundred_thousand_coordinates():
    rng = np.random.default_rng(0)
    updates = rng.random((100, 100_000))
    weights = np.ones(100)
    # At this size the rules run in well under a second (speed is the benchmark's to measure);
    # here they must give a whole, finite update of the right size.
    for result in (krum(updates, weights, 10), bulyan(updates, weights, 20)):
        assert result.shape == (100_000,)
        assert np.isfinite(result).all()
        assert (updates.min(axis=0) <= result).all() and (result <= updates.max(axis=0)).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: krum(np.zeros(3), np.ones(3), 0), "non-empty matrix"),
        (lambda: krum([[0.0]], np.ones(1), 0), "must be a NumPy array"),
        (lambda: krum(np.zeros((0, 2)), np.ones(0), 0), "non-empty matrix"),
        (lambda: krum(np.array([["a"]]), np.ones(1), 0), "real numbers"),
        (lambda: krum(np.array([[np.nan], [0.0], [0.0]]), np.ones(3), 0), r"rows \[0\]"),
        (lambda: krum(np.zeros((3, 2)), np.ones(2), 0), r"shape \(3,\)"),
        (lambda: krum(np.zeros((3, 2)), np.array([1.0, 0.0, 1.0]), 0), "positive"),
        (lambda: krum(np.zeros((3, 2)), np.array([1.0, np.nan, 1.0]), 0), "positive"),
        (lambda: krum(np.zeros((3, 2)), "abc", 0), "one entry per client"),
        (lambda: krum(np.zeros((3, 2)), np.ones(3), -1), "f >= 0"),
        (lambda: krum(np.zeros((3, 2)), np.ones(3), 1.0), "whole number"),
        (lambda: krum(np.zeros((3, 2)), np.ones(3), f=True), "whole number"),
        (lambda: krum(np.zeros((4, 2)), np.ones(4), 1), "n >= 5 clients for f = 1"),
        (lambda: multikrum(np.zeros((5, 2)), np.ones(5), 1, 0), "m >= 1"),
        (lambda: multikrum(np.zeros((5, 2)), np.ones(5), 1, 6), "1 <= m <= 5"),
        (lambda: bulyan(np.zeros((6, 2)), np.ones(6), 1), r"n >= 4 f \+ 3"),
        (lambda: trimmed_mean(np.zeros((3, 2)), 0.5), r"\[0, 0.5\)"),
        (lambda: trimmed_mean(np.zeros((3, 2)), -0.1), r"\[0, 0.5\)"),
        (lambda: trimmed_mean(np.zeros((3, 2)), float("nan")), r"\[0, 0.5\)"),
        (lambda: trimmed_mean(np.zeros((3, 2)), "0.1"), "must be a number"),
        (lambda: norm_bound(np.zeros((3, 2)), 0.0), "bound must be positive"),
        (lambda: norm_bound(np.zeros((3, 2)), float("inf")), "bound must be positive"),
    ],
)
def test_bad_parameters_are_refused(call, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        call()
    assert caught.value.expected and caught.value.got and caught.value.fix

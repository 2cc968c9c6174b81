"""Output shaping and private labels: exact values, calibrated noise, and an empirical DP bound.

Statistical tests fix alpha = 1e-6 each and use exact bounds (Clopper-Pearson, the KS
critical value); with five of them the file fails falsely at most 5e-6 of the time.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from veil._random import SecureRandom
from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.ledger import PLDAccountant, PrivacyEvent, pure_epsilon
from veil.serve._defences import (
    _laplace,
    answer_mechanism,
    perturb,
    private_labels,
    shape,
    temper,
    vote_histogram,
)
from veil.serve._policy import ModelPolicy, Noise

ALPHA = 1e-6
CLASSES = ["a", "b", "c", "d"]


@pytest.fixture
def rng(seed: int) -> SecureRandom:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        return SecureRandom(seed)


def _clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


# ---------------------------------------------------------------- temperature
def test_temperature_is_softmax_of_log_p_over_t():
    p = np.array([[0.8, 0.2], [0.5, 0.5]])
    out = temper(p, 2.0)
    expected = np.sqrt([0.8, 0.2]) / np.sqrt([0.8, 0.2]).sum()
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    np.testing.assert_allclose(out[1], [0.5, 0.5])
    assert temper(p, 1.0) is not None and np.array_equal(temper(p, 1.0), p)
    sharp = temper(p, 0.5)
    assert sharp[0, 0] > 0.8 and sharp.argmax(axis=1)[0] == 0
    # zeros stay zeros, and the row stays a distribution
    z = temper(np.array([[0.0, 0.3, 0.7]]), 3.0)
    assert z[0, 0] == 0.0 and math.isclose(z.sum(), 1.0)


def test_temperature_flattens_and_never_moves_the_argmax():
    p = np.random.default_rng(0).dirichlet(np.ones(6), size=200)
    entropy = lambda q: -(q * np.log(q)).sum(axis=1)  # noqa: E731
    for t in (1.5, 4.0, 50.0):
        flat = temper(p, t)
        assert np.array_equal(flat.argmax(axis=1), p.argmax(axis=1))
        assert np.all(entropy(flat) >= entropy(p) - 1e-12)


# ---------------------------------------------------------------- noise
def test_laplace_draws_follow_laplace_of_their_scale(rng):
    # Calibration on a zero signal: the draws alone, against Laplace(0, b) by KS (alpha 1e-6).
    b = 0.1
    draws = _laplace(rng, 20_000, b)
    result = stats.kstest(draws, stats.laplace(scale=b).cdf)
    assert result.pvalue > ALPHA, f"Laplace draws off their scale (type I error <= {ALPHA})"
    wrong = stats.kstest(draws, stats.laplace(scale=1.2 * b).cdf)
    assert wrong.pvalue < ALPHA  # the test has the power to see a 20% error in the scale


def test_perturb_keeps_rows_distributions_and_moves_them_by_the_declared_scale(rng):
    p = np.tile([[0.5, 0.3, 0.2]], (5_000, 1))
    for kind in ("laplace", "gaussian"):
        out = perturb(p, Noise(kind, 0.02), rng)
        assert np.all(out >= 0) and np.all(out <= 1)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
        # Small noise, no clipping: the shift of a coordinate is its noise minus the row's
        # share of the noise sum, whose spread is about the declared scale.
        spread = np.std(out[:, 0] - 0.5)
        sd = 0.02 * (math.sqrt(2) if kind == "laplace" else 1.0)
        assert 0.5 * sd < spread < 1.2 * sd, (kind, spread)


class _Fixed:
    """A random source that returns one value (to force the all-clipped case)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def normal(self, count: int, std: float = 1.0) -> np.ndarray:
        del std
        return np.full(count, self.value, dtype=np.float32)


def test_a_row_clipped_to_zeros_becomes_uniform():
    out = perturb(np.array([[0.6, 0.4, 0.0]]), Noise("gaussian", 1.0), _Fixed(-5.0))  # type: ignore[arg-type]
    np.testing.assert_allclose(out, [[1 / 3, 1 / 3, 1 / 3]])


# ---------------------------------------------------------------- shaping
P = np.array([[0.1, 0.6, 0.25, 0.05], [0.4, 0.1, 0.1, 0.4]])


def test_label_only_says_the_argmax_and_nothing_else():
    answers, index = shape(P, CLASSES, ModelPolicy(output="label", decimals=2))
    assert answers == [{"label": "b"}, {"label": "a"}]  # a tie goes to the first class
    assert index.tolist() == [1, 0]


def test_top_k_reports_k_classes_in_order_unrenormalised_and_rounded():
    answers, index = shape(P, CLASSES, ModelPolicy(output="top_k", top_k=2, decimals=1))
    assert answers[0] == {
        "label": "b",
        "top": [{"label": "b", "probability": 0.6}, {"label": "c", "probability": 0.2}],
    }
    assert [t["label"] for t in answers[1]["top"]] == ["a", "d"]
    assert index.tolist() == [1, 0]
    wide, _ = shape(P, CLASSES, ModelPolicy(output="top_k", top_k=10))
    assert len(wide[0]["top"]) == 4  # capped at the model's classes
    assert math.isclose(sum(t["probability"] for t in wide[0]["top"]), 1.0)


def test_probabilities_are_tempered_rounded_and_agree_with_their_label():
    policy = ModelPolicy(output="probabilities", temperature=2.0, decimals=3)
    answers, index = shape(P, CLASSES, policy)
    expected = temper(P, 2.0)
    for answer, row, i in zip(answers, expected, index, strict=True):
        assert list(answer["probabilities"]) == CLASSES
        np.testing.assert_allclose(list(answer["probabilities"].values()), np.round(row, 3))
        assert answer["label"] == CLASSES[int(i)] == CLASSES[int(row.argmax())]


def test_noisy_labels_follow_the_noisy_probabilities(rng):
    policy = ModelPolicy(output="probabilities", noise=Noise("laplace", 0.3))
    answers, index = shape(np.tile(P[:1], (200, 1)), CLASSES, policy, rng)
    for answer, i in zip(answers, index, strict=True):
        probs = answer["probabilities"]
        assert answer["label"] == max(probs, key=probs.get) == CLASSES[int(i)]
    assert len(set(index.tolist())) > 1  # noise of 0.3 does move labels


def test_shape_refuses_what_it_cannot_shape():
    with pytest.raises(InvalidInputError):
        shape(P, CLASSES[:3], ModelPolicy())
    with pytest.raises(InvalidInputError):
        shape(P, CLASSES, ModelPolicy(output="private_label", epsilon=1.0))
    with pytest.raises(InvalidInputError):
        shape(np.array([[np.nan, 1.0, 0, 0]]), CLASSES, ModelPolicy())


# ---------------------------------------------------------------- private labels
def test_vote_histogram_counts_each_shards_vote():
    votes = vote_histogram([[0, 2, 1], [0, 2, 2], [1, 2, 0]], 3)
    assert votes.tolist() == [[2, 1, 0], [0, 0, 3], [1, 1, 1]]
    with pytest.raises(InvalidInputError):
        vote_histogram([[0, 3]], 3)
    with pytest.raises(InvalidInputError):
        vote_histogram([0, 1], 3)


def test_each_answer_is_charged_as_a_pure_epsilon_laplace_event():
    mechanism = answer_mechanism(0.5)
    assert mechanism.name == "laplace"
    assert mechanism.parameters == {"scale": 4.0, "sensitivity": 2.0}
    assert math.isclose(pure_epsilon(mechanism.dp_event), 0.5)
    event = PrivacyEvent("3 answers", (mechanism,) * 3, operation="prediction")
    assert PLDAccountant().epsilon([event.dp_event], delta=0.0) == pytest.approx(1.5, rel=1e-3)


@pytest.mark.slow
def test_private_label_accuracy_matches_laplace_of_scale_two_over_epsilon():
    # Two classes with a vote margin d: the answer is class 0 when L0 - L1 > -d, with L iid
    # Laplace(b); the difference's CDF gives P = 1 - exp(-d/b) (1 + d / (2b)) / 2 exactly.
    epsilon, margin, n = 1.0, 2, 20_000
    b = 2.0 / epsilon
    expected = 1 - math.exp(-margin / b) * (1 + margin / (2 * b)) / 2
    answers = private_labels(np.tile([[margin, 0]], (n, 1)), epsilon)
    low, high = _clopper_pearson(int((answers == 0).sum()), n)
    assert low <= expected <= high, (
        f"P(majority) {expected:.4f} outside [{low:.4f}, {high:.4f}] (type I error <= {ALPHA})"
    )


@pytest.mark.slow
def test_private_label_empirical_epsilon_stays_under_the_claim():
    # Neighbours: one person's shard moves its vote from class 0 to class 1 (L1 distance 2).
    epsilon, n = 1.0, 20_000
    before = private_labels(np.tile([[3, 2, 0]], (n, 1)), epsilon)
    after = private_labels(np.tile([[2, 3, 0]], (n, 1)), epsilon)
    k_before, k_after = int((before == 0).sum()), int((after == 0).sum())
    low_before, _ = _clopper_pearson(k_before, n)
    _, high_after = _clopper_pearson(k_after, n)
    lower_bound = math.log(low_before / high_after)
    assert lower_bound <= epsilon, (
        f"empirical epsilon >= {lower_bound:.3f} (type I error <= {2 * ALPHA})"
    )
    assert k_before > k_after  # the answers do depend on the votes

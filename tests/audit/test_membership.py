"""Membership inference: attacks separate a memorising model and stay at chance on an unseen one.

The chance test is exact in design: the "members" are a random half of points
the target never saw, so every attack's scores are independent of the labels
and the Mann-Whitney null holds; it fails with probability <= ALPHA per attack
(normal approximation of the U statistic, n = 1,000 per side).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from veil.audit import (
    MIA_ATTACKS,
    as_classifier,
    membership_inference,
    score_attack,
    train_references,
)
from veil.errors import InvalidInputError

pytestmark = pytest.mark.slow  # reference models trained per attack; statistical

ALPHA = 1e-6
FAST = ("threshold", "shadow", "lira-online", "lira-offline", "rmia-online", "rmia-offline")


@pytest.fixture(scope="module")
def adult(adult_xy):
    x, y = adult_xy
    rng = np.random.default_rng(7)
    take = rng.choice(len(y), size=4000, replace=False)
    return x[take], y[take]


def forest(x, y, seed):
    return as_classifier(RandomForestClassifier(n_estimators=25, random_state=seed).fit(x, y))


def test_a_memorising_model_is_caught_by_every_attack(adult, seed):
    x, y = adult[0][:2000], np.random.default_rng(seed).integers(0, 2, 2000)  # random labels
    members = np.random.default_rng(seed + 1).random(2000) < 0.5
    target = forest(x[members], y[members], seed)
    results, refs = membership_inference(
        target, x, y, members, trainer=forest, references=8, attacks=MIA_ATTACKS, seed=seed
    )
    assert refs is not None and refs.count == 8
    by = {r.attack: r for r in results}
    # Random labels can only be memorised: a member's label is 'known', a non-member's a guess.
    for name in (
        "threshold",
        "lira-online",
        "lira-offline",
        "rmia-online",
        "rmia-offline",
        "shadow",
    ):
        assert by[name].auc_ci[0] > 0.7, (name, by[name].auc)
    # ~1,000 non-members allow ~10 false positives at 1% (reported), ~1 at 0.1% (not).
    assert by["lira-online"].tpr_at_fpr["1%"] is not None
    assert by["lira-online"].tpr_at_fpr["0.1%"] is None
    assert by["label-only"].auc > 0.6
    assert by["lira-online"].settings["mode"] == "online"
    assert by["lira-offline"].settings["models_per_point"] == 4
    # A model without a privacy claim: a lower bound well above zero is the expected finding.
    assert max(r.epsilon.epsilon_lower for r in results) > 1.0


def test_a_model_that_never_saw_the_points_stays_at_chance(adult, seed):
    x, y = adult
    outside, points = slice(0, 2000), slice(2000, 4000)
    target = forest(x[outside], y[outside], seed)  # trained on other people
    members = np.zeros(2000, bool)
    members[np.random.default_rng(seed).permutation(2000)[:1000]] = True  # labels, not training
    results, _ = membership_inference(
        target, x[points], y[points], members, trainer=forest, references=4, attacks=FAST, seed=seed
    )
    for r in results:
        assert r.auc_p_value >= ALPHA, f"{r.attack}: AUC {r.auc:.3f} (type I error <= {ALPHA})"


def test_reference_models_are_balanced_and_independent_of_other_draws(adult, seed):
    x, y = adult[0][:400], adult[1][:400]
    refs = train_references(forest, x, y, 6, seed=seed)
    assert refs.log_proba.shape == (6, 400, 2)
    assert (refs.inclusion.sum(axis=0) == 3).all()  # every point in exactly half the models
    # A target membership drawn from the same seed must not line up with the inclusion.
    other = np.random.default_rng(seed).random(400) < 0.5
    for row in refs.inclusion:
        assert abs(np.corrcoef(row, other)[0, 1]) < 0.3


def test_bad_requests_are_refused(adult):
    x, y = adult[0][:100], adult[1][:100]
    with pytest.raises(InvalidInputError, match="even"):
        train_references(forest, x, y, 3)
    target = forest(x, y, 0)
    with pytest.raises(InvalidInputError, match="reference models"):
        membership_inference(target, x, y, np.arange(100) < 50, attacks=("lira-online",))
    with pytest.raises(InvalidInputError, match="unknown membership attack"):
        membership_inference(target, x, y, np.arange(100) < 50, attacks=("magic",))


def test_metrics_of_a_perfect_and_a_useless_attack(seed):
    truth = np.arange(20_000) < 10_000
    perfect = score_attack("perfect", truth.astype(float), truth)
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr["0.1%"] == 1.0 and perfect.advantage == 1.0
    assert perfect.tpr_at_fpr["0.01%"] is None  # 10,000 non-members allow 1 false positive
    assert any("0.01%" in n for n in perfect.notes)
    assert len(perfect.roc["fpr"]) <= 400
    useless = score_attack("noise", np.random.default_rng(seed).random(20_000), truth)
    assert useless.auc_p_value >= ALPHA, f"AUC {useless.auc} of pure noise (type I <= {ALPHA})"
    assert useless.tpr_at_fpr["1%"] < 0.03
    assert useless.tpr_at_fpr_p_value["0.1%"] >= ALPHA, "blind attack flagged (type I <= 1e-6)"
    assert perfect.tpr_at_fpr_p_value["0.1%"] < ALPHA
    with pytest.raises(InvalidInputError, match="both members and non-members"):
        score_attack("x", [0.1, 0.2], [True, True])

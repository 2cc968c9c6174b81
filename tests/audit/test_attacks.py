"""Attribute inference, model inversion, extraction, fairness and the canary audit, on real models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from veil.audit import (
    as_classifier,
    attribute_inference,
    canary_audit,
    extraction_curve,
    fairness_metrics,
    invert_classes,
)
from veil.errors import InvalidInputError
from veil.train import DPConfig, build_model, plan_training, train

pytestmark = (
    pytest.mark.slow
)  # real models trained and attacked; statistical (make test-fast skips it)

ALPHA = 1e-6


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=n)
    value = rng.normal(size=n)
    label = ((group == "a") ^ (value > 0)).astype(int)
    flip = rng.random(n) < 0.05
    return pd.DataFrame({"group": group, "value": value}), np.where(flip, 1 - label, label)


def _encode(frame):
    return np.column_stack(
        [
            (frame["group"] == "a").astype(float),
            (frame["group"] == "b").astype(float),
            frame["value"],
        ]
    )


def test_attribute_inference_reports_what_the_model_adds_over_the_baseline(seed):
    frame, y = _frame(3000, seed)
    members = np.arange(3000) < 1500
    model = RandomForestClassifier(n_estimators=50, random_state=seed).fit(
        _encode(frame[members]), y[members]
    )
    result = attribute_inference(
        as_classifier(model), frame, y, members, "group", encode=_encode, seed=seed
    )
    # The label and 'value' determine 'group' here: the model reveals it, and so does public data.
    assert result.attack_accuracy_members > 0.85
    assert result.baseline_accuracy_members > 0.85
    assert abs(result.majority_accuracy - 0.5) < 0.05
    assert result.members == 1500 and result.non_members == 750  # half the others are public
    assert set(result.to_dict()) >= {
        "attack_accuracy",
        "baseline_accuracy",
        "advantage_over_baseline_members",
    }
    # Records without the value (missing, as in Adult's workclass and occupation) are left out.
    holes = frame.assign(group=frame["group"].where(np.arange(3000) % 10 != 0))
    partial = attribute_inference(
        as_classifier(model), holes, y, members, "group", encode=_encode, seed=seed
    )
    assert partial.members == 1350
    with pytest.raises(InvalidInputError, match="no column"):
        attribute_inference(as_classifier(model), frame, y, members, "nope", encode=_encode)
    with pytest.raises(InvalidInputError, match="single value"):
        attribute_inference(
            as_classifier(model), frame.assign(group="a"), y, members, "group", encode=_encode
        )


def test_inversion_recovers_each_mnist_class_from_a_logistic_regression(mnist, mnist_logreg):
    x, y = mnist
    result = invert_classes(mnist_logreg, x[:2000].reshape(-1, 1, 28, 28), y[:2000], 10)
    assert result.reconstructions.shape == (10, 1, 28, 28)
    assert result.reconstructions.min() >= -1 and result.reconstructions.max() <= 1
    assert result.identification_rate >= 0.8 > result.chance
    assert min(result.confidence) > 0.9
    assert all(p.requires_grad for p in mnist_logreg.parameters())  # the model is left as it was
    with pytest.raises(InvalidInputError, match="differentiable"):
        invert_classes(LogisticRegression(), x[:10], y[:10], 10)


def test_extraction_fidelity_grows_with_queries_and_defences_are_reported(mnist, mnist_logreg):
    x, y = mnist
    target = as_classifier(mnist_logreg)
    result = extraction_curve(
        target, x[2000:3000], x[3000:4000], y[3000:4000], budgets=(30, 1000), seed=0
    )
    assert result.budgets == [30, 1000]
    assert set(result.fidelity) == {"none", "top1", "round1", "noise"}
    assert result.fidelity["none"][1] > 0.85
    assert result.fidelity["none"][1] > result.fidelity["none"][0]
    assert 0.7 < result.victim_accuracy < 1
    with pytest.raises(InvalidInputError, match="defence"):
        extraction_curve(target, x[:10], x[:10], y[:10], defences=("magic",))


def test_fairness_matches_a_hand_computation():
    truth = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    groups = np.array(["f", "f", "f", "f", "m", "m", "m", "m"])
    result = fairness_metrics(truth, pred, groups, attribute="sex", positive_class=">50K")
    assert result.demographic_parity_difference == pytest.approx(0.75 - 0.25)
    assert result.equal_opportunity_difference == pytest.approx(1.0 - 0.5)
    assert result.equalized_odds_difference == pytest.approx(0.5)  # max(TPR gap 0.5, FPR gap 0.5)
    assert result.by_group["f"]["selection_rate"] == pytest.approx(0.75)
    with pytest.raises(InvalidInputError, match="binary"):
        fairness_metrics([0, 2], [0, 1], ["a", "b"], attribute="g")


def test_canary_audit_catches_a_memorising_model_and_respects_a_dp_one(adult_xy, seed):
    x, y = adult_xy
    rng = np.random.default_rng(seed)
    take = rng.choice(len(y), size=3000, replace=False)
    x, y = x[take], y[take]

    trained_on: list[int] = []

    def forest(xs, ys):
        trained_on.append(len(ys))
        return as_classifier(RandomForestClassifier(n_estimators=30, random_state=seed).fit(xs, ys))

    leaky = canary_audit(
        forest,
        x[:2000],
        y[:2000],
        x[2000:2400],
        y[2000:2400],
        n_classes=2,
        claimed_epsilon=math.inf,
        alpha=ALPHA,
        seed=seed,
    )
    assert leaky.best.epsilon_lower > 1.0
    # Every held-out point is a canary; the model trained once, on the 2,000 points and exactly
    # the canaries reported as inserted; each went in by a fair coin: Binomial(400, 1/2).
    assert leaky.canaries == 400
    assert trained_on == [2000 + leaky.inserted]
    low, high = scipy.stats.binom.interval(1 - ALPHA, 400, 0.5)
    assert low <= leaky.inserted <= high, f"{leaky.inserted} of 400 (type I error <= {ALPHA})"

    epsilon = 1.0
    config = DPConfig(epochs=2, batch_size=200, epsilon=epsilon, delta=1e-5)

    def dp_logreg(xs, ys):
        net = build_model({"kind": "logreg", "input_shape": [xs.shape[1]], "n_classes": 2})
        plan = plan_training(config, len(ys))
        train(net, torch.from_numpy(xs), torch.from_numpy(ys), plan, n_classes=2)
        return as_classifier(net)

    private = canary_audit(
        dp_logreg,
        x[:2000],
        y[:2000],
        x[2000:2400],
        y[2000:2400],
        n_classes=2,
        claimed_epsilon=epsilon,
        alpha=ALPHA,
        seed=seed,
    )
    assert private.consistent, f"{private.to_dict()} (type I error <= {ALPHA})"
    assert private.to_dict()["consistent_with_claim"] is True
    with pytest.raises(InvalidInputError, match="too few canaries"):
        canary_audit(forest, x, y, x[:5], y[:5], n_classes=2, claimed_epsilon=1.0)

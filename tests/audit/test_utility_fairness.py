"""What a new user's audit got wrong: a weak attribute baseline, verdicts from tiny groups, no utility check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from veil.audit import AuditReport, attribute_inference, fairness_metrics
from veil.audit._run import _utility_figures
from veil.audit._targets import as_classifier


def _encode(frame):
    return np.column_stack(
        [
            (frame["group"] == "a").astype(float),
            (frame["group"] == "b").astype(float),
            frame["value"],
        ]
    )


@pytest.mark.slow  # an attribute-inference attack fitted on 2,000 rows
def test_attribute_baseline_is_never_below_guessing_the_most_common_value(seed):
    # 'group' is independent of everything and 90/10: a classifier fitted on noise falls below
    # always guessing 'a', and a baseline that weak credits the model with leakage it lacks.
    rng = np.random.default_rng(seed)
    n = 2000
    frame = pd.DataFrame(
        {"group": np.where(rng.random(n) < 0.9, "a", "b"), "value": rng.normal(size=n)}
    )
    y = rng.integers(0, 2, n)
    members = np.arange(n) < n // 2
    model = RandomForestClassifier(n_estimators=20, random_state=seed).fit(
        _encode(frame[members]), y[members]
    )
    result = attribute_inference(
        as_classifier(model), frame, y, members, "group", encode=_encode, seed=seed
    )
    overall = (
        result.baseline_accuracy_members * result.members
        + result.baseline_accuracy_non_members * result.non_members
    ) / (result.members + result.non_members)
    assert overall >= result.majority_accuracy - 1e-12
    assert result.to_dict()["baseline_accuracy"]["kind"] == result.baseline_kind


def _report(**parts):
    return AuditReport(model="m", card={}, train="t", test="u", settings={}, **parts)


def test_fairness_gaps_from_tiny_groups_are_not_judged():
    # Two groups of 6 and 8 people with opposite predictions: a gap of 1.0 that says nothing.
    rng = np.random.default_rng(0)
    big = 400
    truth = np.concatenate([rng.integers(0, 2, big), [1, 0, 1, 0, 1, 0], [1, 0] * 4])
    pred = np.concatenate([truth[:big], np.ones(6, int), np.zeros(8, int)])
    groups = np.array(["White"] * big + ["Other"] * 6 + ["Amer-Indian"] * 8)
    result = fairness_metrics(truth, pred, groups, attribute="race")
    assert result.demographic_parity_difference == pytest.approx(1.0)
    assert sorted(result.too_small) == ["Amer-Indian", "Other"]
    assert result.by_group["Other"]["count"] == 6
    low, high = result.by_group["Other"]["ci95"]["selection_rate"]
    assert low < 0.6 and high == 1.0  # 6 of 6 selected: a wide interval
    assert result.judged_gap is None  # one group is large enough: nothing to compare
    verdict = next(v for v in _report(fairness=result).verdicts() if v.attack == "fairness")
    assert verdict.level == "info"
    assert "too small to judge" in verdict.explanation
    assert "Other (6)" in verdict.explanation


def test_a_real_gap_between_large_groups_is_flagged():
    rng = np.random.default_rng(1)
    n = 600
    truth = rng.integers(0, 2, 2 * n)
    pred = np.concatenate([rng.random(n) < 0.7, rng.random(n) < 0.2]).astype(int)
    groups = np.array(["f"] * n + ["m"] * n)
    result = fairness_metrics(truth, pred, groups, attribute="sex")
    assert result.too_small == []
    assert result.significant
    assert result.judged_demographic_parity_difference == pytest.approx(
        result.demographic_parity_difference
    )
    verdict = next(v for v in _report(fairness=result).verdicts() if v.attack == "fairness")
    assert verdict.level == "warn"
    assert "beyond sampling noise" in verdict.headline


def test_a_model_that_predicts_the_majority_class_has_no_utility():
    rng = np.random.default_rng(2)
    truth = (rng.random(667) < 0.3).astype(np.int64)  # 70% of rows in class 0
    always = np.zeros(667, dtype=np.int64)
    figures = _utility_figures(truth, always, ["<=50K", ">50K"])
    assert figures["useful"] is False
    assert figures["top_prediction_share"] == 1.0
    assert figures["majority_class"] == "<=50K"
    verdict = next(v for v in _report(utility=figures).verdicts() if v.attack == "utility")
    assert verdict.level == "warn"
    assert verdict.headline.startswith("no utility")
    # A model that is right 90% of the time on the same rows is useful.
    good = np.where(rng.random(667) < 0.9, truth, 1 - truth)
    assert _utility_figures(truth, good, ["<=50K", ">50K"])["useful"] is True

"""The forgetting check (offline LiRA on erased rows vs non-members), on real models and data.

Statistical tests here run at alpha = 1e-4 (two of them: the suite flakes at most
2e-4 from them); the AUC interval is Hanley-McNeil's normal approximation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier

from veil.audit import as_classifier
from veil.errors import InvalidInputError
from veil.governance._forgetting import (
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    check_forgetting,
    percentile_among,
)

ALPHA = 1e-4


def _trainer(x: Any, y: Any, seed: int) -> Any:
    # Fully grown trees memorise their training rows: a strong membership signal.
    model = RandomForestClassifier(n_estimators=30, random_state=seed, n_jobs=1)
    return as_classifier(model.fit(x, y))


@pytest.fixture
def split(seed: int) -> dict[str, Any]:
    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    erased, non, rest = order[:150], order[150:450], order[450:]
    return {"x": x, "y": y, "erased": erased, "non": non, "rest": rest}


def _check(split: dict[str, Any], before: Any, after: Any, people: int, seed: int) -> Any:
    x, y = split["x"], split["y"]
    return check_forgetting(
        before,
        after,
        _trainer,
        population_x=x[split["rest"]],
        population_y=y[split["rest"]],
        erased_x=x[split["erased"][:people]],
        erased_y=y[split["erased"][:people]],
        erased_people=people,
        non_x=x[split["non"]],
        non_y=y[split["non"]],
        references=4,
        alpha=ALPHA,
        seed=seed,
    )


@pytest.mark.slow
def test_remembered_before_and_forgotten_after(split: dict[str, Any], seed: int) -> None:
    x, y = split["x"], split["y"]
    with_them = np.concatenate([split["rest"], split["erased"]])
    before = _trainer(x[with_them], y[with_them], seed)
    after = _trainer(x[split["rest"]], y[split["rest"]], seed)
    check, refs = _check(split, before, after, people=150, seed=seed)
    assert refs.count == 4
    assert not refs.inclusion.any()  # every scored row is "out" for every reference
    assert check.before.verdict == DISTINGUISHABLE, (
        f"trees trained on the erased rows should remember them: {check.before} "
        f"(type I error of this check <= {ALPHA})"
    )
    assert check.before.auc is not None
    assert check.before.auc > 0.6
    assert check.after.verdict == INDISTINGUISHABLE, (
        f"a model that never saw the rows scored them unlike non-members: {check.after} "
        f"(false-failure rate <= {ALPHA})"
    )
    assert check.verdict == INDISTINGUISHABLE
    body = check.to_dict()
    assert body["attack"] == "lira-offline"
    assert body["before"]["auc"] == check.before.auc
    assert body["erased_people"] == 150


@pytest.mark.slow
def test_one_person_reports_a_percentile_not_an_auc(split: dict[str, Any], seed: int) -> None:
    x, y = split["x"], split["y"]
    model = _trainer(x[split["rest"]], y[split["rest"]], seed)
    check, _ = _check(split, model, model, people=1, seed=seed)
    assert check.before.auc is None
    assert check.after.auc_ci95 is None
    assert 0.0 <= check.after.percentile <= 100.0
    assert any("AUC is not meaningful" in n for n in check.notes)


def test_percentile_counts_ties_half() -> None:
    got = percentile_among([0.0, 1.0, 5.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(got, [0.0, 12.5, 100.0, 100.0])


def test_nothing_erased_is_refused(split: dict[str, Any], seed: int) -> None:
    x, y = split["x"], split["y"]
    model = _trainer(x[:50], y[:50], seed)
    with pytest.raises(InvalidInputError, match="no erased rows"):
        check_forgetting(
            model,
            model,
            _trainer,
            population_x=x,
            population_y=y,
            erased_x=x[:0],
            erased_y=y[:0],
            erased_people=0,
            non_x=x[:10],
            non_y=y[:10],
        )

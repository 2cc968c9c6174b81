"""Fairness of a binary classifier across a sensitive attribute (fairlearn).

An auditor who reviews a model's privacy asks about its fairness in the same
review, and DP training is known to cost under-represented groups more
accuracy (Bagdasaryan et al. 2019). The metrics come from fairlearn:

* demographic parity difference: the largest gap in selection rate
  ``P(pred = 1 | group)`` between groups;
* equalised odds difference: the larger of the gaps in true- and
  false-positive rates;
* equal opportunity difference: the gap in true-positive rates.

The positive class is the model's second class (e.g. ``>50K`` for Adult).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, require

__all__ = ["FairnessResult", "fairness_metrics"]


@dataclass
class FairnessResult:
    """fairlearn's group metrics for one sensitive attribute."""

    attribute: str
    demographic_parity_difference: float
    equalized_odds_difference: float
    equal_opportunity_difference: float
    by_group: dict[str, dict[str, float]]
    positive_class: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "positive_class": self.positive_class,
            "demographic_parity_difference": self.demographic_parity_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
            "equal_opportunity_difference": self.equal_opportunity_difference,
            "by_group": self.by_group,
        }


def fairness_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    attribute: str,
    positive_class: str = "1",
) -> FairnessResult:
    """fairlearn's parity metrics of predictions ``y_pred`` (0/1) across ``groups``."""
    fm = require("fairlearn.metrics", extra="audit", purpose="fairness metrics")
    truth = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    g = np.asarray(groups).astype(str)
    if set(np.unique(truth)) - {0, 1} or set(np.unique(pred)) - {0, 1}:
        raise InvalidInputError(
            "fairness metrics here are for binary classifiers",
            expected="labels and predictions in {0, 1}",
            got=f"classes {sorted(set(np.unique(truth)) | set(np.unique(pred)))[:10]}",
            fix="leave 'fairness' out of --attacks for a multi-class model",
        )
    frame = fm.MetricFrame(
        metrics={
            "selection_rate": fm.selection_rate,
            "true_positive_rate": fm.true_positive_rate,
            "false_positive_rate": fm.false_positive_rate,
            "count": fm.count,
        },
        y_true=truth,
        y_pred=pred,
        sensitive_features=g,
    )
    by_group = {
        str(k): {m: float(v) for m, v in row.items()} for k, row in frame.by_group.iterrows()
    }
    return FairnessResult(
        attribute=attribute,
        demographic_parity_difference=float(
            fm.demographic_parity_difference(truth, pred, sensitive_features=g)
        ),
        equalized_odds_difference=float(
            fm.equalized_odds_difference(truth, pred, sensitive_features=g)
        ),
        equal_opportunity_difference=float(
            fm.equal_opportunity_difference(truth, pred, sensitive_features=g)
        ),
        by_group=by_group,
        positive_class=positive_class,
    )

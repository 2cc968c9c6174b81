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

A gap between two small groups is mostly sampling noise: with 6 people in a
group, one prediction moves its selection rate by 17 points. Each group
therefore carries its counts and a Clopper-Pearson 95% interval for each rate,
a group with fewer than :data:`MIN_GROUP` people (or fewer than
:data:`MIN_OUTCOME` positives or negatives for a true- or false-positive rate)
is marked too small to judge, and the *judged* gaps are taken over the groups
large enough to judge. ``significant`` says whether the judged gap persists at
the interval ends: the largest lower bound of a rate exceeds the smallest upper
bound of the same rate in another group (simultaneous over the groups by
Bonferroni).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.audit._stats import clopper_pearson
from veil.errors import InvalidInputError, require

__all__ = ["MIN_GROUP", "MIN_OUTCOME", "FairnessResult", "fairness_metrics"]

#: Fewer people than this in a group: its rates are shown but not judged.
MIN_GROUP = 30
#: Fewer positives (negatives) than this: the group's TPR (FPR) is not judged.
MIN_OUTCOME = 10
_ALPHA = 0.05


@dataclass(frozen=True)
class FairnessResult:
    """fairlearn's group metrics for one sensitive attribute."""

    attribute: str
    demographic_parity_difference: float
    equalized_odds_difference: float
    equal_opportunity_difference: float
    by_group: dict[str, dict[str, Any]]
    positive_class: str
    too_small: list[str]
    judged_demographic_parity_difference: float | None
    judged_equalized_odds_difference: float | None
    significant: bool

    @property
    def judged_gap(self) -> float | None:
        """The larger judged gap (parity or odds), or None when fewer than two groups count."""
        gaps = [
            g
            for g in (
                self.judged_demographic_parity_difference,
                self.judged_equalized_odds_difference,
            )
            if g is not None
        ]
        return max(gaps) if gaps else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "positive_class": self.positive_class,
            "demographic_parity_difference": self.demographic_parity_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
            "equal_opportunity_difference": self.equal_opportunity_difference,
            "by_group": self.by_group,
            "too_small": self.too_small,
            "min_group": MIN_GROUP,
            "judged": {
                "demographic_parity_difference": self.judged_demographic_parity_difference,
                "equalized_odds_difference": self.judged_equalized_odds_difference,
                "significant": self.significant,
            },
        }


def _interval(k: int, n: int, alpha: float) -> list[float] | None:
    return None if n == 0 else list(clopper_pearson(k, n, alpha))


def _group_stats(truth: npt.NDArray[np.int64], pred: npt.NDArray[np.int64]) -> dict[str, Any]:
    n, pos = len(truth), int(truth.sum())
    neg = n - pos
    selected = int(pred.sum())
    tp = int((pred[truth == 1] == 1).sum())
    fp = int((pred[truth == 0] == 1).sum())
    return {
        "count": n,
        "positives": pos,
        "negatives": neg,
        "selection_rate": selected / n,
        "true_positive_rate": tp / pos if pos else float("nan"),
        "false_positive_rate": fp / neg if neg else float("nan"),
        "_k": {
            "selection_rate": (selected, n),
            "true_positive_rate": (tp, pos),
            "false_positive_rate": (fp, neg),
        },
    }


def _spread(values: list[float]) -> float | None:
    return max(values) - min(values) if len(values) >= 2 else None  # noqa: PLR2004


def _separated(intervals: list[list[float]]) -> bool:
    """Some group's lower bound lies above another group's upper bound."""
    return len(intervals) >= 2 and max(lo for lo, _ in intervals) > min(hi for _, hi in intervals)  # noqa: PLR2004


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
    names = sorted(set(g))
    # Bonferroni over the groups and the three rates: every interval holds at once w.p. 95%.
    alpha = _ALPHA / max(1, 3 * len(names))
    by_group: dict[str, dict[str, Any]] = {}
    judged: dict[str, list[tuple[float, list[float]]]] = {
        "selection_rate": [],
        "true_positive_rate": [],
        "false_positive_rate": [],
    }
    too_small = []
    for name in names:
        mask = g == name
        row = _group_stats(truth[mask], pred[mask])
        counts = row.pop("_k")
        row["ci95"] = {m: _interval(k, n, _ALPHA) for m, (k, n) in counts.items()}
        enough = {
            "selection_rate": row["count"] >= MIN_GROUP,
            "true_positive_rate": row["count"] >= MIN_GROUP and row["positives"] >= MIN_OUTCOME,
            "false_positive_rate": row["count"] >= MIN_GROUP and row["negatives"] >= MIN_OUTCOME,
        }
        row["too_small"] = not enough["selection_rate"]
        if row["too_small"]:
            too_small.append(name)
        for metric, ok in enough.items():
            if ok:
                k, n = counts[metric]
                judged[metric].append((k / n, list(clopper_pearson(k, n, alpha))))
        by_group[name] = row
    parity = _spread([v for v, _ in judged["selection_rate"]])
    tpr = _spread([v for v, _ in judged["true_positive_rate"]])
    fpr = _spread([v for v, _ in judged["false_positive_rate"]])
    odds = max((x for x in (tpr, fpr) if x is not None), default=None)
    significant = any(_separated([ci for _, ci in judged[m]]) for m in judged)
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
        too_small=too_small,
        judged_demographic_parity_difference=parity,
        judged_equalized_odds_difference=odds,
        significant=significant,
    )

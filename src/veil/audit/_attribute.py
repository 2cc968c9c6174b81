"""Attribute inference: recover a record's sensitive value from the model's answers.

The attacker knows a record except one sensitive attribute (for example
marital status), and its label (the model's task). For every possible value
``v`` it fills the record in with ``v``, asks the model, and guesses the value
under which the model is most confident in the known label, weighted by the
value's frequency (Fredrikson et al. 2014; Yeom et al. 2018's attribute
attack). The **baseline** uses no model at all: a classifier that predicts the
attribute from the other columns and the label, trained on public
(non-member) records, or always guessing the attribute's most common public
value when that does better (a classifier fitted on few public records can
fall below it, and a weak baseline would credit the model with leakage it does
not have). The model leaks the attribute when the attack beats the
baseline, and it leaks membership-dependent information when it does so on
members more than on non-members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from veil.audit._stats import clopper_pearson
from veil.audit._targets import Classifier
from veil.errors import InvalidInputError

__all__ = ["AttributeResult", "attribute_inference"]


@dataclass(frozen=True)
class AttributeResult:
    """Accuracy of guessing one sensitive attribute, with and without the model."""

    attribute: str
    values: list[str]
    attack_accuracy_members: float
    attack_accuracy_non_members: float
    baseline_accuracy_members: float
    baseline_accuracy_non_members: float
    majority_accuracy: float
    members: int
    non_members: int
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    baseline_kind: str = "classifier on the other columns and the label"

    @property
    def advantage(self) -> float:
        """What the model adds over the baseline, on members."""
        return self.attack_accuracy_members - self.baseline_accuracy_members

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "values": self.values,
            "attack_accuracy": {
                "members": self.attack_accuracy_members,
                "non_members": self.attack_accuracy_non_members,
            },
            "baseline_accuracy": {
                "members": self.baseline_accuracy_members,
                "non_members": self.baseline_accuracy_non_members,
                "kind": self.baseline_kind,
                "note": "the stronger of a classifier on the other columns and the label and "
                "the most common value, both fitted on half of the non-members (no access to "
                "the model)",
            },
            "majority_accuracy": self.majority_accuracy,
            "advantage_over_baseline_members": self.advantage,
            "members": self.members,
            "non_members": self.non_members,
            "ci95": {k: list(v) for k, v in self.ci95.items()},
        }


def attribute_inference(
    target: Classifier,
    records: pd.DataFrame,
    labels: npt.ArrayLike,
    is_member: npt.ArrayLike,
    attribute: str,
    *,
    encode: Callable[[pd.DataFrame], npt.NDArray[Any]],
    values: Sequence[str] | None = None,
    seed: int = 0,
) -> AttributeResult:
    """Guess ``attribute`` of every record from the model's answers; compare with the baseline.

    ``encode`` turns records into the model's inputs (the model's own feature
    encoding). Half of the non-members are the attacker's public data (the
    prior and the baseline are fitted on them); the other half and all members
    are attacked. Records whose attribute is missing are left out.
    """
    if attribute not in records.columns:
        raise InvalidInputError(
            f"no column '{attribute}' to infer",
            expected=f"one of {', '.join(map(str, records.columns[:20]))}",
            got=repr(attribute),
        )
    y = np.asarray(labels, dtype=np.int64)
    members = np.asarray(is_member, dtype=bool)
    raw = records[attribute]
    known = raw.notna().to_numpy()  # a record without the value has nothing to infer
    truth = np.array([str(v) if k else "" for v, k in zip(raw, known, strict=True)], dtype=object)
    candidates = list(values) if values is not None else sorted(set(truth[known]))
    if len(candidates) < 2:  # noqa: PLR2004
        raise InvalidInputError(
            f"'{attribute}' takes a single value here: nothing to infer",
            expected="a categorical attribute with at least two values",
            got=f"{len(candidates)} value",
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA7]))  # a stream of its own
    others = np.flatnonzero(~members & known)
    rng.shuffle(others)
    public, attacked_non = others[: len(others) // 2], others[len(others) // 2 :]
    attacked = np.concatenate([np.flatnonzero(members & known), attacked_non])

    counts = pd.Series(truth[public]).value_counts()
    prior = np.array([counts.get(v, 0) + 1.0 for v in candidates])
    log_prior = np.log(prior / prior.sum())
    scores = np.empty((len(attacked), len(candidates)))
    subset = records.iloc[attacked]
    for j, value in enumerate(candidates):
        filled = subset.copy()
        filled[attribute] = value
        lp = target.log_proba(encode(filled))
        scores[:, j] = lp[np.arange(len(attacked)), y[attacked]] + log_prior[j]
    guess = np.asarray(candidates)[scores.argmax(axis=1)]
    attack_hit = guess == truth[attacked]

    # Baseline: the other columns (the attribute blanked to one value) plus the label.
    def features(rows: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
        blank = records.iloc[rows].copy()
        blank[attribute] = candidates[0]
        return np.column_stack([np.asarray(encode(blank)).reshape(len(rows), -1), y[rows]])

    baseline = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    baseline.fit(features(public), truth[public])
    base_hit = baseline.predict(features(attacked)) == truth[attacked]
    majority_hit = truth[attacked] == counts.index[0]
    majority = float(majority_hit.mean())
    kind = "classifier on the other columns and the label"
    if majority_hit.sum() > base_hit.sum():  # the stronger of the two guesses is the baseline
        base_hit, kind = majority_hit, f"always '{counts.index[0]}', the most common value"

    is_mem = members[attacked]
    n1, n0 = int(is_mem.sum()), int((~is_mem).sum())

    def rate(hits: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_]) -> float:
        return float(hits[mask].mean()) if mask.any() else float("nan")

    ci = {}
    if n1:
        ci["attack_members"] = clopper_pearson(int(attack_hit[is_mem].sum()), n1, 0.05)
        ci["baseline_members"] = clopper_pearson(int(base_hit[is_mem].sum()), n1, 0.05)
    return AttributeResult(
        attribute=attribute,
        values=candidates,
        attack_accuracy_members=rate(attack_hit, is_mem),
        attack_accuracy_non_members=rate(attack_hit, ~is_mem),
        baseline_accuracy_members=rate(base_hit, is_mem),
        baseline_accuracy_non_members=rate(base_hit, ~is_mem),
        majority_accuracy=majority,
        members=n1,
        non_members=n0,
        ci95=ci,
        baseline_kind=kind,
    )

"""How well an attack separates members from non-members: AUC, TPR at low FPR, advantage.

Carlini et al. (2022, "Membership inference attacks from first principles")
argue that an attack matters when it identifies *some* members with
confidence, so the headline figure is the true-positive rate at a low
false-positive rate, read off a log-log ROC curve, not the AUC or the
accuracy. A rate like "TPR at 0.01% FPR" is only meaningful when there are
enough non-members for that many false positives to be observed at all: Veil
reports it only when ``n_non_members * FPR >= MIN_FALSE_POSITIVES`` and says so
otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from veil.audit._stats import EpsilonBound, clopper_pearson, epsilon_from_scores
from veil.errors import InvalidInputError

__all__ = ["FPR_LEVELS", "MIN_FALSE_POSITIVES", "AttackResult", "score_attack"]

FPR_LEVELS = (0.01, 0.001, 0.0001)
MIN_FALSE_POSITIVES = 5
_ROC_POINTS = 400


@dataclass(frozen=True)
class AttackResult:
    """One attack's outcome on one membership game."""

    attack: str
    auc: float
    auc_ci: tuple[float, float]
    auc_p_value: float  # H0: scores independent of membership (Mann-Whitney, normal approx.)
    tpr_at_fpr: dict[str, float | None]
    tpr_at_fpr_ci: dict[str, tuple[float, float] | None]
    # H0 (no leak): members and non-members exchangeable; exact, threshold selection included.
    tpr_at_fpr_p_value: dict[str, float | None]
    balanced_accuracy: float
    advantage: float
    members: int
    non_members: int
    epsilon: EpsilonBound
    settings: dict[str, Any] = field(default_factory=dict)
    roc: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scores: npt.NDArray[np.float64] | None = None
    is_member: npt.NDArray[np.bool_] | None = None

    def to_dict(self, *, per_example: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attack": self.attack,
            "auc": self.auc,
            "auc_ci95": list(self.auc_ci),
            "auc_p_value": self.auc_p_value,
            "tpr_at_fpr": self.tpr_at_fpr,
            "tpr_at_fpr_p_value": self.tpr_at_fpr_p_value,
            "tpr_at_fpr_ci95": {
                k: None if v is None else list(v) for k, v in self.tpr_at_fpr_ci.items()
            },
            "balanced_accuracy": self.balanced_accuracy,
            "advantage": self.advantage,
            "members": self.members,
            "non_members": self.non_members,
            "epsilon_lower_bound": self.epsilon.to_dict(),
            "settings": self.settings,
            "roc": self.roc,
            "notes": self.notes,
        }
        if per_example and self.scores is not None and self.is_member is not None:
            out["per_example"] = {
                "score": [float(s) for s in self.scores],
                "member": [bool(b) for b in self.is_member],
            }
        return out


def _low_fpr_p_value(
    scores: npt.NDArray[np.float64], members: npt.NDArray[np.bool_], level: float
) -> float:
    """P(at least this many members above the threshold of FPR ``level``) if the attack is blind.

    The threshold sits just above the ``k + 1``-th highest non-member score,
    ``k = floor(level * n0)``, as the ROC's "TPR at FPR <= level" does. When
    scores do not depend on membership, the number of members above it follows
    a negative hypergeometric law (members drawn before the ``k + 1``-th
    non-member): the p-value is exact and already pays for choosing the
    threshold, which a Clopper-Pearson interval on the TPR does not.
    """
    n1, n0 = int(members.sum()), int((~members).sum())
    k = math.floor(level * n0 + 1e-9)
    others = np.sort(scores[~members])[::-1]
    threshold = others[k] if k < n0 else -np.inf
    above = int((scores[members] > threshold).sum())
    return float(stats.nhypergeom.sf(above - 1, n0 + n1, n1, k + 1))


def _fpr_key(level: float) -> str:
    return f"{level * 100:g}%"


def score_attack(
    attack: str,
    scores: npt.ArrayLike,
    is_member: npt.ArrayLike,
    *,
    delta: float = 0.0,
    alpha: float = 0.05,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> AttackResult:
    """Every metric of an attack from its scores (higher = "member") and the truth."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member, dtype=bool)
    n1, n0 = int(m.sum()), int((~m).sum())
    if s.shape != m.shape or n1 == 0 or n0 == 0:
        raise InvalidInputError(
            "an attack needs scores for both members and non-members",
            expected="matching 1-D arrays with both classes",
            got=f"{n1} members, {n0} non-members, shapes {s.shape}/{m.shape}",
        )
    if not np.isfinite(s).all():
        s = np.nan_to_num(s, nan=-np.inf)
        s = np.clip(s, -1e300, 1e300)
    auc = float(roc_auc_score(m, s))
    # Hanley-McNeil standard error; the null test uses the Mann-Whitney variance.
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    se = math.sqrt(
        max(0.0, auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc))
        / (n1 * n0)
    )
    z = stats.norm.isf(alpha / 2)
    null_se = math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))
    p_value = float(2 * stats.norm.sf(abs(auc - 0.5) / null_se))
    fpr, tpr, _ = roc_curve(m, s)
    tpr_at: dict[str, float | None] = {}
    tpr_ci: dict[str, tuple[float, float] | None] = {}
    tpr_p: dict[str, float | None] = {}
    notes = []
    for level in FPR_LEVELS:
        key = _fpr_key(level)
        if n0 * level < MIN_FALSE_POSITIVES:
            tpr_at[key], tpr_ci[key], tpr_p[key] = None, None, None
            notes.append(
                f"TPR at {key} FPR not reported: {n0} non-members allow {n0 * level:.2g} false "
                f"positives (needs >= {MIN_FALSE_POSITIVES}, i.e. "
                f"{math.ceil(MIN_FALSE_POSITIVES / level)} non-members)"
            )
            continue
        value = float(tpr[fpr <= level].max())
        tpr_at[key] = value
        tpr_ci[key] = clopper_pearson(round(value * n1), n1, alpha)
        tpr_p[key] = _low_fpr_p_value(s, m, level)
    balanced = float(((tpr + 1 - fpr) / 2).max())
    keep = np.unique(np.geomspace(1, fpr.size, min(_ROC_POINTS, fpr.size)).astype(int) - 1)
    return AttackResult(
        attack=attack,
        auc=auc,
        auc_ci=(max(0.0, auc - z * se), min(1.0, auc + z * se)),
        auc_p_value=p_value,
        tpr_at_fpr=tpr_at,
        tpr_at_fpr_ci=tpr_ci,
        tpr_at_fpr_p_value=tpr_p,
        balanced_accuracy=balanced,
        advantage=2 * balanced - 1,
        members=n1,
        non_members=n0,
        epsilon=epsilon_from_scores(s, m, delta=delta, alpha=alpha, seed=seed),
        settings=dict(settings or {}),
        roc={"fpr": [float(x) for x in fpr[keep]], "tpr": [float(x) for x in tpr[keep]]},
        notes=notes,
        scores=s,
        is_member=m,
    )

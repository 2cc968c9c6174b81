"""Empirical DP auditing: a measured lower bound on epsilon, to set beside the claimed one.

Two audits:

* :func:`audit_mechanism` — black-box, for DP queries: run the mechanism many
  times on two neighbouring datasets and bound epsilon from how well a
  threshold on the output tells them apart (Clopper-Pearson, threshold chosen
  on a held-out half). This is the audit the ledger's and ``veil.dp``'s tests
  run on every mechanism.
* :func:`canary_audit` — for a trained model, in *one* training run
  (Steinke, Nasr and Jagielski 2023): ``m`` mislabelled canaries, each
  inserted by an independent fair coin, a model trained the same way as the
  audited one, and its confidence in each canary's (wrong) label as the
  score. Bounds come from the one-run theorem and from Clopper-Pearson on a
  held-out half of the canaries.

A correct (eps, delta)-DP mechanism yields a bound above eps with probability
at most ``alpha``; the report puts the bound next to the claim. Black-box
canaries give *loose* bounds for DP-SGD (the noise on the final model hides
most of a single step's signal): a low bound does not prove a model private,
a bound above the claim proves it is not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veil._io import to_jsonable
from veil._validate import whole_number
from veil.audit._stats import EpsilonBound, epsilon_from_scores, one_run_epsilon
from veil.audit._targets import Classifier
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = ["CanaryAudit", "audit_mechanism", "canary_audit"]


def audit_mechanism(
    mechanism: Callable[[Any], Any],
    d0: Any,
    d1: Any,
    *,
    trials: int = 10_000,
    delta: float = 0.0,
    alpha: float = 0.05,
    score: Callable[[Any], float] = float,
    seed: int = 0,
) -> EpsilonBound:
    """Black-box epsilon lower bound from ``trials`` runs on each of two neighbouring inputs."""
    whole_number(
        trials,
        "trials",
        minimum=10,
        message="too few trials",
        expected=">= 10 (thousands for a useful bound)",
    )
    out0 = np.array([score(mechanism(d0)) for _ in range(trials)], dtype=np.float64)
    out1 = np.array([score(mechanism(d1)) for _ in range(trials)], dtype=np.float64)
    bound = epsilon_from_scores(
        np.concatenate([out1, out0]),
        np.concatenate([np.ones(trials, bool), np.zeros(trials, bool)]),
        delta=delta,
        alpha=alpha,
        seed=seed,
    )
    return EpsilonBound(
        method=f"black-box on neighbouring datasets ({trials} runs each), " + bound.method,
        epsilon_lower=bound.epsilon_lower,
        epsilon_point=bound.epsilon_point,
        confidence=bound.confidence,
        delta=delta,
        detail=bound.detail | {"trials": trials},
    )


@dataclass(frozen=True)
class CanaryAudit:
    """The outcome of a one-run canary audit of a training procedure."""

    claimed_epsilon: float
    audit_run_epsilon: float  # the epsilon of the audit's own run (its data are slightly larger)
    delta: float
    canaries: int
    inserted: int
    one_run: EpsilonBound
    clopper_pearson: EpsilonBound
    seconds: float

    @property
    def best(self) -> EpsilonBound:
        return max((self.one_run, self.clopper_pearson), key=lambda b: b.epsilon_lower)

    @property
    def consistent(self) -> bool:
        """No bound exceeds the smaller of the claimed and the audit run's epsilon."""
        return self.best.epsilon_lower <= min(self.claimed_epsilon, self.audit_run_epsilon)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "mislabelled canaries, each inserted by a fair coin, one training run",
            "claimed_epsilon": to_jsonable(self.claimed_epsilon),
            "audit_run_epsilon": to_jsonable(self.audit_run_epsilon),
            "delta": self.delta,
            "canaries": self.canaries,
            "inserted": self.inserted,
            "one_run": self.one_run.to_dict(),
            "clopper_pearson": self.clopper_pearson.to_dict(),
            "epsilon_lower_bound": self.best.epsilon_lower
            if math.isfinite(self.best.epsilon_lower)
            else None,
            "consistent_with_claim": self.consistent,
            "seconds": self.seconds,
        }


def canary_audit(
    train_with: Callable[[npt.NDArray[Any], npt.NDArray[np.int64]], Classifier],
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    canary_x: npt.NDArray[Any],
    canary_y: npt.NDArray[np.int64],
    *,
    n_classes: int,
    claimed_epsilon: float,
    audit_run_epsilon: float | None = None,
    delta: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> CanaryAudit:
    """Insert each canary (relabelled to a random wrong class) by a coin flip, train once, bound epsilon.

    ``train_with(x, y)`` must train exactly as the audited model was trained
    (same mechanism and hyper-parameters). ``seed`` fixes the canaries and the
    coins: the audit's randomness must only be independent of the training's.
    """
    if n_classes < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "canaries need at least two classes", expected=">= 2", got=str(n_classes)
        )
    m = len(canary_y)
    if m < 20:  # noqa: PLR2004
        raise InvalidInputError(
            "too few canaries", expected=">= 20 (hundreds for a useful bound)", got=str(m)
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA]))  # a stream of its own
    wrong = (np.asarray(canary_y) + rng.integers(1, n_classes, size=m)) % n_classes
    inserted = rng.random(m) < 0.5  # noqa: PLR2004
    start = time.perf_counter()
    detail = f"training with {int(inserted.sum())} canaries"
    emit(progress, "canary audit", 0, 1, unit="runs", detail=detail)
    model = train_with(
        np.concatenate([np.asarray(x), np.asarray(canary_x)[inserted]]),
        np.concatenate([np.asarray(y), wrong[inserted]]).astype(np.int64),
    )
    scores = model.log_proba(np.asarray(canary_x))[np.arange(m), wrong]
    emit(progress, "canary audit", 1, 1, unit="runs", detail="done")
    return CanaryAudit(
        claimed_epsilon=claimed_epsilon,
        audit_run_epsilon=claimed_epsilon if audit_run_epsilon is None else audit_run_epsilon,
        delta=delta,
        canaries=m,
        inserted=int(inserted.sum()),
        one_run=one_run_epsilon(scores, inserted, delta=delta, alpha=alpha / 2),
        clopper_pearson=epsilon_from_scores(
            scores, inserted, delta=delta, alpha=alpha / 2, seed=seed
        ),
        seconds=time.perf_counter() - start,
    )

"""Did the model forget? A per-example membership test on erased people's rows.

The test is offline LiRA (Carlini et al., 2022): for every scored row, the
target's logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` is compared
with its distribution under reference models that never saw the row, and the
score is the z-score above that distribution. Offline, not online, and not
RMIA, because the only reference models Veil may train here are "out" models:
an "in" model would have to be trained on the erased rows again, processing
the data of someone who asked to be forgotten for the sake of checking that
they were. Offline LiRA needs nothing else; offline RMIA approximates the
missing "in" models by a constant (``a``) and is weaker for small data.

The reference models are trained on the *population*: rows of the model's
data that are neither erased nor scored, on random halves. Every scored row is
thus "out" for every reference model, and the same reference models score the
target before and after unlearning.

The scored rows are the erased people's rows and held-out non-members (rows the
model never saw). What makes the test valid is that an erased row the model no
longer carries is exchangeable with a non-member: the AUC of "erased vs
non-member" is then 0.5 whatever the reference models are, and a model that
still carries them scores them higher. Better reference models only make the
test more powerful. With one erased person an AUC is not meaningful: their
rows' mean percentile among the non-members' scores is reported instead (under
"forgotten" it is uniform, so a rank above ``1 - alpha`` is evidence of memory
at level ``alpha``; one-sided, as membership only raises a score).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

if TYPE_CHECKING:  # veil.audit loads scikit-learn and SciPy: only when a check runs
    from veil.audit import Classifier, ReferenceModels

__all__ = ["ATTACK", "ForgettingCheck", "check_forgetting", "percentile_among"]

ATTACK = "lira-offline"
INDISTINGUISHABLE = "indistinguishable from non-members"
DISTINGUISHABLE = "distinguishable from non-members"
_MIN_REFERENCES = 2

Trainer = Any  # (x, y, seed) -> Classifier, as veil.audit's trainers


@dataclass(frozen=True)
class Side:
    """How the erased rows scored against one model (before or after unlearning)."""

    auc: float | None  # None with one erased person
    auc_ci95: tuple[float, float] | None
    auc_p_value: float | None
    percentile: float  # the erased rows' mean percentile among non-members' scores, 0-100
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "auc_ci95": None if self.auc_ci95 is None else list(self.auc_ci95),
            "auc_p_value": self.auc_p_value,
            "percentile": self.percentile,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ForgettingCheck:
    """The membership test of erased people against a model before and after unlearning."""

    attack: str
    references: int
    erased_people: int
    erased_rows: int
    non_members: int
    alpha: float
    before: Side
    after: Side
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The verdict on the unlearned model."""
        return self.after.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "reference_models": self.references,
            "erased_people": self.erased_people,
            "erased_rows": self.erased_rows,
            "non_members": self.non_members,
            "alpha": self.alpha,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "verdict": self.verdict,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def percentile_among(scores: npt.ArrayLike, others: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Each score's percentile (0-100) among ``others``: the share below it, ties counted half."""
    ref = np.sort(np.asarray(others, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(ref, s, side="left")
    upto = np.searchsorted(ref, s, side="right")
    return np.asarray(100.0 * (below + upto) / (2.0 * len(ref)), dtype=np.float64)


def _references(  # noqa: PLR0917 - a private helper, called once
    trainer: Trainer,
    population_x: npt.NDArray[Any],
    population_y: npt.NDArray[np.int64],
    scored_x: npt.NDArray[Any],
    count: int,
    seed: int,
    progress: ProgressCallback | None,
) -> ReferenceModels:
    """``count`` models on random halves of the population, answering on the scored rows."""
    from veil.audit import ReferenceModels  # noqa: PLC0415

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF06]))
    n = len(population_y)
    outputs = []
    start = time.perf_counter()
    for r in range(count):
        emit(progress, "reference models", r, count, unit="models", detail=f"model {r + 1}")
        half = np.sort(rng.choice(n, size=max(1, n // 2), replace=False))
        model = trainer(population_x[half], population_y[half], int(rng.integers(2**31)))
        outputs.append(model.log_proba(scored_x).astype(np.float32))
    emit(progress, "reference models", count, count, unit="models", detail="done")
    inclusion = np.zeros((count, len(scored_x)), dtype=bool)  # no scored row is in any of them
    return ReferenceModels(inclusion, np.stack(outputs), time.perf_counter() - start)


def _side(
    scores: npt.NDArray[np.float64], is_erased: npt.NDArray[np.bool_], people: int, alpha: float
) -> Side:
    from veil.audit import score_attack  # noqa: PLC0415

    percentile = float(percentile_among(scores[is_erased], scores[~is_erased]).mean())
    if people < 2:  # noqa: PLR2004 - an AUC needs two erased people
        flagged = percentile > 100.0 * (1.0 - alpha)
        return Side(None, None, None, percentile, DISTINGUISHABLE if flagged else INDISTINGUISHABLE)
    result = score_attack(ATTACK, scores, is_erased, alpha=alpha)
    low, high = float(result.auc_ci[0]), float(result.auc_ci[1])
    covers = low <= 0.5 <= high  # noqa: PLR2004 - chance
    return Side(
        result.auc,
        (low, high),
        result.auc_p_value,
        percentile,
        INDISTINGUISHABLE if covers else DISTINGUISHABLE,
    )


def check_forgetting(
    before: Classifier,
    after: Classifier,
    trainer: Trainer,
    *,
    population_x: npt.NDArray[Any],
    population_y: npt.ArrayLike,
    erased_x: npt.NDArray[Any],
    erased_y: npt.ArrayLike,
    erased_people: int,
    non_x: npt.NDArray[Any],
    non_y: npt.ArrayLike,
    references: int = 8,
    alpha: float = 0.05,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    refs: ReferenceModels | None = None,
) -> tuple[ForgettingCheck, ReferenceModels]:
    """Score the erased rows and the non-members against ``before`` and ``after``.

    ``population_x/y`` trains the reference models (``references`` of them,
    each on a random half); it must hold no erased row and no scored
    non-member. ``refs`` (from an earlier call on the same scored rows) skips
    that training. Returns the check and the reference models.
    """
    from veil.audit import lira_scores  # noqa: PLC0415

    erased_y = np.asarray(erased_y, dtype=np.int64)
    non_y = np.asarray(non_y, dtype=np.int64)
    population_y = np.asarray(population_y, dtype=np.int64)
    if len(erased_y) == 0 or erased_people < 1:
        raise InvalidInputError(
            "nothing to verify: no erased rows",
            expected="the erased people's rows (at least one)",
            got=f"{len(erased_y)} rows of {erased_people} people",
            fix="pass the rows of the version the people were erased from, before it is shredded",
        )
    if len(non_y) < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "too few non-members to compare with",
            expected="at least 2 held-out rows (a test set the model never saw)",
            got=str(len(non_y)),
        )
    if refs is None and (references < _MIN_REFERENCES or len(population_y) < 2):  # noqa: PLR2004
        raise InvalidInputError(
            "too few reference models or population rows",
            expected=f">= {_MIN_REFERENCES} reference models on >= 2 population rows",
            got=f"{references} models, {len(population_y)} rows",
        )
    start = time.perf_counter()
    x = np.concatenate([np.asarray(erased_x), np.asarray(non_x)])
    y = np.concatenate([erased_y, non_y])
    is_erased = np.concatenate([np.ones(len(erased_y), bool), np.zeros(len(non_y), bool)])
    if refs is None:
        refs = _references(
            trainer, np.asarray(population_x), population_y, x, references, seed, progress
        )
    sides = [
        _side(
            lira_scores(model.log_proba(x), y, refs, online=False), is_erased, erased_people, alpha
        )
        for model in (before, after)
    ]
    notes = [
        (
            "offline LiRA: reference models never saw the erased people (no model is retrained "
            "on the rows of someone who asked to be forgotten); every scored row is 'out' for all"
        ),
    ]
    if erased_people < 2:  # noqa: PLR2004
        notes.append(
            "one erased person: an AUC is not meaningful; their rows' mean percentile among the "
            f"non-members' scores is reported (above {100 * (1 - alpha):g} means still remembered)"
        )
    if len(erased_y) > erased_people:
        notes.append(f"{len(erased_y)} rows of {erased_people} people scored row by row")
    check = ForgettingCheck(
        attack=ATTACK,
        references=refs.count,
        erased_people=erased_people,
        erased_rows=len(erased_y),
        non_members=len(non_y),
        alpha=alpha,
        before=sides[0],
        after=sides[1],
        seconds=time.perf_counter() - start,
        notes=notes,
    )
    return check, refs

"""Membership inference: was this record in the model's training data?

Five attacks, from the weakest to the strongest published ones, all scored
so that a higher value means "member":

* ``threshold`` — Yeom et al. (2018): the model's confidence in the true
  label (minus the loss); one global threshold.
* ``shadow`` — Shokri et al. (2017): an attack classifier trained on the
  reference ("shadow") models' outputs for points known to be in or out.
* ``lira`` — Carlini et al. (2022), the likelihood-ratio attack: for every
  point, Gaussians fitted to the reference models' logit-scaled confidence
  ``phi = log(p_y / (1 - p_y))`` when the point was in (online) and out; the
  score is the likelihood ratio of the target's ``phi``. Offline LiRA uses
  only the "out" models (a one-sided test). With fewer than 64 reference
  models the variances are pooled over points, as the paper advises.
* ``rmia`` — Zarifzadeh et al. (2024): the ratio ``Pr(y|x, target) / Pr(y|x)``
  (the denominator averaged over reference models), compared pairwise with
  the same ratio of population points ``z``; the score is the share of ``z``
  that ``x`` beats by a factor ``gamma``. The default ``gamma = 1`` makes the
  score a monotone function of the ratio (the ROC of the pairwise test at
  gamma 1); a larger gamma only helps strong models and flattens weak ones
  to a constant score. Offline RMIA approximates the
  "in" models with ``Pr_in ~ (1 + a) / 2 Pr_out + (1 - a) / 2``.
* ``label-only`` — Choquette-Choo et al. (2021): for an API that returns only
  the predicted label, the share of noisy copies of ``x`` still labelled
  correctly (members sit further from the decision boundary).

Reference models are trained on random halves of the audit's points, in a
balanced design: every point is "in" for exactly half of them, so online
attacks have ``R/2`` in- and ``R/2`` out-models for each point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier

from veil._validate import whole_number
from veil.audit._metrics import AttackResult, score_attack
from veil.audit._targets import Classifier, Trainer, true_class_log_proba
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = [
    "MIA_ATTACKS",
    "ReferenceModels",
    "label_only_scores",
    "lira_scores",
    "membership_inference",
    "rmia_scores",
    "shadow_scores",
    "threshold_scores",
    "train_references",
]

MIA_ATTACKS = (
    "threshold",
    "shadow",
    "lira-online",
    "lira-offline",
    "rmia-online",
    "rmia-offline",
    "label-only",
)
_POOLED_BELOW = 64
_RMIA_OFFLINE_A = 0.3
_RMIA_GAMMA = 1.0
_RMIA_POPULATION = 2000
_LABEL_ONLY_QUERIES = 32

Array = npt.NDArray[np.float64]


@dataclass
class ReferenceModels:
    """Reference models' answers on the audit's points, and which points each one saw."""

    inclusion: npt.NDArray[np.bool_]  # (models, points)
    log_proba: npt.NDArray[np.float32]  # (models, points, classes)
    seconds: float

    @property
    def count(self) -> int:
        return int(self.inclusion.shape[0])


def train_references(
    trainer: Trainer,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    count: int,
    *,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> ReferenceModels:
    """Train ``count`` (even, >= 2) models, each on a random half, every point in exactly half."""
    message = "the number of reference models must be even and >= 2"
    expected = "--references 2, 4, 8, 16, 64 ..."
    fix = "each point must be 'in' for exactly half of the reference models"
    count = whole_number(count, "count", minimum=2, message=message, expected=expected, fix=fix)
    if count % 2:
        raise InvalidInputError(message, expected=expected, got=repr(count), fix=fix)
    # A stream of its own: inclusion must be independent of anything else drawn from ``seed``
    # (a target's membership drawn from the same seed would correlate with it).
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EF]))
    ranks = rng.random((count, len(y))).argsort(axis=0)
    inclusion = ranks < count // 2
    outputs = []
    start = time.perf_counter()
    for r in range(count):
        emit(
            progress, "reference models", r, count, unit="models", detail=f"training model {r + 1}"
        )
        model = trainer(x[inclusion[r]], y[inclusion[r]], int(rng.integers(2**31)))
        outputs.append(model.log_proba(x).astype(np.float32))
    emit(progress, "reference models", count, count, unit="models", detail="done")
    return ReferenceModels(inclusion, np.stack(outputs), time.perf_counter() - start)


def _phi(log_proba: npt.NDArray[Any], y: npt.NDArray[np.int64]) -> Array:
    own, rest = true_class_log_proba(np.asarray(log_proba, dtype=np.float64), y)
    return own - rest


def threshold_scores(target_log_proba: Array, y: npt.NDArray[np.int64]) -> Array:
    """Yeom et al.: the log-probability of the true label (minus the cross-entropy loss)."""
    return np.asarray(target_log_proba[np.arange(len(y)), y], dtype=np.float64)


def lira_scores(
    target_log_proba: Array, y: npt.NDArray[np.int64], refs: ReferenceModels, *, online: bool
) -> Array:
    """LiRA: per-point Gaussian likelihood ratio of the target's logit-scaled confidence."""
    target = _phi(target_log_proba, y)
    ref = np.stack([_phi(refs.log_proba[r], y) for r in range(refs.count)])  # (R, N)
    inc = refs.inclusion
    out_mean = np.nanmean(np.where(~inc, ref, np.nan), axis=0)
    pooled = refs.count < _POOLED_BELOW
    out_std = _std(ref, ~inc, pooled)
    if not online:
        # One-sided: how far above the "out" distribution the target's confidence lies. The
        # z-score orders points as the Gaussian CDF does, without saturating at 1 in floating point.
        return np.asarray((target - out_mean) / out_std, dtype=np.float64)
    in_mean = np.nanmean(np.where(inc, ref, np.nan), axis=0)
    in_std = _std(ref, inc, pooled)
    return np.asarray(
        stats.norm.logpdf(target, in_mean, in_std) - stats.norm.logpdf(target, out_mean, out_std),
        dtype=np.float64,
    )


def _std(values: Array, mask: npt.NDArray[np.bool_], pooled: bool) -> Array:
    masked = np.where(mask, values, np.nan)
    if pooled:
        centred = masked - np.nanmean(masked, axis=0)
        spread = float(np.sqrt(np.nanmean(centred**2)))
        return np.full(values.shape[1], max(spread, 1e-6))
    return np.asarray(np.maximum(np.nanstd(masked, axis=0), 1e-6), dtype=np.float64)


def rmia_scores(
    target_log_proba: Array,
    y: npt.NDArray[np.int64],
    refs: ReferenceModels,
    *,
    online: bool,
    gamma: float = _RMIA_GAMMA,
    a: float = _RMIA_OFFLINE_A,
    population: int = _RMIA_POPULATION,
    seed: int = 0,
) -> Array:
    """RMIA: share of population points ``z`` with ``LR(x) / LR(z) >= gamma``."""
    p_target = np.exp(threshold_scores(target_log_proba, y))
    p_ref = np.exp(np.stack([threshold_scores(refs.log_proba[r], y) for r in range(refs.count)]))
    if online:
        p_x = p_ref.mean(axis=0)
    else:
        out_mean = np.nanmean(np.where(~refs.inclusion, p_ref, np.nan), axis=0)
        p_x = 0.5 * ((1 + a) * out_mean + (1 - a))
    ratio = p_target / np.maximum(p_x, 1e-300)
    rng = np.random.default_rng(seed)
    z = rng.choice(len(y), size=min(population, len(y)), replace=False)
    ratio_z = np.sort(ratio[z])
    # share of z with ratio_z <= ratio_x / gamma
    return np.asarray(
        np.searchsorted(ratio_z, ratio / gamma, side="right") / len(z), dtype=np.float64
    )


def _shadow_features(log_proba: npt.NDArray[Any], y: npt.NDArray[np.int64]) -> Array:
    lp = np.asarray(log_proba, dtype=np.float64)
    own, rest = true_class_log_proba(lp, y)
    top = np.sort(lp, axis=1)[:, ::-1][:, : min(3, lp.shape[1])]
    entropy = -(np.exp(lp) * lp).sum(axis=1)
    return np.column_stack([own, own - rest, entropy, top])


def shadow_scores(
    target_log_proba: Array,
    y: npt.NDArray[np.int64],
    refs: ReferenceModels,
    *,
    seed: int = 0,
    max_rows: int = 200_000,
) -> Array:
    """Shokri et al.: an attack classifier trained on the shadow models' in/out outputs."""
    feats = np.concatenate([_shadow_features(refs.log_proba[r], y) for r in range(refs.count)])
    labels = refs.inclusion.reshape(-1)
    rng = np.random.default_rng(seed)
    if len(labels) > max_rows:
        keep = rng.choice(len(labels), size=max_rows, replace=False)
        feats, labels = feats[keep], labels[keep]
    attack = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    attack.fit(feats, labels)
    proba = attack.predict_proba(_shadow_features(target_log_proba, y))[:, 1]
    return np.asarray(proba, dtype=np.float64)


def label_only_scores(
    target: Classifier,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    *,
    queries: int = _LABEL_ONLY_QUERIES,
    noise: float = 0.1,
    seed: int = 0,
) -> Array:
    """Choquette-Choo et al.: share of ``queries`` Gaussian-noised copies labelled correctly.

    Only the arg-max label of each answer is used. The noise is the attacker's
    (``seed`` reproduces it); ``noise`` is its standard deviation in the model's
    input units (Veil scales inputs to [-1, 1]).
    """
    rng = np.random.default_rng(seed)
    hits = np.zeros(len(y))
    base = np.asarray(x, dtype=np.float32)
    for _ in range(queries):
        jitter = rng.normal(0.0, noise, size=base.shape)  # not-private: the attacker's noise
        noisy = base + jitter.astype(np.float32)
        hits += target.log_proba(noisy).argmax(axis=1) == y
    correct = target.log_proba(base).argmax(axis=1) == y
    # A misclassified point is scored below every correctly classified one.
    return np.asarray(hits / queries + correct, dtype=np.float64)


def membership_inference(
    target: Classifier,
    x: npt.NDArray[Any],
    y: npt.NDArray[np.int64],
    is_member: npt.ArrayLike,
    *,
    trainer: Trainer | None = None,
    references: int = 16,
    attacks: tuple[str, ...] = MIA_ATTACKS,
    refs: ReferenceModels | None = None,
    delta: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
    label_only_noise: float = 0.1,
    progress: ProgressCallback | None = None,
) -> tuple[list[AttackResult], ReferenceModels | None]:
    """Run the chosen attacks against ``target`` on points whose membership is known.

    ``x, y`` are the audit's points; ``is_member`` says which were in the
    target's training data. Attacks that need reference models train
    ``references`` of them with ``trainer`` (or take ``refs``, already trained
    on these same points). Returns one :class:`AttackResult` per attack, each
    stating its mode and number of reference models, and the reference models.
    """
    unknown = [a for a in attacks if a not in MIA_ATTACKS]
    if unknown:
        raise InvalidInputError(
            "unknown membership attack",
            expected=", ".join(MIA_ATTACKS),
            got=", ".join(unknown),
        )
    members = np.asarray(is_member, dtype=bool)
    y = np.asarray(y, dtype=np.int64)
    needs_refs = any(a.startswith(("lira", "rmia", "shadow")) for a in attacks)
    if needs_refs and refs is None:
        if trainer is None:
            raise InvalidInputError(
                "these attacks need reference models",
                expected="a trainer (to train reference models) or trained refs",
                got="neither",
                fix="pass trainer=..., or limit attacks to threshold and label-only",
            )
        refs = train_references(trainer, x, y, references, seed=seed, progress=progress)
    target_lp = target.log_proba(x)
    results = []
    n_refs = refs.count if refs is not None else 0
    for attack in attacks:
        start = time.perf_counter()
        settings: dict[str, Any] = {"black_box": True}
        if attack == "threshold":
            scores = threshold_scores(target_lp, y)
            settings |= {"mode": "no reference models", "reference_models": 0}
        elif attack == "label-only":
            scores = label_only_scores(target, x, y, noise=label_only_noise, seed=seed)
            settings |= {
                "mode": "labels only",
                "reference_models": 0,
                "queries_per_point": _LABEL_ONLY_QUERIES + 1,
                "noise_std": label_only_noise,
            }
        else:
            assert refs is not None  # noqa: S101 - trained above
            if attack == "shadow":
                scores = shadow_scores(target_lp, y, refs, seed=seed)
                settings |= {"mode": "shadow models", "reference_models": n_refs}
            else:
                online = attack.endswith("online")
                family = attack.split("-")[0]
                if family == "lira":
                    scores = lira_scores(target_lp, y, refs, online=online)
                    settings["variance"] = (
                        "pooled over points" if n_refs < _POOLED_BELOW else "per point"
                    )
                else:
                    scores = rmia_scores(target_lp, y, refs, online=online, seed=seed)
                    settings |= {
                        "gamma": _RMIA_GAMMA,
                        "population_points": min(_RMIA_POPULATION, len(y)),
                    }
                    if not online:
                        settings["offline_a"] = _RMIA_OFFLINE_A
                settings |= {
                    "mode": "online" if online else "offline",
                    "reference_models": n_refs,
                    "models_per_point": n_refs if online else n_refs // 2,
                }
        result = score_attack(
            attack, scores, members, delta=delta, alpha=alpha, settings=settings, seed=seed
        )
        result.settings["seconds"] = round(
            time.perf_counter() - start + _ref_share(refs, attack), 3
        )
        results.append(result)
    return results, refs


def _ref_share(refs: ReferenceModels | None, attack: str) -> float:
    if refs is None or attack in ("threshold", "label-only"):
        return 0.0
    return refs.seconds

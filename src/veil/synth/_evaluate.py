"""Evaluate a synthetic release: workload error, ML utility, and attacks on its privacy.

:func:`evaluate_release` takes three plain frames from one population,
``real_train`` (the rows the generator was fitted on), ``real_holdout``
(rows it never saw) and ``synth`` (the release), the release's encoder and
its workload, and measures:

* **workload error**: the average total-variation distance (half the L1
  distance between normalised marginals over the encoded cells) between the
  training data and the release, over the workload's cliques; beside it the
  same distance between the training data and the holdout, the error that
  sampling alone gives (a release cannot be expected to beat it);
* **ML utility**: train-on-synthetic, test-on-real (TSTR) against
  train-on-real, test-on-real (TRTR), with one gradient-boosted classifier
  (fixed seed) on the encoded columns: accuracy and ROC AUC for ``target``;
* **privacy attacks** (:mod:`veil.synth._attacks`): a DOMIAS-style
  membership-inference attack with an empirical epsilon lower bound beside
  the claimed epsilon, attribute inference, and distance to closest record
  as a diagnostic only.

The holdout is split at random into disjoint parts: the utility test set
and the attacks' non-members (the same rows: neither use trains on them),
and the attacks' reference sample, so that the reference density never
includes a target.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from veil._io import to_jsonable
from veil.errors import InvalidInputError
from veil.synth._attacks import (
    AttributeAttack,
    Codes,
    DcrDiagnostic,
    EncoderLike,
    MembershipAttack,
    attribute_attack,
    code_matrix,
    distance_to_closest_record,
    learnable,
    membership_attack,
)
from veil.synth._workload import marginal_tvd

__all__ = ["SynthEvaluation", "Utility", "evaluate_release", "marginal_tvd"]

_MAX_HGB_CATEGORIES = 255  # HistGradientBoostingClassifier's limit for a categorical feature


@dataclass(frozen=True)
class Utility:
    """Train on synthetic (TSTR) against train on real (TRTR), both tested on the real holdout."""

    target: str
    tstr_accuracy: float
    trtr_accuracy: float
    tstr_auc: float | None
    trtr_auc: float | None
    majority_accuracy: float  # always the most common training value
    test_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": "HistGradientBoostingClassifier on encoded columns (fixed seed)",
            "tstr_accuracy": self.tstr_accuracy,
            "trtr_accuracy": self.trtr_accuracy,
            "accuracy_gap": self.trtr_accuracy - self.tstr_accuracy,
            "tstr_auc": self.tstr_auc,
            "trtr_auc": self.trtr_auc,
            "majority_accuracy": self.majority_accuracy,
            "test_rows": self.test_rows,
        }


@dataclass(frozen=True)
class SynthEvaluation:
    """Everything :func:`evaluate_release` measured about one release."""

    workload_tvd: float
    workload_tvd_holdout: float  # the training data against the holdout: sampling error alone
    worst_cliques: list[tuple[tuple[str, ...], float]]
    cliques: int
    utility: Utility | None
    membership: MembershipAttack
    attribute: AttributeAttack | None
    dcr: DcrDiagnostic
    claimed_epsilon: float | None
    delta: float
    rows: dict[str, int]
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def empirical_epsilon(self) -> float:
        """The membership attack's epsilon lower bound (0 when it shows nothing)."""
        return self.membership.epsilon_lower_bound

    @property
    def consistent_with_claim(self) -> bool | None:
        """False when the attack proves more epsilon than claimed; None without a claim."""
        if self.claimed_epsilon is None:
            return None
        return self.empirical_epsilon <= self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": {
                "average_tvd": self.workload_tvd,
                "average_tvd_train_vs_holdout": self.workload_tvd_holdout,
                "cliques": self.cliques,
                "worst": [{"clique": list(c), "tvd": v} for c, v in self.worst_cliques],
            },
            "utility": None if self.utility is None else self.utility.to_dict(),
            "privacy": {
                "claimed_epsilon": self.claimed_epsilon,
                "delta": self.delta,
                "empirical_epsilon_lower_bound": self.empirical_epsilon,
                "consistent_with_claim": self.consistent_with_claim,
                "membership": self.membership.to_dict(),
                "attribute": None if self.attribute is None else self.attribute.to_dict(),
            },
            "diagnostics": {"distance_to_closest_record": self.dcr.to_dict()},
            "rows": dict(self.rows),
            "seed": self.seed,
            "seconds": dict(self.seconds),
        }
        return dict(to_jsonable(out))


def _categorical_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Columns whose values are not numbers: their codes are unordered categories."""
    return [
        c
        for c in columns
        if c in frame.columns
        and not (
            pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        )
    ]


def _auc(model: HistGradientBoostingClassifier, x: Codes, y: Codes) -> float | None:
    classes = np.asarray(model.classes_)
    keep = np.isin(y, classes)
    present = np.unique(y[keep])
    if present.size < 2:  # noqa: PLR2004
        return None
    proba = model.predict_proba(x[keep])
    columns = np.searchsorted(classes, present)
    if present.size == 2:  # noqa: PLR2004
        return float(roc_auc_score(y[keep] == present[1], proba[:, columns[1]]))
    sub = proba[:, columns]
    sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
    return float(roc_auc_score(y[keep], sub, multi_class="ovr", labels=present))


def _classify(  # noqa: PLR0917 - two (x, y) pairs and their settings
    x_train: Codes, y_train: Codes, x_test: Codes, y_test: Codes, categorical: list[bool], seed: int
) -> tuple[float, float | None]:
    x_train, y_train = learnable(x_train, y_train)
    if np.unique(y_train).size < 2:  # noqa: PLR2004
        return float((y_test == y_train[0]).mean()), None
    model = HistGradientBoostingClassifier(
        max_iter=200, random_state=seed, categorical_features=categorical or None
    )
    model.fit(x_train, y_train)
    accuracy = float((model.predict(x_test) == y_test).mean())
    return accuracy, _auc(model, x_test, y_test)


def _utility(  # noqa: PLR0917 - private, called once with the evaluation's state
    train: Codes,
    test: Codes,
    synth: Codes,
    columns: Sequence[str],
    sizes: Mapping[str, int],
    categorical: set[str],
    target: str,
    seed: int,
) -> Utility:
    t = list(columns).index(target)
    features = [j for j in range(len(columns)) if j != t]
    flags = [
        columns[j] in categorical and sizes[columns[j]] <= _MAX_HGB_CATEGORIES for j in features
    ]
    tstr = _classify(synth[:, features], synth[:, t], test[:, features], test[:, t], flags, seed)
    trtr = _classify(train[:, features], train[:, t], test[:, features], test[:, t], flags, seed)
    common = np.bincount(train[:, t]).argmax()
    return Utility(
        target=target,
        tstr_accuracy=tstr[0],
        trtr_accuracy=trtr[0],
        tstr_auc=tstr[1],
        trtr_auc=trtr[1],
        majority_accuracy=float((test[:, t] == common).mean()),
        test_rows=len(test),
    )


def _check_frames(frames: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in frames.items():
        if not isinstance(frame, pd.DataFrame) or len(frame) == 0:
            raise InvalidInputError(
                f"{name} must be a non-empty data frame",
                expected="a pandas DataFrame with rows",
                got=type(frame).__name__ if not isinstance(frame, pd.DataFrame) else "no rows",
            )


def evaluate_release(
    real_train: pd.DataFrame,
    real_holdout: pd.DataFrame,
    synth: pd.DataFrame,
    *,
    encoder: EncoderLike,
    workload: Sequence[Sequence[str]],
    target: str | None,
    seed: int,
    sensitive: str | None = None,
    claimed_epsilon: float | None = None,
    delta: float = 0.0,
    attack_targets: int = 2000,
    alpha: float = 0.05,
    threads: int | None = 1,
) -> SynthEvaluation:
    """Measure a release's utility and attack its privacy.

    Args:
        real_train: The rows the generator was fitted on (decoded values).
        real_holdout: Rows of the same population the generator never saw.
        synth: The release (decoded values).
        encoder: The release's encoder (``columns``, ``sizes``, ``encode``).
        workload: The cliques whose marginals the release should preserve.
        target: Column to predict for TSTR (Adult: ``income``); None skips it.
        seed: Fixes the splits and the classifiers' seeds (nothing private).
        sensitive: Column of the attribute-inference attack; defaults to ``target``
            (None for both skips the attack).
        claimed_epsilon: The release's epsilon, to set the empirical bound beside.
        delta: The release's delta (used by the epsilon bound).
        attack_targets: Members and non-members each (at most half the holdout).
        alpha: The bounds hold with probability at least ``1 - alpha``.
        threads: OpenMP/BLAS threads for the classifiers and the attacks' matrix
            products; None leaves the libraries' default (every core). One is the
            default because on a busy 2-core machine the classifiers' threads only
            fight each other (one TSTR fit on 3,000 Adult rows: 2.8 s on one thread,
            54 s on the default two under a load average of 7).
    """
    with threadpool_limits(limits=threads):
        return _evaluate(
            real_train,
            real_holdout,
            synth,
            encoder=encoder,
            workload=workload,
            target=target,
            seed=seed,
            sensitive=sensitive,
            claimed_epsilon=claimed_epsilon,
            delta=delta,
            attack_targets=attack_targets,
            alpha=alpha,
        )


def _evaluate(
    real_train: pd.DataFrame,
    real_holdout: pd.DataFrame,
    synth: pd.DataFrame,
    *,
    encoder: EncoderLike,
    workload: Sequence[Sequence[str]],
    target: str | None,
    seed: int,
    sensitive: str | None,
    claimed_epsilon: float | None,
    delta: float,
    attack_targets: int,
    alpha: float,
) -> SynthEvaluation:
    _check_frames({"real_train": real_train, "real_holdout": real_holdout, "synth": synth})
    columns = tuple(encoder.columns)
    sizes = {c: int(encoder.sizes[c]) for c in columns}
    for name, col in (("target", target), ("sensitive", sensitive)):
        if col is not None and col not in columns:
            raise InvalidInputError(
                f"the {name} column {col!r} is not one of the encoder's columns",
                expected=", ".join(columns),
                got=repr(col),
            )
    unknown = sorted({c for clique in workload for c in clique} - set(columns))
    if unknown:
        raise InvalidInputError(
            "the workload names columns the encoder does not have",
            expected=", ".join(columns),
            got=", ".join(unknown),
        )
    if len(real_holdout) < 4:  # noqa: PLR2004
        raise InvalidInputError(
            "the holdout is too small to split into non-members and a reference sample",
            expected=">= 4 rows (thousands for useful bounds)",
            got=str(len(real_holdout)),
        )
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    codes = {
        name: encoder.encode(frame)
        for name, frame in (("train", real_train), ("holdout", real_holdout), ("synth", synth))
    }
    train, holdout, release = (code_matrix(codes[k], columns, sizes) for k in codes)
    seconds["encode"] = time.perf_counter() - clock

    clock = time.perf_counter()
    per_clique = marginal_tvd(codes["train"], codes["synth"], workload, sizes)
    floor = marginal_tvd(codes["train"], codes["holdout"], workload, sizes)
    ranked = sorted(zip((tuple(c) for c in workload), per_clique, strict=True), key=lambda p: -p[1])
    seconds["workload"] = time.perf_counter() - clock

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    order = rng.permutation(len(holdout))
    n = max(2, min(attack_targets, len(holdout) // 2, len(train)))
    non_members, reference = holdout[order[:n]], holdout[order[n:]]
    members = train[rng.choice(len(train), size=n, replace=False)]

    utility = None
    if target is not None:
        clock = time.perf_counter()
        categorical = set(_categorical_columns(real_train, columns))
        utility = _utility(train, holdout, release, columns, sizes, categorical, target, seed)
        seconds["utility"] = time.perf_counter() - clock

    clock = time.perf_counter()
    size_list = [sizes[c] for c in columns]
    membership = membership_attack(
        members,
        non_members,
        reference,
        release,
        size_list,
        cliques=[[columns.index(c) for c in clique] for clique in workload],
        delta=delta,
        alpha=alpha,
        seed=seed,
    )
    seconds["membership"] = time.perf_counter() - clock

    attribute = None
    column = sensitive if sensitive is not None else target
    if column is not None:
        clock = time.perf_counter()
        attribute = attribute_attack(
            members,
            non_members,
            reference,
            release,
            size_list,
            sensitive=columns.index(column),
            column=column,
            alpha=alpha,
            seed=seed,
        )
        seconds["attribute"] = time.perf_counter() - clock

    clock = time.perf_counter()
    dcr = distance_to_closest_record(release, train, holdout, size_list, seed=seed)
    seconds["dcr"] = time.perf_counter() - clock
    seconds["total"] = sum(seconds.values())
    return SynthEvaluation(
        workload_tvd=float(np.mean(per_clique)) if per_clique else 0.0,
        workload_tvd_holdout=float(np.mean(floor)) if floor else 0.0,
        worst_cliques=ranked[:5],
        cliques=len(per_clique),
        utility=utility,
        membership=membership,
        attribute=attribute,
        dcr=dcr,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        rows={
            "train": len(train),
            "holdout": len(holdout),
            "synthetic": len(release),
            "members": n,
            "non_members": n,
            "reference": len(reference),
        },
        seed=seed,
        seconds=seconds,
    )

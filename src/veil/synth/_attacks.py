"""Privacy attacks on a synthetic release: membership, attribute inference, and a DCR diagnostic.

Every attack works on the *encoded* domain (one integer code per column, from
the release's encoder), where a record is a point of a finite product space
and two records are compared cell by cell.

* **Membership** (:func:`membership_attack`): the density-ratio attack of
  DOMIAS (van Breugel et al., 2023, "Membership inference attacks against
  synthetic data through overfitting detection"). A generator that overfits
  puts more mass near its training records than the population does, so the
  score of a target ``x`` is ``p_synth(x) / p_ref(x)``, with ``p_ref`` fitted on
  population records the generator never saw. Both densities are kernel
  estimates with the Aitchison-Aitken kernel for unordered categories, one
  factor per column: ``K_c(x, s) = 1 - b`` when the codes agree and
  ``b / (|C_c| - 1)`` when they differ, so ``K`` is a proper distribution on the
  domain and a record's mass concentrates on itself and its near neighbours.
  The score is computed in log space (``logmeanexp`` over the sample). Two
  bandwidths are run, a narrow one (copies and near copies) and a wider one
  (local over-representation). With the release's workload, a third score
  looks where a marginal-based generator keeps what it learned: the sum over
  the workload's marginals of ``log p_synth(x_c) - log p_ref(x_c)``, the
  frequencies of the target's own cell in each marginal (a pseudo-count of
  0.1 per cell). A generator fitted to the training rows' marginals without
  noise over-represents each member's rare cells; this is the counting-query
  idea of TAPAS's attacks (Houssiau et al. 2022), with the workload, which
  the release's card publishes, as the queries. The confidence of the epsilon
  bounds is split between the scores (Bonferroni).
* **Attribute inference** (:func:`attribute_attack`): the attacker knows a
  target's other columns and guesses its sensitive column from the release,
  with a classifier trained on the synthetic rows and with the synthetic
  rows nearest to the target (most agreeing cells, majority vote among ties).
  Leakage is the gap between its accuracy on members and on non-members; the
  baseline is the same classifier trained on population records.
* **Distance to closest record** (:func:`distance_to_closest_record`): the
  Hamming distance from synthetic rows to the nearest training row and to the
  nearest holdout row (equal sample sizes). A diagnostic only: similarity
  metrics do not protect against reconstruction, so a "good" DCR is *not* a
  privacy guarantee.

The epsilon lower bounds, ROC and low-FPR rates come from :mod:`veil.audit`
(:func:`veil.audit.score_attack`: Clopper-Pearson with the threshold chosen on a
held-out half). They bound the generator's epsilon from below when members
and non-members are a random split of one population.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special, stats
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from veil.audit import AttackResult, clopper_pearson, score_attack
from veil.errors import InvalidInputError

__all__ = [
    "DOMIAS_BANDWIDTHS",
    "AttributeLeak",
    "DcrDiagnostic",
    "EncoderLike",
    "MembershipAttack",
    "attribute_attack",
    "distance_to_closest_record",
    "membership_attack",
]

DOMIAS_BANDWIDTHS = (0.02, 0.2)
MARGINAL_PSEUDO_COUNT = 0.1  # added to every cell of a marginal before its log frequency
MARGINAL_ATTACK = "marginal-frequency-ratio"
_CELLS_PER_CHUNK = 4_000_000  # float32 entries of one block of the similarity matrix (16 MB)

Codes = npt.NDArray[np.int64]


class EncoderLike(Protocol):
    """What the evaluation needs of ``veil.synth.Encoder``."""

    @property
    def columns(self) -> tuple[str, ...]: ...

    @property
    def sizes(self) -> Mapping[str, int]: ...

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame: ...


def code_matrix(codes: pd.DataFrame, columns: Sequence[str], sizes: Mapping[str, int]) -> Codes:
    """The codes of ``columns`` as an int matrix, each checked against its column's size."""
    missing = [c for c in columns if c not in codes.columns]
    if missing:
        raise InvalidInputError(
            "the encoded frame lacks columns of the encoder",
            expected=", ".join(columns),
            got=f"missing {', '.join(missing)}",
            fix="encode every frame with the release's own encoder",
        )
    out = codes.loc[:, list(columns)].to_numpy(dtype=np.int64, copy=True)
    for j, column in enumerate(columns):
        bad = (out[:, j] < 0) | (out[:, j] >= sizes[column])
        if bad.any():
            raise InvalidInputError(
                f"codes of column {column!r} fall outside its {sizes[column]} cells",
                expected=f"integers in [0, {sizes[column] - 1}]",
                got=f"{int(bad.sum())} rows outside, e.g. {int(out[bad, j][0])}",
                fix="encode every frame with the release's own encoder",
            )
    return out


def _one_hot(
    codes: Codes, sizes: Sequence[int], weights: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float32]:
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.zeros((codes.shape[0], int(np.sum(sizes))), dtype=np.float32)
    rows = np.arange(codes.shape[0])
    for j in range(codes.shape[1]):
        out[rows, offsets[j] + codes[:, j]] = 1.0 if weights is None else weights[j]
    return out


def _blocks(
    targets: Codes,
    sample: Codes,
    sizes: Sequence[int],
    weights: npt.NDArray[np.float64] | None = None,
) -> Iterator[tuple[slice, npt.NDArray[np.float32]]]:
    """Blocks of the (targets x sample) matrix of (weighted) counts of agreeing cells."""
    right = _one_hot(sample, sizes).T.copy()
    step = max(1, _CELLS_PER_CHUNK // max(1, sample.shape[0]))
    for start in range(0, targets.shape[0], step):
        rows = slice(start, min(start + step, targets.shape[0]))
        yield rows, _one_hot(targets[rows], sizes, weights) @ right


def _kernel_log_density(
    targets: Codes, sample: Codes, sizes: Sequence[int], bandwidth: float
) -> npt.NDArray[np.float64]:
    """log of the Aitchison-Aitken product-kernel density of ``sample`` at each target."""
    size = np.asarray(sizes, dtype=np.float64)
    other = np.where(size > 1, bandwidth / np.maximum(size - 1, 1), 1.0)
    same = np.where(size > 1, 1 - bandwidth, 1.0)
    weights = np.log(same) - np.log(other)  # added per agreeing cell
    base = float(np.log(other).sum())  # every cell differs
    out = np.empty(targets.shape[0])
    for rows, agree in _blocks(targets, sample, sizes, weights):
        out[rows] = special.logsumexp(agree.astype(np.float64), axis=1) - math.log(sample.shape[0])
    return out + base


def _cells(rows: Codes, sizes: Sequence[int], clique: Sequence[int]) -> Codes:
    """Each row's cell in the marginal over ``clique`` (row-major index)."""
    index = np.zeros(rows.shape[0], np.int64)
    for j in clique:
        index = index * sizes[j] + rows[:, j]
    return index


def _marginal_log_ratio(
    targets: Codes,
    synthetic: Codes,
    reference: Codes,
    sizes: Sequence[int],
    cliques: Sequence[Sequence[int]],
) -> npt.NDArray[np.float64]:
    """Sum over ``cliques`` of ``log p_synth(x_c) - log p_ref(x_c)`` (smoothed frequencies)."""
    a = MARGINAL_PSEUDO_COUNT
    out = np.zeros(targets.shape[0])
    for clique in cliques:
        cells = math.prod(sizes[j] for j in clique)
        at = _cells(targets, sizes, clique)
        for rows, sign in ((synthetic, 1.0), (reference, -1.0)):
            counts = np.bincount(_cells(rows, sizes, clique), minlength=cells)[at]
            out += sign * np.log((counts + a) / (rows.shape[0] + a * cells))
    return out


@dataclass(frozen=True)
class MembershipAttack:
    """The density-ratio membership attack on a release: one result per score."""

    results: tuple[AttackResult, ...]
    members: int
    non_members: int
    reference_rows: int
    synthetic_rows: int
    alpha: float
    notes: tuple[str, ...] = ()

    @property
    def best(self) -> AttackResult:
        """The bandwidth whose epsilon lower bound is highest (ties: the higher AUC)."""
        return max(
            self.results,
            key=lambda r: (
                r.epsilon.epsilon_lower if math.isfinite(r.epsilon.epsilon_lower) else -1e9,
                r.auc,
            ),
        )

    @property
    def auc(self) -> float:
        return max(r.auc for r in self.results)

    @property
    def epsilon_lower_bound(self) -> float:
        """The highest bound over bandwidths, each at level alpha / bandwidths; 0 when none shows any."""
        return max(0.0, *(r.epsilon.epsilon_lower for r in self.results))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": (
                "DOMIAS density ratio p_synth(x) / p_ref(x), Aitchison-Aitken kernels"
                + (
                    "; the workload's marginal frequencies"
                    if any(r.attack == MARGINAL_ATTACK for r in self.results)
                    else ""
                )
            ),
            "members": self.members,
            "non_members": self.non_members,
            "reference_rows": self.reference_rows,
            "synthetic_rows": self.synthetic_rows,
            "alpha": self.alpha,
            "auc": self.auc,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "confidence": 1 - self.alpha,
            "best": self.best.attack,
            "attacks": [r.to_dict() for r in self.results],
            "notes": list(self.notes),
        }


def membership_attack(
    members: Codes,
    non_members: Codes,
    reference: Codes,
    synthetic: Codes,
    sizes: Sequence[int],
    *,
    bandwidths: Sequence[float] = DOMIAS_BANDWIDTHS,
    cliques: Sequence[Sequence[int]] = (),
    delta: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
) -> MembershipAttack:
    """Score members and non-members by ``log p_synth(x) - log p_ref(x)``: one attack per
    bandwidth, and one over the marginals of ``cliques`` (column indices) if any are given.

    ``members`` are training records of the generator, ``non_members`` and
    ``reference`` disjoint population records it never saw. Each attack's
    bound holds at level ``alpha`` divided by the number of attacks, so the
    highest of them holds at ``alpha``.
    """
    if not bandwidths or any(not 0 < b < 1 for b in bandwidths):
        raise InvalidInputError(
            "kernel bandwidths must lie in (0, 1)",
            expected="e.g. (0.02, 0.2)",
            got=repr(tuple(bandwidths)),
        )
    for name, rows in (("members", members), ("non-members", non_members)):
        if rows.shape[0] < 2:  # noqa: PLR2004
            raise InvalidInputError(
                f"the membership attack needs at least two {name}",
                expected=">= 2 rows (hundreds for a useful bound)",
                got=str(rows.shape[0]),
            )
    for name, rows in (("reference", reference), ("synthetic", synthetic)):
        if rows.shape[0] == 0:
            raise InvalidInputError(
                f"the membership attack needs {name} rows", expected=">= 1 row", got="none"
            )
    targets = np.concatenate([members, non_members])
    is_member = np.concatenate([np.ones(len(members), bool), np.zeros(len(non_members), bool)])
    width = targets.shape[1]
    bad = [list(c) for c in cliques if not c or any(not 0 <= j < width for j in c)]
    if bad:
        raise InvalidInputError(
            "a workload clique names columns the codes do not have",
            expected=f"non-empty lists of column indices in [0, {width - 1}]",
            got=repr(bad[0]),
        )
    level = alpha / (len(bandwidths) + (1 if cliques else 0))
    results = []
    if cliques:
        scores = _marginal_log_ratio(targets, synthetic, reference, sizes, cliques)
        results.append(
            score_attack(
                MARGINAL_ATTACK,
                scores,
                is_member,
                delta=delta,
                alpha=level,
                settings={
                    "cliques": len(cliques),
                    "pseudo_count": MARGINAL_PSEUDO_COUNT,
                    "level": level,
                },
                seed=seed,
            )
        )
    for b in bandwidths:
        scores = _kernel_log_density(targets, synthetic, sizes, b) - _kernel_log_density(
            targets, reference, sizes, b
        )
        results.append(
            score_attack(
                f"domias-kernel-b{b:g}",
                scores,
                is_member,
                delta=delta,
                alpha=level,
                settings={"bandwidth": b, "kernel": "Aitchison-Aitken product", "level": level},
                seed=seed,
            )
        )
    notes = []
    if len(non_members) < 1000:  # noqa: PLR2004
        notes.append(f"only {len(non_members)} non-members: the bounds are loose")
    return MembershipAttack(
        results=tuple(results),
        members=len(members),
        non_members=len(non_members),
        reference_rows=len(reference),
        synthetic_rows=len(synthetic),
        alpha=alpha,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class AttributeLeak:
    """One attacker's accuracy at guessing the sensitive column, on members and non-members."""

    attacker: str
    member_accuracy: float
    non_member_accuracy: float
    member_ci: tuple[float, float]
    non_member_ci: tuple[float, float]
    gap_p_value: float  # H0: same accuracy on members and non-members (two-sided, pooled z)

    @property
    def gap(self) -> float:
        return self.member_accuracy - self.non_member_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "attacker": self.attacker,
            "member_accuracy": self.member_accuracy,
            "non_member_accuracy": self.non_member_accuracy,
            "member_ci95": list(self.member_ci),
            "non_member_ci95": list(self.non_member_ci),
            "gap": self.gap,
            "gap_p_value": self.gap_p_value,
        }


@dataclass(frozen=True)
class AttributeAttack:
    """Attribute inference of one sensitive column from the release."""

    column: str
    attackers: tuple[AttributeLeak, ...]
    baseline_accuracy: float  # the same classifier trained on population (reference) records
    majority_accuracy: float  # always the most common reference value, on the non-members
    members: int
    non_members: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_gap(self) -> float:
        return max(a.gap for a in self.attackers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "members": self.members,
            "non_members": self.non_members,
            "baseline_accuracy": self.baseline_accuracy,
            "majority_accuracy": self.majority_accuracy,
            "max_gap": self.max_gap,
            "attackers": [a.to_dict() for a in self.attackers],
            "notes": list(self.notes),
        }


def learnable(x: Codes, y: Codes) -> tuple[Codes, Codes]:
    """The rows whose class has at least two of them (else those of the most common class).

    A class seen once cannot be learned, and scikit-learn's gradient boosting
    refuses it outright above 10,000 rows (its early stopping holds out a
    stratified validation split). A synthetic release can well hold one row of
    a rare category (a missing income, say): leaving it out changes no
    prediction that could have been made. Never empty when ``y`` is not.
    """
    values, counts = np.unique(y, return_counts=True)
    if counts.min() >= 2:  # noqa: PLR2004
        return x, y
    kept = values[counts >= 2]  # noqa: PLR2004
    if kept.size < 2:  # noqa: PLR2004 - nothing to tell apart: the majority, a constant
        kept = values[[counts.argmax()]]
    keep = np.isin(y, kept)
    return x[keep], y[keep]


def _fit_predict(x: Codes, y: Codes, queries: Codes, seed: int) -> Codes:
    x, y = learnable(x, y)
    if np.unique(y).size == 1:
        return np.full(len(queries), y[0], dtype=np.int64)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=seed)
    # One thread: small fits, and OpenMP threads only fight each other on a busy machine.
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x, y)
        return np.asarray(model.predict(queries), dtype=np.int64)


def _nearest_vote(
    known_targets: Codes, known_synth: Codes, labels: Codes, sizes: Sequence[int]
) -> Codes:
    """The most common label among the synthetic rows agreeing with each target on most cells."""
    n_labels = int(labels.max()) + 1
    votes_of = np.zeros((len(labels), n_labels), dtype=np.float32)
    votes_of[np.arange(len(labels)), labels] = 1.0
    out = np.empty(len(known_targets), dtype=np.int64)
    for rows, agree in _blocks(known_targets, known_synth, sizes):
        nearest = (agree >= agree.max(axis=1, keepdims=True) - 0.5).astype(np.float32)
        out[rows] = (nearest @ votes_of).argmax(axis=1)
    return out


def _leak(
    attacker: str, hits_in: npt.NDArray[np.bool_], hits_out: npt.NDArray[np.bool_], alpha: float
) -> AttributeLeak:
    k1, n1, k0, n0 = int(hits_in.sum()), len(hits_in), int(hits_out.sum()), len(hits_out)
    pooled = (k1 + k0) / (n1 + n0)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n0), 0.0))
    diff = k1 / n1 - k0 / n0
    p_value = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(diff) / se))
    if se == 0 and diff != 0:
        p_value = 0.0
    return AttributeLeak(
        attacker=attacker,
        member_accuracy=k1 / n1,
        non_member_accuracy=k0 / n0,
        member_ci=clopper_pearson(k1, n1, alpha),
        non_member_ci=clopper_pearson(k0, n0, alpha),
        gap_p_value=p_value,
    )


def attribute_attack(
    members: Codes,
    non_members: Codes,
    reference: Codes,
    synthetic: Codes,
    sizes: Sequence[int],
    *,
    sensitive: int,
    column: str,
    alpha: float = 0.05,
    seed: int = 0,
) -> AttributeAttack:
    """Guess column ``sensitive`` of members and non-members from their other columns and the release."""
    if len(sizes) < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "attribute inference needs at least one known column besides the sensitive one",
            expected=">= 2 columns",
            got=str(len(sizes)),
        )
    known = [j for j in range(len(sizes)) if j != sensitive]
    known_sizes = [sizes[j] for j in known]
    targets = np.concatenate([members, non_members])
    truth = targets[:, sensitive]
    n1 = len(members)
    attackers = []
    guess = _fit_predict(synthetic[:, known], synthetic[:, sensitive], targets[:, known], seed)
    hits = guess == truth
    attackers.append(_leak("classifier trained on the release", hits[:n1], hits[n1:], alpha))
    guess = _nearest_vote(
        targets[:, known], synthetic[:, known], synthetic[:, sensitive], known_sizes
    )
    hits = guess == truth
    attackers.append(_leak("nearest synthetic records", hits[:n1], hits[n1:], alpha))
    baseline = _fit_predict(
        reference[:, known], reference[:, sensitive], non_members[:, known], seed
    )
    common = np.bincount(reference[:, sensitive]).argmax()
    return AttributeAttack(
        column=column,
        attackers=tuple(attackers),
        baseline_accuracy=float((baseline == non_members[:, sensitive]).mean()),
        majority_accuracy=float((non_members[:, sensitive] == common).mean()),
        members=n1,
        non_members=len(non_members),
    )


@dataclass(frozen=True)
class DcrDiagnostic:
    """Distances from synthetic rows to their closest training and holdout rows (a diagnostic)."""

    to_train: tuple[int, ...]  # histogram: rows at Hamming distance 0, 1, 2, ...
    to_holdout: tuple[int, ...]
    synthetic_rows: int
    compared_rows: int  # training rows and holdout rows compared against (equal numbers)

    label = "diagnostic only: not a privacy guarantee"

    def share_exact(self, which: str) -> float:
        hist = self.to_train if which == "train" else self.to_holdout
        return hist[0] / max(1, self.synthetic_rows)

    def median(self, which: str) -> int:
        hist = np.asarray(self.to_train if which == "train" else self.to_holdout)
        return int(np.searchsorted(np.cumsum(hist), (self.synthetic_rows + 1) / 2))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": "Hamming distance on encoded codes",
            "synthetic_rows": self.synthetic_rows,
            "compared_rows": self.compared_rows,
            "histogram_to_train": list(self.to_train),
            "histogram_to_holdout": list(self.to_holdout),
            "share_exact_train": self.share_exact("train"),
            "share_exact_holdout": self.share_exact("holdout"),
            "median_to_train": self.median("train"),
            "median_to_holdout": self.median("holdout"),
        }


def distance_to_closest_record(
    synthetic: Codes,
    train: Codes,
    holdout: Codes,
    sizes: Sequence[int],
    *,
    rows: int = 2000,
    seed: int = 0,
) -> DcrDiagnostic:
    """Hamming DCR of up to ``rows`` synthetic rows to as many training as holdout rows."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDC]))
    n = min(len(train), len(holdout))
    if n == 0 or len(synthetic) == 0:
        raise InvalidInputError(
            "DCR needs synthetic, training and holdout rows",
            expected=">= 1 row of each",
            got=f"{len(synthetic)}, {len(train)}, {len(holdout)}",
        )
    pick = synthetic[rng.choice(len(synthetic), size=min(rows, len(synthetic)), replace=False)]
    width = synthetic.shape[1]

    def histogram(against: Codes) -> tuple[int, ...]:
        sub = against[rng.choice(len(against), size=n, replace=False)]
        nearest = np.empty(len(pick), dtype=np.int64)
        for block, agree in _blocks(pick, sub, sizes):
            nearest[block] = width - np.rint(agree.max(axis=1)).astype(np.int64)
        return tuple(int(v) for v in np.bincount(nearest, minlength=width + 1))

    return DcrDiagnostic(
        to_train=histogram(train),
        to_holdout=histogram(holdout),
        synthetic_rows=len(pick),
        compared_rows=n,
    )

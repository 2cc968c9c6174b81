"""Lower bounds on epsilon from what an attack achieves (Clopper-Pearson, and one training run).

Differential privacy bounds every test an attacker can run: for any event
``S``, ``P[M(D1) in S] <= e^eps P[M(D0) in S] + delta``. An attack that tells
members from non-members with true-positive rate ``TPR`` at false-positive
rate ``FPR`` therefore proves ``eps >= ln((TPR - delta) / FPR)`` (and the same
with the roles of the two errors swapped). The rates are estimated, so Veil
takes exact Clopper-Pearson bounds: with probability at least ``1 - alpha``
the returned bound is *below* the true epsilon of a correct mechanism. A bound
above a model's claimed epsilon is evidence that the claim is wrong.

:func:`one_run_epsilon` is the audit of Steinke, Nasr and Jagielski (2023,
"Privacy auditing with one (1) training run"): ``m`` canaries, each included
independently with probability 1/2, one training run, and an attacker who
guesses "in" for its ``k+`` highest scores and "out" for its ``k-`` lowest.
Under (eps, delta)-DP the number of correct guesses is dominated by a binomial
with success probability ``e^eps / (1 + e^eps)``, plus a term in delta (their
Theorem 3.3 / Algorithm 2); the bound is the largest eps that this
distribution rejects at level ``alpha``. The code here is written from the
paper's statement, because no maintained library ships it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from veil.errors import InvalidInputError

__all__ = [
    "EpsilonBound",
    "clopper_pearson",
    "epsilon_from_scores",
    "epsilon_lower_bound",
    "one_run_epsilon",
    "one_run_p_value",
]


_MIN_POINTS = 4  # two per half, at the very least


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise InvalidInputError(
            "alpha must lie in (0, 1)", expected="e.g. 0.05 for 95% confidence", got=repr(alpha)
        )


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided ``1 - alpha`` interval for a binomial proportion from ``k`` of ``n``.

    Each side fails with probability at most ``alpha / 2``, so either end alone
    is a one-sided bound at level ``alpha / 2``.
    """
    _check_alpha(alpha)
    if not 0 <= k <= n or n <= 0:
        raise InvalidInputError(
            "a binomial count needs 0 <= k <= n and n > 0", expected="0 <= k <= n", got=f"{k}/{n}"
        )
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def epsilon_lower_bound(
    k0: int, n0: int, k1: int, n1: int, alpha: float, *, delta: float = 0.0
) -> float:
    """Lower confidence bound on epsilon from ``P[M(D1) in S] <= e^eps P[M(D0) in S] + delta``.

    ``k1`` of ``n1`` runs on D1 and ``k0`` of ``n0`` runs on D0 fell in ``S``,
    an event fixed before these runs were seen. Returns
    ``ln((P1_lower - delta) / P0_upper)`` with Clopper-Pearson ends that each
    fail with probability ``alpha / 2``: for an (eps, delta)-DP mechanism the
    result exceeds eps with probability at most ``alpha``. ``-inf`` when the
    data show nothing.
    """
    p1_lower = clopper_pearson(k1, n1, alpha)[0]
    p0_upper = clopper_pearson(k0, n0, alpha)[1]
    if p1_lower <= delta or p0_upper <= 0:
        return -math.inf
    return math.log((p1_lower - delta) / p0_upper)


@dataclass(frozen=True)
class EpsilonBound:
    """A measured lower bound on epsilon, with how it was obtained."""

    method: str
    epsilon_lower: float  # holds with probability >= confidence; -inf: nothing shown
    epsilon_point: float  # the same quantity from the raw rates (no confidence margin)
    confidence: float
    delta: float
    detail: dict[str, Any]

    @property
    def shown(self) -> float:
        """The bound clipped at 0 (a negative bound shows nothing)."""
        return max(0.0, self.epsilon_lower)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("epsilon_lower", "epsilon_point"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


def _rate_bound(counts: tuple[int, int, int, int], alpha: float, delta: float) -> float:
    """The better of the two DP inequalities (TPR vs FPR and TNR vs FNR), Bonferroni over both."""
    tp, fn, fp, tn = counts
    members, others = tp + fn, fp + tn
    first = epsilon_lower_bound(fp, others, tp, members, alpha / 2, delta=delta)
    second = epsilon_lower_bound(fn, members, tn, others, alpha / 2, delta=delta)
    return max(first, second)


def _point(tp: int, fn: int, fp: int, tn: int, delta: float) -> float:
    tpr = tp / max(1, tp + fn)
    fpr = fp / max(1, fp + tn)
    values = []
    if tpr - delta > 0 and fpr > 0:
        values.append(math.log((tpr - delta) / fpr))
    if (1 - fpr) - delta > 0 and (1 - tpr) > 0:
        values.append(math.log((1 - fpr - delta) / (1 - tpr)))
    if tpr - delta > 0 and fpr == 0:
        values.append(math.inf)
    return max(values) if values else -math.inf


def _confusion(
    scores: npt.NDArray[np.float64], members: npt.NDArray[np.bool_], threshold: float
) -> tuple[int, int, int, int]:
    guess = scores >= threshold
    tp = int((guess & members).sum())
    fp = int((guess & ~members).sum())
    return tp, int(members.sum()) - tp, fp, int((~members).sum()) - fp


def epsilon_from_scores(
    scores: npt.ArrayLike,
    members: npt.ArrayLike,
    *,
    delta: float = 0.0,
    alpha: float = 0.05,
    seed: int = 0,
) -> EpsilonBound:
    """Epsilon lower bound from membership scores (higher = "member").

    The threshold is chosen on one random half of the points (where it gives the
    largest point estimate) and the Clopper-Pearson bound is computed on the
    other half, so choosing it costs no confidence. Valid when each point's
    membership was decided at random, independently of the point (a random
    train/test split, or canaries included by a coin flip). ``seed`` fixes only
    the split, not anything private.
    """
    _check_alpha(alpha)
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(members, dtype=bool)
    if s.shape != m.shape or s.ndim != 1 or s.size < _MIN_POINTS:
        raise InvalidInputError(
            "scores and membership labels must be 1-D arrays of one length (>= 4)",
            expected="matching 1-D arrays",
            got=f"shapes {s.shape} and {m.shape}",
        )
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x57])).permutation(s.size)
    pick, held = order[: s.size // 2], order[s.size // 2 :]
    candidates = np.unique(np.quantile(s[pick], np.linspace(0.0, 1.0, 201)))
    best, best_t = -math.inf, float(candidates[-1])
    pick_members = int(m[pick].sum())
    for t in candidates:
        counts = _confusion(s[pick], m[pick], float(t))
        if pick_members in (0, len(pick)):
            break
        # The threshold that maximises the *confidence bound* on this half (a point estimate
        # would chase tiny tail counts).
        value = _rate_bound(counts, alpha, delta)
        if math.isfinite(value) and value > best:
            best, best_t = value, float(t)
    tp, fn, fp, tn = _confusion(s[held], m[held], best_t)
    lower = (
        -math.inf if tp + fn == 0 or fp + tn == 0 else _rate_bound((tp, fn, fp, tn), alpha, delta)
    )
    return EpsilonBound(
        method="clopper-pearson (threshold chosen on the other half)",
        epsilon_lower=lower,
        epsilon_point=_point(tp, fn, fp, tn, delta),
        confidence=1 - alpha,
        delta=delta,
        detail={"threshold": best_t, "tp": tp, "fn": fn, "fp": fp, "tn": tn},
    )


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least ``v`` of ``r`` guesses right] under (epsilon, delta)-DP, ``m`` canaries.

    Steinke, Nasr and Jagielski (2023), Theorem 3.3: the binomial tail at
    ``q = e^eps / (1 + e^eps)``, plus ``2 m delta`` times the largest average
    of the binomial mass just below ``v``.
    """
    if not 0 <= v <= r <= m:
        raise InvalidInputError(
            "need 0 <= v <= r <= m", expected="0 <= v <= r <= m", got=f"m={m}, r={r}, v={v}"
        )
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ...
    ratios = np.cumsum(below) / np.arange(1, v + 1)
    return min(1.0, tail + float(ratios.max()) * delta * 2 * m)


def _one_run_bound(m: int, r: int, v: int, delta: float, alpha: float) -> float:
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha and hi < 100:  # noqa: PLR2004
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_epsilon(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    *,
    delta: float = 0.0,
    alpha: float = 0.05,
    guesses: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
) -> EpsilonBound:
    """Epsilon lower bound from one run with canaries (Steinke, Nasr and Jagielski 2023).

    ``included[i]`` says whether canary ``i`` (each included by an independent
    fair coin) was in the training data; ``scores[i]`` is the attacker's score
    (higher = "in"). For each fraction ``f`` of ``guesses``, the attacker
    guesses on the ``f m / 2`` highest and ``f m / 2`` lowest scores; the
    confidence is split evenly over the fractions tried (Bonferroni).
    """
    _check_alpha(alpha)
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1 or s.size < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "scores and inclusion flags must be 1-D arrays of one length",
            expected="matching 1-D arrays",
            got=f"shapes {s.shape} and {inc.shape}",
        )
    m = s.size
    order = np.argsort(-s, kind="stable")
    best: tuple[float, int, int, float] = (0.0, 0, 0, 0.0)
    level = alpha / len(guesses)
    for fraction in guesses:
        k = max(1, int(fraction * m / 2))
        top, bottom = order[:k], order[m - k :]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        bound = _one_run_bound(m, 2 * k, v, delta, level)
        if bound > best[0] or best[1] == 0:
            best = (bound, 2 * k, v, fraction)
    bound, r, v, fraction = best
    return EpsilonBound(
        method="one run (Steinke, Nasr & Jagielski 2023)",
        epsilon_lower=bound,
        epsilon_point=math.log(v / (r - v)) if 0 < v < r else (math.inf if v == r else -math.inf),
        confidence=1 - alpha,
        delta=delta,
        detail={"canaries": m, "guesses": r, "correct": v, "guess_fraction": fraction},
    )

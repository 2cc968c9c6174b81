"""Differentially private mechanisms, each with the ledger event that describes it.

Every mechanism is calibrated from a declared sensitivity and a target
epsilon (and delta), exposes its noise scale and confidence intervals, and
carries a :class:`~veil.ledger.Mechanism` for the ledger. Noise comes from
OpenDP (:mod:`veil.dp._noise`).

* :class:`LaplaceMechanism`, :class:`GaussianMechanism` (float and integer).
* :func:`exponential_mechanism`: report-noisy-max with exponential noise
  (permute-and-flip; at least as accurate as the softmax exponential mechanism).
* :func:`exponential_selection`: the exponential mechanism itself (softmax,
  by Gumbel noisy max), charged as an :class:`~veil.ledger.ExponentialDpEvent`
  whose zCDP cost is epsilon^2 / 8: the selection step of AIM and MST.
* :class:`AboveThreshold`: the sparse vector technique (Lyu, Su and Li 2017,
  Algorithm 1 with the budget split evenly between threshold and queries).
* :class:`RandomizedResponse` and :class:`FrequencyOracle`, the local model:
  each client randomises its own value before sending it; the server only
  estimates frequencies (generalised randomized response, or unary encoding
  as in Wang et al. 2017 "Locally differentially private protocols for
  frequency estimation").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from veil.dp._noise import (
    bitvector_response,
    categorical_response,
    gaussian_noise,
    gumbel_max,
    laplace_noise,
    noisy_max,
)
from veil.errors import InvalidInputError
from veil.ledger import (
    Mechanism,
    PLDAccountant,
    gaussian_epsilon,
)
from veil.ledger.params import check_delta, check_epsilon, check_positive, check_probability

__all__ = [
    "AboveThreshold",
    "FrequencyEstimate",
    "FrequencyOracle",
    "GaussianMechanism",
    "LaplaceMechanism",
    "RandomizedResponse",
    "exponential_mechanism",
    "exponential_selection",
    "gaussian_sigma",
    "laplace_half_width",
]


def laplace_half_width(scale: float, level: float, *, integer: bool = False) -> float:
    """Half-width ``t`` with ``P(|noise| <= t) >= level`` for (discrete) Laplace noise of ``scale``."""
    check_probability(level, "confidence level")
    if not integer:
        return scale * math.log(1.0 / (1.0 - level))
    # Discrete Laplace, P(k) = (1 - a) / (1 + a) * a^|k|, a = exp(-1/scale):
    # P(|Z| > t) = 2 a^(t+1) / (1 + a) for integers t >= 0.
    a = math.exp(-1.0 / scale)
    if a <= 0.0:  # the noise is 0 with probability 1 - 1e-300 or more
        return 0.0
    t = math.log((1.0 - level) * (1 + a) / 2) / math.log(a) - 1
    return float(max(0, math.ceil(t)))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """The smallest sigma for which the Gaussian mechanism is (epsilon, delta)-DP (exact, Balle and Wang 2018)."""
    check_epsilon(epsilon)
    check_delta(delta, allow_zero=False)
    low, high = 0.5, 1.0
    while gaussian_epsilon(high, delta) > epsilon:
        high *= 2
    while gaussian_epsilon(low, delta) <= epsilon:
        low /= 2
    for _ in range(60):
        mid = (low + high) / 2
        if gaussian_epsilon(mid, delta) > epsilon:
            low = mid
        else:
            high = mid
    return high * sensitivity


@dataclass(frozen=True)
class LaplaceMechanism:
    """Laplace noise of scale ``sensitivity / epsilon`` (epsilon-DP).

    Args:
        epsilon: Privacy parameter (> 0).
        sensitivity: Declared L1 sensitivity of the query (> 0).
        integer: Integer-valued query: discrete Laplace noise, integer outputs.
    """

    epsilon: float
    sensitivity: float
    integer: bool = False

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_positive(self.sensitivity, "sensitivity")
        if self.integer and float(self.sensitivity) != int(self.sensitivity):
            raise InvalidInputError(
                "an integer query needs an integer sensitivity",
                expected="a whole number",
                got=repr(self.sensitivity),
            )

    @property
    def scale(self) -> float:
        return self.sensitivity / self.epsilon

    @property
    def std(self) -> float:
        if self.integer:
            a = math.exp(-1.0 / self.scale)
            return math.sqrt(2 * a) / (1 - a)
        return math.sqrt(2) * self.scale

    @property
    def mechanism(self) -> Mechanism:
        if self.integer:
            return Mechanism.discrete_laplace(self.scale, int(self.sensitivity))
        return Mechanism.laplace(self.scale, self.sensitivity)

    def release(self, values: Any) -> np.ndarray:
        """Noisy ``values`` (any shape; each entry gets independent noise)."""
        return laplace_noise(values, self.scale, integer=self.integer)

    def half_width(self, level: float = 0.95) -> float:
        """Half-width of a ``level`` confidence interval around a released value."""
        return laplace_half_width(self.scale, level, integer=self.integer)


@dataclass(frozen=True)
class GaussianMechanism:
    """Gaussian noise calibrated exactly to (epsilon, delta) (the analytic Gaussian mechanism).

    Args:
        epsilon, delta: Privacy parameters (delta > 0).
        sensitivity: Declared L2 sensitivity.
        integer: Integer-valued query: discrete Gaussian noise with the same sigma.
    """

    epsilon: float
    delta: float
    sensitivity: float
    integer: bool = False

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_delta(self.delta, allow_zero=False)
        check_positive(self.sensitivity, "sensitivity")
        sigma = gaussian_sigma(self.epsilon, self.delta, self.sensitivity)
        if self.integer:
            # The discrete Gaussian's PLD differs slightly from the continuous one; widen
            # sigma until the ledger's accountant agrees the target holds.
            accountant = PLDAccountant()
            while (
                accountant.epsilon(
                    [Mechanism.discrete_gaussian(sigma, int(self.sensitivity)).dp_event], self.delta
                )
                > self.epsilon
            ):
                sigma *= 1.001
        object.__setattr__(self, "_sigma", sigma)

    @property
    def sigma(self) -> float:
        return float(self._sigma)  # type: ignore[attr-defined]

    @property
    def scale(self) -> float:
        return self.sigma

    @property
    def std(self) -> float:
        return self.sigma

    @property
    def mechanism(self) -> Mechanism:
        if self.integer:
            return Mechanism.discrete_gaussian(self.sigma, int(self.sensitivity))
        return Mechanism.gaussian(self.sigma, self.sensitivity)

    def release(self, values: Any) -> np.ndarray:
        return gaussian_noise(values, self.sigma, integer=self.integer)

    def half_width(self, level: float = 0.95) -> float:
        check_probability(level, "confidence level")
        width = float(stats.norm.ppf(0.5 + level / 2)) * self.sigma
        return float(math.ceil(width)) if self.integer else width


def exponential_mechanism(
    scores: Sequence[float] | np.ndarray,
    epsilon: float,
    sensitivity: float,
    *,
    monotonic: bool = False,
) -> tuple[int, Mechanism]:
    """Report-noisy-max with exponential noise: an epsilon-DP choice of the best-scoring index.

    Each score gets independent exponential noise of scale ``2 sensitivity / epsilon``
    (``sensitivity / epsilon`` with ``monotonic=True``, when every score moves in
    the same direction between neighbours, as counts do) and the largest noisy
    score wins (OpenDP's ``make_noisy_max``). This is distributed as the
    permute-and-flip mechanism (McKenna and Sheldon 2020), never less accurate
    than the exponential mechanism's softmax at the same epsilon. Two candidates
    whose scores differ by ``d`` swap with probability ``exp(-d / scale) / 2``.

    Returns:
        The chosen index and the mechanism to charge.
    """
    check_epsilon(epsilon)
    check_positive(sensitivity, "sensitivity")
    if len(scores) == 0:
        raise InvalidInputError("no candidates to choose from", expected=">= 1 score", got="0")
    scale = (1.0 if monotonic else 2.0) * sensitivity / epsilon
    index = noisy_max(np.asarray(scores, dtype=float), scale, monotonic=monotonic)
    mech = Mechanism.epsilon_delta(
        "report_noisy_max",
        epsilon,
        0.0,
        sensitivity=sensitivity,
        noise_scale=scale,
        candidates=len(scores),
        monotonic=monotonic,
    )
    return index, mech


def exponential_selection(
    scores: Sequence[float] | np.ndarray, epsilon: float, sensitivity: float
) -> tuple[int, Mechanism]:
    """The exponential mechanism: index ``i`` with probability proportional to ``exp(eps s_i / (2 sensitivity))``.

    Sampled as the largest score after Gumbel noise of scale ``2 sensitivity /
    epsilon`` (OpenDP's ``make_noisy_max`` under zCDP), which is the softmax
    exactly. ``sensitivity`` bounds how much any one score moves between
    neighbouring datasets, in either direction (scores need not be monotonic).
    The choice is epsilon-DP and epsilon-bounded-range, so it is charged as an
    :class:`~veil.ledger.ExponentialDpEvent`: ``epsilon^2 / 8`` of a zCDP
    budget, a quarter of what :func:`exponential_mechanism` costs there
    (report-noisy-max with exponential noise is more accurate at the same
    epsilon, but has no bounded-range guarantee on record).

    >>> index, mechanism = exponential_selection([0.0, 10.0, 0.0], epsilon=1.0, sensitivity=1.0)
    >>> mechanism.name, mechanism.parameters["noise_scale"]
    ('exponential', 2.0)

    Returns:
        The chosen index and the mechanism to charge.
    """
    check_epsilon(epsilon)
    check_positive(sensitivity, "sensitivity")
    if len(scores) == 0:
        raise InvalidInputError(
            "no candidates to choose from",
            expected=">= 1 score",
            got="0",
            fix="pass one score per candidate",
        )
    scale = 2.0 * sensitivity / epsilon
    index = gumbel_max(np.asarray(scores, dtype=float), scale)
    mech = Mechanism.exponential(
        epsilon, sensitivity, candidates=len(scores), noise="gumbel", noise_scale=scale
    )
    return index, mech


@dataclass
class AboveThreshold:
    """The sparse vector technique: report the first query whose answer exceeds a threshold.

    The whole run is epsilon-DP however many queries are asked before one is
    above the threshold; it halts at the first "above" (ask again with a new
    instance and new budget). Threshold noise Lap(2 s / epsilon), query noise
    Lap(4 s / epsilon) for queries of sensitivity ``s``.
    """

    epsilon: float
    threshold: float
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_positive(self.sensitivity, "sensitivity")
        if not math.isfinite(self.threshold):
            raise InvalidInputError("threshold must be finite", got=repr(self.threshold))
        self._noisy_threshold: float | None = None
        self._halted = False

    @property
    def threshold_scale(self) -> float:
        return 2 * self.sensitivity / self.epsilon

    @property
    def query_scale(self) -> float:
        return 4 * self.sensitivity / self.epsilon

    @property
    def mechanism(self) -> Mechanism:
        return Mechanism.epsilon_delta(
            "sparse_vector",
            self.epsilon,
            0.0,
            sensitivity=self.sensitivity,
            threshold=self.threshold,
            threshold_scale=self.threshold_scale,
            query_scale=self.query_scale,
        )

    def run(self, answers: Iterable[float]) -> int | None:
        """Index of the first answer judged above the threshold, or ``None`` if none was."""
        if self._halted:
            raise InvalidInputError(
                "this AboveThreshold instance has already reported; its budget is used",
                expected="a fresh instance",
                got="a second run",
                fix="create a new AboveThreshold (and charge its epsilon again)",
            )
        self._halted = True
        noisy_t = float(laplace_noise([self.threshold], self.threshold_scale)[0])
        for i, answer in enumerate(answers):
            if float(laplace_noise([float(answer)], self.query_scale)[0]) >= noisy_t:
                return i
        return None


@dataclass(frozen=True)
class FrequencyEstimate:
    """Estimated counts per category from locally randomised reports.

    ``std`` is one conservative standard deviation valid for every category.
    """

    categories: tuple[str, ...]
    counts: np.ndarray
    std: float
    reports: int
    method: str

    def ci(self, level: float = 0.95) -> np.ndarray:
        """Normal-approximation ``level`` intervals, one row per category."""
        z = float(stats.norm.ppf(0.5 + level / 2))
        return np.stack([self.counts - z * self.std, self.counts + z * self.std], axis=1)

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        intervals = self.ci(level)
        return {
            "method": self.method,
            "reports": self.reports,
            "std": self.std,
            "ci_level": level,
            "estimates": [
                {"category": c, "count": float(n), "ci": [float(lo), float(hi)]}
                for c, n, (lo, hi) in zip(self.categories, self.counts, intervals, strict=True)
            ],
        }


@dataclass(frozen=True)
class RandomizedResponse:
    """k-ary randomized response with local epsilon: the truth with ``e^eps / (e^eps + k - 1)``."""

    epsilon: float
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        _check_categories(self.categories)

    @property
    def truth_probability(self) -> float:
        e = math.exp(self.epsilon)
        return e / (e + len(self.categories) - 1)

    @property
    def mechanism(self) -> Mechanism:
        return Mechanism.randomized_response(self.truth_probability, len(self.categories))

    def randomize(self, value: str) -> str:
        """What a client sends instead of ``value`` (runs on the client)."""
        if value not in self.categories:
            raise InvalidInputError(
                "value is not one of the declared categories",
                expected=f"one of {list(self.categories)}",
                got=repr(value),
            )
        return categorical_response(value, tuple(self.categories), self.truth_probability)

    def estimate(self, reports: Iterable[str]) -> FrequencyEstimate:
        """Unbiased counts per category from the clients' reports (runs on the server)."""
        index = {c: i for i, c in enumerate(self.categories)}
        observed = np.zeros(len(self.categories))
        n = 0
        for r in reports:
            if r not in index:
                raise InvalidInputError(
                    "a report is not one of the declared categories",
                    expected=f"one of {list(self.categories)}",
                    got=repr(r),
                )
            observed[index[r]] += 1
            n += 1
        k = len(self.categories)
        p = self.truth_probability
        q = (1 - p) / (k - 1)
        counts = (observed - n * q) / (p - q)
        return FrequencyEstimate(
            tuple(self.categories), counts, math.sqrt(n) * _grr_unit_std(p, q), n, "grr"
        )


@dataclass(frozen=True)
class FrequencyOracle:
    """A local-DP frequency oracle over known categories.

    ``method="grr"`` is generalised randomized response; ``"unary"`` is
    symmetric unary encoding (RAPPOR's permanent randomized response on a
    one-hot vector, via OpenDP). ``"auto"`` picks the one with smaller
    variance: GRR when ``k < 3 e^eps + 2`` (Wang et al. 2017).
    """

    epsilon: float
    categories: tuple[str, ...]
    method: str = "auto"

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        _check_categories(self.categories)
        if self.method not in {"auto", "grr", "unary"}:
            raise InvalidInputError(
                "unknown frequency-oracle method", expected="auto, grr or unary", got=self.method
            )
        if self.method == "auto":
            grr = RandomizedResponse(self.epsilon, self.categories)
            p, q = grr.truth_probability, (1 - grr.truth_probability) / (len(self.categories) - 1)
            f = self.flip
            unary = math.sqrt(f / 2 * (1 - f / 2)) / (1 - f)
            object.__setattr__(self, "method", "grr" if _grr_unit_std(p, q) <= unary else "unary")

    @property
    def flip(self) -> float:
        """Unary encoding: probability that a bit is replaced by a fair coin."""
        # A one-hot change moves two bits: eps = 2 ln((1 - f/2) / (f/2)).
        return 2.0 / (1.0 + math.exp(self.epsilon / 2))

    @property
    def mechanism(self) -> Mechanism:
        if self.method == "grr":
            return RandomizedResponse(self.epsilon, self.categories).mechanism
        return Mechanism.epsilon_delta(
            "unary_encoding", self.epsilon, 0.0, flip=self.flip, width=len(self.categories)
        )

    def randomize(self, value: str) -> str | np.ndarray:
        """The report a client sends (a category for GRR, a bit vector for unary)."""
        if self.method == "grr":
            return RandomizedResponse(self.epsilon, self.categories).randomize(value)
        if value not in self.categories:
            raise InvalidInputError(
                "value is not one of the declared categories",
                expected=f"one of {list(self.categories)}",
                got=repr(value),
            )
        return bitvector_response(self.categories.index(value), len(self.categories), self.flip)

    def estimate(self, reports: Iterable[Any]) -> FrequencyEstimate:
        if self.method == "grr":
            return RandomizedResponse(self.epsilon, self.categories).estimate(reports)
        k = len(self.categories)
        ones = np.zeros(k)
        n = 0
        for r in reports:
            bits = np.asarray(r, dtype=float)
            if bits.shape != (k,):
                raise InvalidInputError(
                    "a unary report has the wrong length",
                    expected=f"{k} bits (one per category)",
                    got=f"shape {bits.shape}",
                )
            ones += bits
            n += 1
        p, q = 1 - self.flip / 2, self.flip / 2
        counts = (ones - n * q) / (p - q)
        std = math.sqrt(n * q * (1 - q)) / (p - q)
        return FrequencyEstimate(tuple(self.categories), counts, std, n, "unary")


def _grr_unit_std(p: float, q: float) -> float:
    """Per-report standard deviation of a GRR count estimate, for any category size.

    ``Var = (n_v p(1-p) + (n - n_v) q(1-q)) / (p-q)^2`` is linear in the
    category's true size ``n_v``; its maximum over ``0 <= n_v <= n`` makes the
    reported error conservative for every category (for two categories, and
    for unary encoding, ``p(1-p) = q(1-q)`` and the bound is exact).
    """
    return math.sqrt(max(p * (1 - p), q * (1 - q))) / (p - q)


def _check_categories(categories: Sequence[str]) -> None:
    if len(categories) < 2 or len(set(categories)) != len(categories):  # noqa: PLR2004
        raise InvalidInputError(
            "randomized response needs at least two distinct categories",
            expected=">= 2 distinct categories",
            got=repr(list(categories)),
        )

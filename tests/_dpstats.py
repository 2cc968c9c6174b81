"""Statistical helpers for tests of randomized and privacy code (STYLE.md, "Testing randomized ...").

OpenDP's samplers cannot be seeded, so tests of noise are statistical: each
fixes a false-failure rate ``alpha`` and uses an exact or conservative bound,
so that a correct implementation fails with probability at most ``alpha``.

* :func:`clopper_pearson` (from :mod:`veil.audit`), :func:`wilson`: intervals
  for a binomial proportion.
* :func:`epsilon_lower_bound` (from :mod:`veil.audit`): an empirical DP audit. Run a mechanism ``n0``
  times on a dataset D0 and ``n1`` times on a neighbour D1, count how often
  the output falls in an event ``S`` chosen before sampling (``k0``, ``k1``);
  with probability at least ``1 - alpha`` the returned value is at most the
  mechanism's true epsilon, so ``bound > claimed epsilon`` is evidence of a bug.
* :func:`audit_power_floor`: what that audit reaches, with probability at
  least ``1 - 2 alpha``, when the mechanism is exactly as noisy as claimed; a
  floor above ``epsilon / 2`` means an audit that asserts ``bound >= floor``
  also catches a mechanism twice as noisy as it says (it would waste utility).
* :func:`ks_statistic`, :func:`ks_critical_value`: a one-sample
  Kolmogorov-Smirnov test against an exact distribution, continuous or on the
  integers (conservative there); :func:`discrete_gaussian_cdf` is the exact
  distribution of OpenDP's integer Gaussian noise.
* :func:`bernstein_half_width`: a rigorous (not asymptotic) deviation bound
  for a sum of independent bounded terms, e.g. counts of randomised reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

# The audit's own bounds (veil.audit): the tests of every mechanism and the product's audit
# report use one implementation.
from veil.audit import clopper_pearson, epsilon_lower_bound

__all__ = [
    "audit_power_floor",
    "bernstein_half_width",
    "clopper_pearson",
    "discrete_gaussian_cdf",
    "epsilon_lower_bound",
    "ks_critical_value",
    "ks_statistic",
    "wilson",
]


def wilson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Wilson score interval at two-sided level ``1 - alpha`` (approximate, narrower than CP)."""
    if not 0 <= k <= n or n <= 0:
        msg = f"need 0 <= k <= n and n > 0, got k={k}, n={n}"
        raise ValueError(msg)
    z = float(stats.norm.isf(alpha / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def audit_power_floor(
    p0: float, n0: int, p1: float, n1: int, alpha: float, *, delta: float = 0.0
) -> float:
    """The bound :func:`epsilon_lower_bound` reaches with probability >= ``1 - 2 alpha``.

    ``p0``, ``p1`` are the true probabilities of the event under D0 and D1
    (from theory); the floor takes ``k0`` at its upper and ``k1`` at its lower
    ``alpha`` binomial quantile (the bound is monotone in both counts).
    """
    k0_high = int(stats.binom.isf(alpha, n0, p0))
    k1_low = int(stats.binom.ppf(alpha, n1, p1))
    return epsilon_lower_bound(k0_high, n0, k1_low, n1, alpha=alpha, delta=delta)


def ks_statistic(
    sample: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray], *, discrete: bool = False
) -> float:
    """Kolmogorov-Smirnov distance ``sup |F_n - F|`` between ``sample`` and ``cdf``.

    With ``discrete=True`` the sample and ``F`` live on the integers and the
    supremum is taken over integers (``scipy.stats.kstest`` would compare
    ``F(x)`` with ``F_n(x-)`` there and overstate the distance).
    """
    values = np.sort(np.asarray(sample, dtype=float).ravel())
    n = values.size
    if discrete:
        grid = np.arange(values[0] - 1, values[-1] + 1)
        empirical = np.searchsorted(values, grid, side="right") / n
        return float(np.max(np.abs(empirical - cdf(grid))))
    theoretical = cdf(values)
    above = np.arange(1, n + 1) / n - theoretical
    below = theoretical - np.arange(n) / n
    return float(max(above.max(), below.max()))


def ks_critical_value(n: int, alpha: float) -> float:
    """Exact critical value of the one-sample KS statistic for ``n`` draws.

    ``P(D_n > c) = alpha`` for a continuous ``F``; for a discrete ``F`` the
    test is conservative (``P(D_n > c) <= alpha``).
    """
    return float(stats.kstwo.isf(alpha, n))


def discrete_gaussian_cdf(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """CDF of the discrete Gaussian ``P(k) proportional to exp(-k^2 / (2 sigma^2))`` on the integers."""
    reach = math.ceil(40 * sigma) + 1  # mass beyond 40 sigma is below 1e-300
    support = np.arange(-reach, reach + 1)
    pmf = np.exp(-(support.astype(float) ** 2) / (2 * sigma * sigma))
    table = np.cumsum(pmf / pmf.sum())

    def cdf(x: np.ndarray) -> np.ndarray:
        index = np.floor(np.asarray(x, dtype=float)).astype(np.int64) + reach
        return np.where(index < 0, 0.0, table[np.clip(index, 0, table.size - 1)])

    return cdf


def bernstein_half_width(variance: float, bound: float, alpha: float) -> float:
    """``t`` with ``P(|S - E S| >= t) <= alpha`` (Bernstein's inequality).

    ``S`` is a sum of independent terms with ``|X_i - E X_i| <= bound`` and
    ``Var S = variance``. Unlike a z-bound it holds for every ``n``; at
    ``alpha = 1e-6`` it is about 10 % wider than the normal approximation.
    """
    log_term = math.log(2 / alpha)
    linear = bound * log_term / 3
    return linear + math.sqrt(linear * linear + 2 * variance * log_term)

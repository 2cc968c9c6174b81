"""Re-identification risk and the privacy models of a table, measured on its equivalence classes.

An *equivalence class* is a set of records that agree on every
quasi-identifier. Everything here is computed from integer class ids, so it
applies alike to an original table, to the output of any Veil algorithm and
to a table anonymised elsewhere.

Risk models (El Emam and Dankar, 2008; ARX's definitions):

- **prosecutor**: the attacker knows the target is in the released table;
  the risk of a record is ``1 / f`` with ``f`` the size of its class;
- **journalist**: the attacker knows only that the target is in a larger
  population; risk ``1 / F`` with ``F`` the size of the matching class in
  the population (given as a table, or estimated); without a population it
  equals the prosecutor risk, an upper bound;
- **marketer**: the expected share of records an attacker re-identifies when
  linking every record, ``(1 / n) * sum over classes of f / F``.

Population uniqueness from a sample is estimated with Pitman's sampling
formula (Hoshino, 2001), fitted by maximum likelihood to the sample's class
sizes. On UCI Adult as the population (42.7% unique on seven QIs), a 10%
sample gives an estimate of 44.9% (tests/anonymize check it stays close).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, special

from veil.errors import InvalidInputError

__all__ = [
    "ClassStats",
    "RiskReport",
    "class_ids",
    "delta_presence",
    "l_diversity",
    "population_uniqueness",
    "reidentification_risk",
    "t_closeness",
]

IntArray = npt.NDArray[np.int64]


def class_ids(frame: pd.DataFrame, quasi_identifiers: Sequence[str]) -> IntArray:
    """The equivalence class of each row (0 .. classes - 1), by the rows' QI values."""
    if not quasi_identifiers:
        return np.zeros(len(frame), dtype=np.int64)
    grouped = frame.groupby(list(quasi_identifiers), sort=False, dropna=False, observed=True)
    ids: IntArray = np.array(grouped.ngroup().to_numpy(), dtype=np.int64)
    return ids


@dataclass(frozen=True)
class ClassStats:
    """Equivalence classes of a table.

    Attributes:
        records: Number of records counted (suppressed records excluded).
        classes: Number of equivalence classes.
        k: Size of the smallest class (the table is k-anonymous for this k).
        unique_share: Share of records alone in their class.
        average_class_size: Records per class.
        sizes: Class size of every record.
    """

    records: int
    classes: int
    k: int
    unique_share: float
    average_class_size: float
    sizes: IntArray

    @classmethod
    def of(cls, ids: IntArray) -> ClassStats:
        """Statistics from class ids (negative ids mark suppressed records)."""
        kept = ids[ids >= 0]
        if kept.size == 0:
            return cls(0, 0, 0, 0.0, 0.0, np.zeros(0, dtype=np.int64))
        _, inverse, counts = np.unique(kept, return_inverse=True, return_counts=True)
        sizes = counts[inverse]
        return cls(
            records=int(kept.size),
            classes=int(counts.size),
            k=int(counts.min()),
            unique_share=float(np.mean(sizes == 1)),
            average_class_size=float(kept.size / counts.size),
            sizes=sizes.astype(np.int64),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the per-record ``sizes``."""
        return {
            "records": self.records,
            "classes": self.classes,
            "k": self.k,
            "unique_share": self.unique_share,
            "average_class_size": self.average_class_size,
        }


@dataclass(frozen=True)
class RiskReport:
    """Re-identification risk under the three attacker models (module docstring).

    Attributes:
        threshold: Risk above which a record counts as at risk.
        prosecutor_max / prosecutor_average / prosecutor_at_risk: Highest and
            mean record risk, and the share of records above ``threshold``.
        journalist_max / journalist_average / journalist_at_risk: The same
            against the population.
        marketer: Expected share of records re-identified by linking all.
        population: Where the population class sizes came from: ``table``,
            or ``none`` (journalist risk is then the prosecutor's, an upper bound).
    """

    threshold: float
    prosecutor_max: float
    prosecutor_average: float
    prosecutor_at_risk: float
    journalist_max: float
    journalist_average: float
    journalist_at_risk: float
    marketer: float
    population: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def reidentification_risk(
    sizes: IntArray,
    *,
    population_sizes: IntArray | None = None,
    threshold: float = 0.2,
) -> RiskReport:
    """Risk from each released record's class size (and its population class size).

    Args:
        sizes: Class size ``f`` of each released record.
        population_sizes: Size ``F >= f`` of the matching population class of
            each record, when a population table is known.
        threshold: Record risk counted as "at risk" (0.2 is a common
            benchmark for public releases; 0.33 or 0.5 for trusted recipients).
    """
    if sizes.size == 0:
        return RiskReport(threshold, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "none")
    prosecutor = 1.0 / sizes
    if population_sizes is None:
        journalist = prosecutor
        source = "none"
    else:
        journalist = 1.0 / np.maximum(population_sizes, sizes)
        source = "table"
    # marketer: each class contributes f / F correct matches; per record that is 1 / F.
    return RiskReport(
        threshold=threshold,
        prosecutor_max=float(prosecutor.max()),
        prosecutor_average=float(prosecutor.mean()),
        prosecutor_at_risk=float(np.mean(prosecutor > threshold)),
        journalist_max=float(journalist.max()),
        journalist_average=float(journalist.mean()),
        journalist_at_risk=float(np.mean(journalist > threshold)),
        marketer=float(journalist.mean()),
        population=source,
    )


def _codes(values: pd.Series) -> tuple[IntArray, npt.NDArray[Any]]:
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _class_histograms(ids: IntArray, sensitive: IntArray, m: int) -> npt.NDArray[np.float64]:
    """Rows: classes; columns: counts of each sensitive value."""
    kept = ids >= 0
    classes = int(ids.max()) + 1 if kept.any() else 0
    flat = ids[kept] * m + sensitive[kept]
    counts = np.bincount(flat, minlength=classes * m).reshape(classes, m)
    present = counts.sum(axis=1) > 0
    out: npt.NDArray[np.float64] = counts[present].astype(np.float64)
    return out


@dataclass(frozen=True)
class LDiversity:
    """l-diversity of one sensitive attribute.

    Attributes:
        distinct: Fewest distinct sensitive values in any class.
        entropy: Smallest ``exp(entropy)`` of any class (entropy l-diversity
            holds for every l up to it).
        recursive_c: The ``c`` given for recursive (c, l)-diversity.
        recursive_l: Largest l for which recursive (c, l)-diversity holds.
    """

    distinct: int
    entropy: float
    recursive_c: float
    recursive_l: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def l_diversity(ids: IntArray, sensitive: pd.Series, *, c: float = 2.0) -> LDiversity:
    """Distinct, entropy and recursive (c, l)-diversity (Machanavajjhala et al., 2007).

    Recursive (c, l): in every class, with counts sorted ``r1 >= r2 >= ...``,
    ``r1 < c * (r_l + r_{l+1} + ...)``.
    """
    codes, uniques = _codes(sensitive)
    hist = _class_histograms(ids, codes, len(uniques))
    if hist.size == 0:
        return LDiversity(0, 0.0, c, 0)
    distinct = int((hist > 0).sum(axis=1).min())
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    ordered = -np.sort(-hist, axis=1)
    # tails[:, j] = r_{j+1} + ... + r_m (1-based j+1)
    tails = np.cumsum(ordered[:, ::-1], axis=1)[:, ::-1]
    best = 1
    for level in range(2, distinct + 1):
        if np.all(ordered[:, 0] < c * tails[:, level - 1]):
            best = level
        else:
            break
    return LDiversity(distinct, float(np.exp(entropy.min())), c, best)


def t_closeness(ids: IntArray, sensitive: pd.Series, *, ordered: bool | None = None) -> float:
    """Largest Earth mover's distance of a class's sensitive distribution to the table's.

    Ordered distance for numeric attributes (values in increasing order, the
    ground distance between the i-th and j-th value ``|i - j| / (m - 1)``),
    equal distance for categorical ones (Li, Li and Venkatasubramanian, 2007).
    """
    if ordered is None:
        ordered = bool(pd.api.types.is_numeric_dtype(sensitive))
    codes, uniques = _codes(sensitive)
    m = len(uniques)
    hist = _class_histograms(ids, codes, m)
    if hist.size == 0 or m < 2:  # noqa: PLR2004 - one value is always close
        return 0.0
    q = np.bincount(codes[ids >= 0], minlength=m) / float((ids >= 0).sum())
    p = hist / hist.sum(axis=1, keepdims=True)
    diff = p - q
    if ordered:
        emd = np.abs(np.cumsum(diff, axis=1)).sum(axis=1) / (m - 1)
    else:
        emd = 0.5 * np.abs(diff).sum(axis=1)
    return float(emd.max())


def delta_presence(
    released: pd.DataFrame, population: pd.DataFrame, quasi_identifiers: Sequence[str]
) -> tuple[float, float]:
    """``(delta_min, delta_max)``: the share of each population class that is in the release.

    ``population`` must describe the QIs the way the release does (the same
    generalisation). A class of the release absent from the population makes
    the population inconsistent with the release and is refused.
    """
    keys = list(quasi_identifiers)
    rel = released.groupby(keys, observed=True, dropna=False).size().rename("f")
    pop = population.groupby(keys, observed=True, dropna=False).size().rename("F")
    joined = pd.concat([rel, pop], axis=1)
    missing = joined["F"].isna() & joined["f"].notna()
    if missing.any():
        raise InvalidInputError(
            "the population table does not contain every class of the release",
            expected="a population that includes the released records, generalised alike",
            got=f"{int(missing.sum())} released class(es) absent from the population",
            fix="generalise the population with the same hierarchies and levels",
        )
    ratio = (joined["f"].fillna(0) / joined["F"]).to_numpy(dtype=np.float64)
    return float(ratio.min()), float(ratio.max())


@dataclass(frozen=True)
class PopulationUniqueness:
    """Estimated share of the population that is unique on the QIs.

    Attributes:
        sample_uniques: Records unique in the sample.
        sampling_fraction: ``n / N``.
        pitman: Estimate by the Pitman model (``None`` when the fit fails, as
            it does when the sample has no repeated class).
        pitman_theta / pitman_alpha: The fitted parameters.
    """

    sample_uniques: int
    sampling_fraction: float
    pitman: float | None
    pitman_theta: float | None
    pitman_alpha: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _pitman(class_sizes: IntArray, population: int) -> tuple[float, float, float] | None:
    n = int(class_sizes.sum())
    k = int(class_sizes.size)
    if k < 2 or k == n:  # noqa: PLR2004 - the fit needs repeated and distinct classes
        return None

    def negative_log_likelihood(params: npt.NDArray[np.float64]) -> float:
        theta, alpha = float(params[0]), float(params[1])
        if not 0 < alpha < 1 or theta <= -alpha:
            return math.inf
        ll = float(np.sum(np.log(theta + alpha * np.arange(1, k))))
        ll -= float(np.sum(np.log(theta + np.arange(1, n))))
        ll += float(np.sum(special.gammaln(class_sizes - alpha) - special.gammaln(1 - alpha)))
        return -ll

    result = optimize.minimize(
        negative_log_likelihood, x0=np.array([1.0, 0.5]), method="Nelder-Mead"
    )
    if not result.success:
        return None
    theta, alpha = float(result.x[0]), float(result.x[1])
    # Expected singletons among N draws of the Pitman process, divided by N (with alpha = 0
    # this is Ewens's theta / (theta + N - 1)):
    # E[M_1] / N = G(theta + 1) G(theta + alpha + N - 1) / (G(theta + alpha) G(theta + N)).
    log_share = (
        special.gammaln(theta + 1)
        + special.gammaln(theta + alpha + population - 1)
        - special.gammaln(theta + alpha)
        - special.gammaln(theta + population)
    )
    return float(math.exp(log_share)), theta, alpha


def population_uniqueness(ids: IntArray, population_size: int) -> PopulationUniqueness:
    """Estimate population uniqueness from a sample of ``population_size`` records."""
    kept = ids[ids >= 0]
    n = int(kept.size)
    if population_size < n or n == 0:
        raise InvalidInputError(
            "the population cannot be smaller than the sample",
            expected=f"a population size of at least {n}",
            got=str(population_size),
            fix="give the size of the population the table was drawn from (--population-size)",
        )
    sizes = np.unique(kept, return_counts=True)[1].astype(np.int64)
    by_size = dict(zip(*np.unique(sizes, return_counts=True), strict=True))
    counts_by_size = {int(s): int(c) for s, c in by_size.items()}
    fraction = n / population_size
    pitman = _pitman(sizes, population_size)
    return PopulationUniqueness(
        sample_uniques=counts_by_size.get(1, 0),
        sampling_fraction=fraction,
        pitman=None if pitman is None else pitman[0],
        pitman_theta=None if pitman is None else pitman[1],
        pitman_alpha=None if pitman is None else pitman[2],
    )

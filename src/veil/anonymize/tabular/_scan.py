"""``veil scan``: how identifiable a table is, and what a linking attacker gets out of it.

:func:`scan_table` measures a table as it stands (the original, or a release
made anywhere): its equivalence classes on the quasi-identifiers, the
re-identification risk under the prosecutor, journalist and marketer
models, population uniqueness from a sample, k-anonymity, l-diversity,
t-closeness and delta-presence, the accuracy of a classifier trained on it,
a linkage attack against an external table, and (with the ``text`` extra)
the columns that hold direct identifiers. Records whose quasi-identifiers
are all ``*`` count as suppressed.

The linkage attack is Sweeney's: the attacker holds an external table with
names (a voter roll) that shares quasi-identifiers with the release, joins
the two, and re-identifies every released record that links to exactly one
external person and is the only record of its class. Generalised cells
(intervals, tree nodes, ``*``) match every value they cover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.anonymize.tabular._domain import SUPPRESSED, Domain, TreeDomain, build_domains
from veil.anonymize.tabular._hierarchy import HierarchySpec
from veil.anonymize.tabular._recoding import Recoding, Utility
from veil.anonymize.tabular._risk import (
    ClassStats,
    LDiversity,
    PopulationUniqueness,
    RiskReport,
    class_ids,
    delta_presence,
    l_diversity,
    population_uniqueness,
    reidentification_risk,
    t_closeness,
)
from veil.data import check_columns_exist
from veil.errors import InvalidInputError

__all__ = ["LinkageResult", "ScanReport", "classifier_accuracy", "linkage_attack", "scan_table"]

FloatArray = npt.NDArray[np.float64]
_CHUNK_CELLS = 20_000_000  # booleans per block of the cover test


@dataclass(frozen=True)
class LinkageResult:
    """Outcome of a linkage attack (module docstring).

    Attributes:
        external_records: People in the attacker's table.
        linked: External people who match exactly one released record.
        correct: Of those, how many matched their own record (when the truth is known).
        expected_correct: Expected correct guesses if the attacker picks one
            of the matching records at random for every person (when known).
        present: External people whose record is in the release (when known).
        rate: ``correct / present`` (or ``linked / external_records`` without the truth).
    """

    external_records: int
    linked: int
    correct: int | None
    expected_correct: float | None
    present: int | None
    rate: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _lenient_codes(domain: Domain, values: pd.Series) -> FloatArray:
    """Codes of outside values; values the domain does not know become NaN (they match nothing)."""
    if isinstance(domain, TreeDomain):
        mapped = values.astype("string").map(domain.leaf_index)
        return pd.to_numeric(mapped, errors="coerce").to_numpy(dtype=np.float64)
    try:
        return domain.encode(values)
    except InvalidInputError:
        numbers = pd.to_numeric(values, errors="coerce")
        return numbers.to_numpy(dtype=np.float64)


def linkage_attack(
    recoding: Recoding,
    external: pd.DataFrame,
    *,
    truth: npt.NDArray[np.int64] | None = None,
) -> LinkageResult:
    """Link an external table to a release (module docstring).

    Args:
        recoding: The release, as cells per record (``Recoding.identity`` for
            a table released as it is).
        external: The attacker's table; it must have every quasi-identifier.
        truth: For each external row, the index of that person's record in
            the release, or ``-1`` when they are not in it (to count correct
            re-identifications; unknown in a real attack).
    """
    columns = [d.column for d in recoding.domains]
    check_columns_exist(
        columns, list(external.columns), role="quasi-identifier of the external table"
    )
    codes = np.column_stack([_lenient_codes(d, external[d.column]) for d in recoding.domains])
    ids = recoding.class_ids()
    kept = ids >= 0
    classes, first, sizes = np.unique(ids[kept], return_index=True, return_counts=True)
    rows = np.flatnonzero(kept)[first]
    lo, hi = recoding.lo[rows], recoding.hi[rows]
    size = sizes.astype(np.float64)
    m = codes.shape[0]
    covers_count = np.zeros(m, dtype=np.int64)
    candidates = np.zeros(m)
    single_class = np.full(m, -1, dtype=np.int64)
    own_class = np.full(m, -1, dtype=np.int64)
    if truth is not None:
        if truth.shape != (m,):
            raise InvalidInputError(
                "the truth must give one released row per external row",
                expected=f"{m} entries",
                got=str(truth.shape),
                fix="pass -1 for people not in the release",
            )
        lookup = {int(c): i for i, c in enumerate(classes)}
        own_class = np.array(
            [lookup.get(int(ids[t]), -1) if t >= 0 else -1 for t in truth], dtype=np.int64
        )
    own_covered = np.zeros(m, dtype=bool)
    block = max(1, _CHUNK_CELLS // max(1, classes.size * max(1, len(columns))))
    for start in range(0, m, block):
        e = codes[start : start + block]
        with np.errstate(invalid="ignore"):
            cover = np.all((lo[None] <= e[:, None]) & (e[:, None] <= hi[None]), axis=2)
        covers_count[start : start + block] = cover.sum(axis=1)
        candidates[start : start + block] = cover @ size
        single_class[start : start + block] = np.where(cover.any(axis=1), cover.argmax(axis=1), -1)
        if truth is not None:
            own = own_class[start : start + block]
            has = own >= 0
            own_covered[start : start + block][has] = cover[np.flatnonzero(has), own[has]]
    unique_link = (covers_count == 1) & (size[np.maximum(single_class, 0)] == 1)
    linked = int(unique_link.sum())
    if truth is None:
        return LinkageResult(m, linked, None, None, None, linked / m if m else 0.0)
    present = own_class >= 0
    correct = int(np.sum(unique_link & present & (single_class == own_class)))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = float(np.sum(np.where(own_covered, 1.0 / candidates, 0.0)))
    n_present = int(present.sum())
    return LinkageResult(
        m, linked, correct, expected, n_present, correct / n_present if n_present else 0.0
    )


def classifier_accuracy(
    frame: pd.DataFrame, features: Sequence[str], target: str, *, seed: int = 0
) -> dict[str, float]:
    """Test accuracy of a logistic regression on one-hot features, and the majority-class rate.

    Every feature is treated as categorical (a generalised cell such as
    ``[30, 39]`` is a category), on a fixed two-thirds / one-third split, so
    that an original table and its anonymised version are compared alike.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - heavy import
    from sklearn.preprocessing import OneHotEncoder  # noqa: PLC0415

    check_columns_exist([target, *features], list(frame.columns), role="classifier column")
    y = frame[target].astype("string").fillna("<missing>").to_numpy()
    if len(set(y)) < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "the classification target has a single value",
            expected=f"at least two classes in {target!r}",
            got=f"{len(set(y))}",
            fix="choose another --target",
        )
    x = frame[list(features)].astype("string").fillna("<missing>").to_numpy()
    order = np.random.default_rng(seed).permutation(len(frame))  # a fixed split, not noise
    cut = (2 * len(frame)) // 3
    train, test = order[:cut], order[cut:]
    encoder = OneHotEncoder(handle_unknown="ignore")
    model = LogisticRegression(max_iter=300)
    model.fit(encoder.fit_transform(x[train]), y[train])
    accuracy = float(np.mean(model.predict(encoder.transform(x[test])) == y[test]))
    values, counts = np.unique(y[train], return_counts=True)
    majority = float(np.mean(y[test] == values[np.argmax(counts)]))
    return {"accuracy": accuracy, "majority_class": majority}


@dataclass(frozen=True)
class ScanReport:
    """Everything :func:`scan_table` measured (module docstring)."""

    records: int
    quasi_identifiers: list[str]
    suppressed: int
    classes: ClassStats
    risk: RiskReport
    l_diversity: dict[str, LDiversity] = field(default_factory=dict)
    t_closeness: dict[str, float] = field(default_factory=dict)
    delta_presence: tuple[float, float] | None = None
    population: PopulationUniqueness | None = None
    classifier: dict[str, Any] | None = None
    linkage: LinkageResult | None = None
    utility: Utility | None = None
    pii_columns: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        classes = self.classes.to_dict()
        return {
            "records": self.records,
            "quasi_identifiers": self.quasi_identifiers,
            "suppressed": self.suppressed,
            "classes": classes,
            "k_anonymity": self.classes.k,
            "risk": self.risk.to_dict(),
            "l_diversity": {k: v.to_dict() for k, v in self.l_diversity.items()},
            "t_closeness": self.t_closeness,
            "delta_presence": None
            if self.delta_presence is None
            else {"min": self.delta_presence[0], "max": self.delta_presence[1]},
            "population_uniqueness": None if self.population is None else self.population.to_dict(),
            "classifier": self.classifier,
            "linkage": None if self.linkage is None else self.linkage.to_dict(),
            "utility": None if self.utility is None else self.utility.to_dict(),
            "pii_columns": self.pii_columns,
        }


def _assess(
    released: pd.DataFrame,
    ids: npt.NDArray[np.int64],
    quasi_identifiers: Sequence[str],
    *,
    sensitive: Sequence[str] = (),
    population: pd.DataFrame | None = None,
    population_size: int | None = None,
    threshold: float = 0.2,
    target: str | None = None,
    recoding: Recoding | None = None,
    external: pd.DataFrame | None = None,
    external_truth: npt.NDArray[np.int64] | None = None,
    utility_k: int | None = None,
) -> ScanReport:
    kept = ids >= 0
    stats = ClassStats.of(ids)
    population_sizes = None
    presence = None
    if population is not None:
        check_columns_exist(quasi_identifiers, list(population.columns), role="population column")
        keys = list(quasi_identifiers)
        pop_counts = population.groupby(keys, observed=True, dropna=False).size().rename("F")
        joined = released.loc[kept, keys].merge(
            pop_counts.reset_index(), on=keys, how="left", validate="many_to_one"
        )
        population_sizes = joined["F"].fillna(0).to_numpy(dtype=np.int64)
        presence = delta_presence(released.loc[kept], population, keys)
    risk = reidentification_risk(
        stats.sizes, population_sizes=population_sizes, threshold=threshold
    )
    diversity: dict[str, LDiversity] = {}
    closeness: dict[str, float] = {}
    for column in sensitive:
        values = released.loc[kept, column]
        diversity[column] = l_diversity(ids[kept], values)
        closeness[column] = t_closeness(ids[kept], values)
    uniqueness = None
    if population_size is not None:
        uniqueness = population_uniqueness(ids, population_size)
    classifier = None
    if target is not None:
        classifier = {
            "target": target,
            **classifier_accuracy(released, quasi_identifiers, target),
        }
    linkage = None
    if external is not None:
        if recoding is None:
            recoding = _identity(released, external, quasi_identifiers)
        linkage = linkage_attack(recoding, external, truth=external_truth)
    utility = None
    if recoding is not None and recoding.algorithm != "none":
        utility = recoding.utility(utility_k)
    return ScanReport(
        records=len(released),
        quasi_identifiers=list(quasi_identifiers),
        suppressed=int((~kept).sum()),
        classes=stats,
        risk=risk,
        l_diversity=diversity,
        t_closeness=closeness,
        delta_presence=presence,
        population=uniqueness,
        classifier=classifier,
        linkage=linkage,
        utility=utility,
    )


def _identity(
    released: pd.DataFrame, external: pd.DataFrame, quasi_identifiers: Sequence[str]
) -> Recoding:
    """A released table as cells: exact values are points, ``*`` covers the domain."""
    keys = list(quasi_identifiers)
    both = pd.concat([released[keys], external[keys]], ignore_index=True)
    star = (released[keys].astype("string") == SUPPRESSED).fillna(value=False)
    for column in keys:
        # a suppressed cell must not turn a numeric column into text
        if pd.api.types.is_numeric_dtype(external[column]) and star[column].any():
            both[column] = pd.to_numeric(both[column], errors="coerce")
    specs = {
        c: HierarchySpec(kind="flat")
        for c in keys
        if not pd.api.types.is_numeric_dtype(both[c]) or both[c].isna().any()
    }
    filled = both.copy()
    for c in specs:
        filled[c] = filled[c].astype("string").fillna(SUPPRESSED)
    domains = build_domains(filled, keys, specs)
    n = len(released)
    lo = np.column_stack([d.codes[:n] for d in domains])
    hi = lo.copy()
    for j, d in enumerate(domains):
        lo[star[d.column].to_numpy(), j] = d.lo_all
        hi[star[d.column].to_numpy(), j] = d.hi_all
    for d in domains:
        d.codes = d.codes[:n]
    return Recoding(domains, lo, hi, star.all(axis=1).to_numpy(), "none")


def scan_table(
    frame: pd.DataFrame,
    quasi_identifiers: Sequence[str],
    *,
    sensitive: Sequence[str] = (),
    population: pd.DataFrame | None = None,
    population_size: int | None = None,
    threshold: float = 0.2,
    target: str | None = None,
    external: pd.DataFrame | None = None,
    external_truth: npt.NDArray[np.int64] | None = None,
    find_pii: bool = False,
    hierarchies: Mapping[str, HierarchySpec] | None = None,
) -> ScanReport:
    """Measure the re-identification risk and privacy models of ``frame`` (module docstring).

    Args:
        frame: The table.
        quasi_identifiers: Columns an attacker may know from elsewhere.
        sensitive: Columns whose l-diversity and t-closeness to report.
        population: The population the table was drawn from (journalist and
            marketer risk, delta-presence).
        population_size: Size of that population, for population-uniqueness
            estimates when the population itself is not at hand.
        threshold: Record risk counted as "at risk".
        target: A column to predict from the quasi-identifiers (utility).
        external: An attacker's table for the linkage attack.
        external_truth: For each external row, the index of its record in
            ``frame`` or ``-1`` (only to score the attack).
        find_pii: Also look for direct identifiers in every column (Presidio).
        hierarchies: Declared hierarchies (unused for exact tables; accepted
            so that one options file serves scan and anonymize).
    """
    del hierarchies
    _check_table(frame, quasi_identifiers, sensitive, target)
    keys = list(quasi_identifiers)
    suppressed = (frame[keys].astype("string") == SUPPRESSED).fillna(value=False).all(axis=1)
    ids = class_ids(frame, keys).copy()
    ids[suppressed.to_numpy()] = -1
    report = _assess(
        frame,
        ids,
        keys,
        sensitive=sensitive,
        population=population,
        population_size=population_size,
        threshold=threshold,
        target=target,
        external=external,
        external_truth=external_truth,
    )
    if find_pii:
        from veil.anonymize.text import find_pii_columns  # noqa: PLC0415 - needs the text extra

        report = replace(report, pii_columns=[c.to_dict() for c in find_pii_columns(frame)])
    return report


def _check_table(
    frame: pd.DataFrame,
    quasi_identifiers: Sequence[str],
    sensitive: Sequence[str],
    target: str | None,
) -> None:
    if frame.empty:
        raise InvalidInputError(
            "the table is empty",
            expected="at least one record",
            got="0 rows",
            fix="check the input file",
        )
    if not quasi_identifiers:
        raise InvalidInputError(
            "no quasi-identifiers given",
            expected="--qi COLUMN[,COLUMN...]",
            got="none",
            fix="name the columns an attacker could know (age, ZIP code, sex...)",
        )
    columns = list(frame.columns)
    check_columns_exist(quasi_identifiers, columns, role="quasi-identifier")
    check_columns_exist(sensitive, columns, role="sensitive attribute")
    overlap = set(quasi_identifiers) & set(sensitive)
    if overlap:
        raise InvalidInputError(
            "a column cannot be both quasi-identifier and sensitive",
            expected="disjoint --qi and --sensitive",
            got=", ".join(sorted(overlap)),
            fix="remove it from one of the two",
        )
    if target is not None:
        check_columns_exist([target], columns, role="target")

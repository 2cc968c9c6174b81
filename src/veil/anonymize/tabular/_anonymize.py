"""``veil anonymize``: generalise the quasi-identifiers, transform the other columns, measure both sides.

:func:`anonymize` runs one algorithm — strict or relaxed Mondrian (local
recoding) or the optimal full-domain search (one global recoding with a
suppression limit) — so that every class meets k, and l and t when asked;
then applies column operators (drop, mask, keyed pseudonyms, rank swapping,
noise, micro-aggregation, per-person date shifting) to columns that are not
quasi-identifiers; and scans the table before and after with the same
measurements, so the report shows what the release costs and what it buys.

k, l and t hold for the declared quasi-identifiers only. Every other column
that no operator touched is released as it is, and the result says what each
would do to k in an attacker's hands (:attr:`AnonymizationResult.unchanged`):
a name, an e-mail address or an undeclared age column makes records unique
again however well the quasi-identifiers were generalised.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil.anonymize.tabular._constraints import Constraints
from veil.anonymize.tabular._domain import build_domains
from veil.anonymize.tabular._flash import full_domain
from veil.anonymize.tabular._hierarchy import HierarchySpec
from veil.anonymize.tabular._mondrian import mondrian
from veil.anonymize.tabular._operators import (
    add_noise,
    mask,
    microaggregate,
    pseudonymize,
    rank_swap,
    shift_dates,
)
from veil.anonymize.tabular._recoding import Recoding
from veil.anonymize.tabular._risk import class_ids
from veil.anonymize.tabular._scan import ScanReport, _assess, _check_table
from veil.data import check_columns_exist
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = [
    "ALGORITHMS",
    "OPERATORS",
    "AnonymizationAlgorithm",
    "AnonymizationResult",
    "ColumnOperation",
    "anonymize",
]


class AnonymizationAlgorithm(StrEnum):
    """How :func:`anonymize` generalises the quasi-identifiers.

    ``MONDRIAN`` (strict) and ``MONDRIAN_RELAXED`` recode locally;
    ``FULL_DOMAIN`` finds the optimal global recoding under a suppression
    limit. A plain string (``"full-domain"``) is accepted wherever a member is.
    """

    MONDRIAN = "mondrian"
    MONDRIAN_RELAXED = "mondrian-relaxed"
    FULL_DOMAIN = "full-domain"


ALGORITHMS = tuple(member.value for member in AnonymizationAlgorithm)
OPERATORS = ("drop", "mask", "pseudonymize", "swap", "noise", "microaggregate", "shift-dates")
_KEYED = {"pseudonymize", "shift-dates"}


@dataclass(frozen=True)
class ColumnOperation:
    """One operator applied to one column that is not a quasi-identifier.

    Attributes:
        column: The column.
        operator: One of :data:`OPERATORS`.
        options: Operator options: ``keep_last`` (mask), ``p`` (swap),
            ``relative_sd`` (noise), ``k`` (microaggregate, default the
            anonymisation's k), ``person`` and ``max_days`` (shift-dates),
            ``prefix`` (pseudonymize).
    """

    column: str
    operator: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ColumnOperation:
        """``COLUMN:OPERATOR[:name=value,...]``, e.g. ``visit:shift-dates:person=patient_id``."""
        parts = text.split(":", 2)
        if len(parts) < 2 or parts[1] not in OPERATORS:  # noqa: PLR2004
            raise InvalidInputError(
                "cannot read a column operation",
                expected=f"COLUMN:OPERATOR[:name=value,...] with OPERATOR one of {', '.join(OPERATORS)}",
                got=repr(text),
                fix="for example --op patient_id:pseudonymize or --op income:noise:relative_sd=0.1",
            )
        options: dict[str, Any] = {}
        if len(parts) == 3 and parts[2]:  # noqa: PLR2004
            for item in parts[2].split(","):
                name, sep, value = item.partition("=")
                if not sep:
                    raise InvalidInputError(
                        "cannot read an operator option",
                        expected="name=value",
                        got=repr(item),
                        fix="for example keep_last=4",
                    )
                options[name.strip()] = _number(value.strip())
        return cls(parts[0], parts[1], options)


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


@dataclass(frozen=True)
class UnchangedColumn:
    """A column released as it was read (no quasi-identifier, sensitive column or operator).

    Attributes:
        column: Its name.
        k_with_it: The smallest class of the release when this column is added
            to the generalised quasi-identifiers: the k an attacker who also
            knows it faces.
        unique_rows: Records alone in their class with it (``k_with_it`` 1).
    """

    column: str
    k_with_it: int
    unique_rows: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"column": self.column, "k_with_it": self.k_with_it, "unique_rows": self.unique_rows}


def _cell_key(value: Any) -> Any:
    """A hashable stand-in for a cell: itself, or its content (arrays, lists, nested)."""
    try:
        hash(value)
    except TypeError:
        if isinstance(value, np.ndarray):
            return ("array", value.dtype.str, value.shape, value.tobytes())
        return ("pickle", pickle.dumps(value, protocol=5))
    return value


def unchanged_columns(
    released: pd.DataFrame,
    classes: npt.NDArray[np.int64],
    *,
    skip: Sequence[str],
) -> list[UnchangedColumn]:
    """Each released column not in ``skip``, with the k it leaves (see :class:`UnchangedColumn`).

    ``classes`` is the equivalence class of every released row, ``-1`` for a
    suppressed row; suppressed rows are left out, as the measured k leaves
    them out. A missing value counts as one value.
    """
    kept = classes >= 0
    if not kept.any():
        return []
    out = []
    for position, column in enumerate(released.columns):
        if column in skip:
            continue
        values = released.iloc[kept, position]  # by position: names may repeat
        if values.dtype == object:  # lists or arrays (a Parquet list column) are not hashable
            values = values.map(_cell_key)
        sizes = (
            pd.DataFrame({"class": classes[kept], "value": values.to_numpy()})
            .groupby(["class", "value"], sort=False, dropna=False)["class"]
            .transform("size")
        )
        out.append(UnchangedColumn(str(column), int(sizes.min()), int((sizes == 1).sum())))
    return out


@dataclass(frozen=True)
class AnonymizationResult:
    """The anonymised table and what it cost.

    Attributes:
        table: The released table.
        recoding: The cells of every record (for the linkage attack and metrics).
        before: The scan of the original table.
        after: The scan of the released table.
        algorithm: The algorithm used.
        constraints: The k, l and t asked for.
        seconds: Time of the anonymisation algorithm alone.
        operations: The column operations applied.
        declared_bounds: For each quasi-identifier with bounds declared at
            registration, whether they were used (``"used lo..hi"``) and if
            not, why not.
        unchanged: The columns released as they were read, with the k each
            leaves to an attacker who knows it too.
    """

    table: pd.DataFrame
    recoding: Recoding
    before: ScanReport
    after: ScanReport
    algorithm: str
    constraints: dict[str, Any]
    seconds: float
    operations: list[ColumnOperation]
    declared_bounds: dict[str, str] = field(default_factory=dict)
    unchanged: list[UnchangedColumn] = field(default_factory=list)

    @property
    def satisfied(self) -> dict[str, bool]:
        """Whether the released table meets each constraint (measured on it, not assumed)."""
        out = {"k": self.after.classes.k >= self.constraints["k"]}
        l_wanted, t_wanted = self.constraints.get("l"), self.constraints.get("t")
        for column, diversity in self.after.l_diversity.items():
            if l_wanted is not None:
                out[f"l[{column}]"] = diversity.distinct >= l_wanted
        for column, distance in self.after.t_closeness.items():
            if t_wanted is not None:
                out[f"t[{column}]"] = distance <= t_wanted + 1e-9
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the table itself)."""
        return {
            "algorithm": self.algorithm,
            "constraints": self.constraints,
            "satisfied": self.satisfied,
            "seconds": self.seconds,
            "details": self.recoding.details,
            "operations": [
                {"column": o.column, "operator": o.operator, "options": dict(o.options)}
                for o in self.operations
            ],
            "declared_bounds": self.declared_bounds,
            "unchanged": [column.to_dict() for column in self.unchanged],
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


def _with_declared_bounds(
    frame: pd.DataFrame,
    keys: Sequence[str],
    hierarchies: Mapping[str, HierarchySpec] | None,
    declared: Mapping[str, tuple[float, float]],
) -> tuple[dict[str, HierarchySpec], dict[str, str]]:
    """Interval hierarchies that bin within the bounds declared at registration.

    The bins start at the declared lower bound, and information loss is
    measured against the declared range rather than the observed one. Bounds
    are not used (and the note says why) when a hierarchy already fixes the
    column's domain, or when the data fall outside them (a registration
    records such values but keeps them).
    """
    specs = dict(hierarchies or {})
    notes: dict[str, str] = {}
    for column in keys:
        if column not in declared:
            continue
        lower, upper = (float(b) for b in declared[column])
        spec = specs.get(column)
        if spec is not None and (spec.kind != "interval" or spec.bounds is not None):
            notes[column] = "not used: the hierarchies file declares this column's domain"
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.isna().any():
            continue  # build_domains names the missing or non-numeric values
        low, high = float(numbers.min()), float(numbers.max())
        if low < lower or high > upper:
            notes[column] = (
                f"not used: the values span {low:g}..{high:g}, outside the declared "
                f"{lower:g}..{upper:g} (bins follow the data)"
            )
            continue
        base = spec or HierarchySpec(kind="interval")
        origin = base.origin if base.origin is not None else lower
        specs[column] = dataclasses.replace(base, bounds=(lower, upper), origin=origin)
        notes[column] = f"used {lower:g}..{upper:g}"
    return specs, notes


def _need_key(key: bytes | None, op: ColumnOperation) -> bytes:
    if key is None:
        raise InvalidInputError(
            f"{op.operator} needs a key",
            expected="a key from the workspace key store",
            got="none",
            fix="run inside a workspace (veil init), or pass "
            "key=veil.vault.KeyStore.for_workspace().get(NAME)",
        )
    return key


def _apply_operations(
    table: pd.DataFrame,
    operations: Sequence[ColumnOperation],
    *,
    quasi_identifiers: Sequence[str],
    k: int,
    key: bytes | None,
) -> pd.DataFrame:
    out = table.copy()
    check_columns_exist([o.column for o in operations], list(table.columns), role="operated")
    for op in operations:
        if op.column in quasi_identifiers:
            raise InvalidInputError(
                "a quasi-identifier is generalised by the algorithm; operators apply to other columns",
                expected="an operated column outside --qi",
                got=repr(op.column),
                fix="remove it from --qi, or drop the --op",
            )
        opts = dict(op.options)
        column = out[op.column]
        if op.operator == "drop":
            out = out.drop(columns=[op.column])
        elif op.operator == "mask":
            out[op.column] = mask(column, **opts)
        elif op.operator == "pseudonymize":
            out[op.column] = pseudonymize(column, _need_key(key, op), **opts)
        elif op.operator == "swap":
            out[op.column] = rank_swap(column, **opts)
        elif op.operator == "noise":
            out[op.column] = add_noise(column, **opts)
        elif op.operator == "microaggregate":
            group_k = int(opts.pop("k", k))
            out = microaggregate(out, [op.column], k=group_k)
        else:  # shift-dates
            secret = _need_key(key, op)
            person = str(opts.pop("person", ""))
            check_columns_exist([person], list(table.columns), role="person (shift-dates)")
            out[op.column] = shift_dates(column, table[person], secret, **opts)
    return out


def anonymize(
    frame: pd.DataFrame,
    quasi_identifiers: Sequence[str],
    *,
    k: int,
    sensitive: Sequence[str] = (),
    l: int | None = None,  # noqa: E741 - the name of the model
    t: float | None = None,
    algorithm: AnonymizationAlgorithm | str = AnonymizationAlgorithm.MONDRIAN,
    hierarchies: Mapping[str, HierarchySpec] | None = None,
    max_suppression: float = 0.05,
    operations: Sequence[ColumnOperation] = (),
    key: bytes | None = None,
    target: str | None = None,
    external: pd.DataFrame | None = None,
    external_truth: npt.NDArray[np.int64] | None = None,
    population_size: int | None = None,
    threshold: float = 0.2,
    declared_bounds: Mapping[str, tuple[float, float]] | None = None,
    progress: ProgressCallback | None = None,
) -> AnonymizationResult:
    """Anonymise ``frame`` (module docstring).

    Args:
        frame: The original table; its row order is kept.
        quasi_identifiers: Columns to generalise.
        k: Smallest class size.
        sensitive: Sensitive columns (l and t apply to the first; all are reported).
        l: Distinct l-diversity to enforce.
        t: t-closeness to enforce.
        algorithm: An :class:`AnonymizationAlgorithm` or its value: ``mondrian``
            (strict), ``mondrian-relaxed`` or ``full-domain``.
        hierarchies: Declared hierarchies by column (others get defaults).
        max_suppression: For ``full-domain``: largest share of records suppressed.
        operations: Column operators for the other columns.
        key: Key of the keyed operators (pseudonymize, shift-dates).
        target: A column to predict, to compare classifier accuracy before and after.
        external: An attacker's table for the linkage attack, before and after.
        external_truth: Index in ``frame`` of each external row's record, or ``-1``.
        population_size: Population size for uniqueness estimates.
        threshold: Record risk counted as "at risk".
        declared_bounds: Bounds declared at registration
            (``PrivacySchema.bounds`` of a registered dataset): numeric
            quasi-identifiers are binned within them (see
            :attr:`AnonymizationResult.declared_bounds` for which were used).
        progress: Progress of the algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise InvalidInputError(
            "unknown anonymisation algorithm",
            expected=" | ".join(ALGORITHMS),
            got=repr(algorithm),
            fix="for example --algorithm mondrian",
        )
    algorithm = AnonymizationAlgorithm(algorithm)
    _check_table(frame, quasi_identifiers, sensitive, target)
    if (l is not None or t is not None) and not sensitive:
        raise InvalidInputError(
            "l-diversity and t-closeness need a sensitive attribute",
            expected="--sensitive COLUMN",
            got="none",
            fix="name the sensitive column",
        )
    frame = frame.reset_index(drop=True)
    keys = list(quasi_identifiers)
    hierarchies, bounds_notes = _with_declared_bounds(
        frame, keys, hierarchies, declared_bounds or {}
    )
    domains = build_domains(frame, keys, hierarchies)
    check = Constraints(
        k, len(frame), l=l, t=t, sensitive=frame[sensitive[0]] if sensitive else None
    )
    started = time.perf_counter()
    if algorithm is AnonymizationAlgorithm.FULL_DOMAIN:
        recoding = full_domain(domains, check, max_suppression=max_suppression, progress=progress)
    else:
        recoding = mondrian(
            domains,
            check,
            relaxed=algorithm is AnonymizationAlgorithm.MONDRIAN_RELAXED,
            progress=progress,
        )
    seconds = time.perf_counter() - started
    released = recoding.apply(frame)
    released = _apply_operations(released, operations, quasi_identifiers=keys, k=k, key=key)
    common = functools.partial(
        _assess,
        sensitive=sensitive,
        population_size=population_size,
        threshold=threshold,
        target=target,
        external=external,
        external_truth=external_truth,
    )
    before = common(frame, class_ids(frame, keys), keys, recoding=Recoding.identity(domains))
    after = common(released, recoding.class_ids(), keys, recoding=recoding, utility_k=k)
    return AnonymizationResult(
        table=released,
        recoding=recoding,
        before=before,
        after=after,
        algorithm=recoding.algorithm,
        constraints={**check.describe(), "max_suppression": max_suppression}
        if algorithm is AnonymizationAlgorithm.FULL_DOMAIN
        else check.describe(),
        seconds=seconds,
        operations=list(operations),
        declared_bounds=bounds_notes,
        unchanged=unchanged_columns(
            released,
            recoding.class_ids(),
            skip=[*keys, *sensitive, *(o.column for o in operations)],
        ),
    )

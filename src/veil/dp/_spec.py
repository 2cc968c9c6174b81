"""What a DP query asks for and what it answers: the specification and the result.

A :class:`QuerySpec` lists the aggregates, the grouping and the row filter;
:class:`Contribution` bounds what one person may add; :class:`QueryResult`
holds the noisy rows. Planning lives in :mod:`veil.dp._plan`, execution in
:mod:`veil.dp._execute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import polars as pl

from veil._validate import whole_number
from veil.errors import InvalidInputError
from veil.ledger.params import check_probability

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "AggregateKind",
    "Contribution",
    "NoiseMechanism",
    "QueryResult",
    "QuerySpec",
]


class NoiseMechanism(StrEnum):
    """The noise of a query's sums and counts; ``AUTO`` picks the smaller error for the budget.

    A plain string (``"laplace"``) is accepted wherever a member is.
    """

    AUTO = "auto"
    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


class AggregateKind(StrEnum):
    """What an aggregate computes. A plain string (``"mean"``) is accepted wherever a member is."""

    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    VARIANCE = "variance"
    QUANTILE = "quantile"


AGGREGATES: tuple[str, ...] = tuple(k.value for k in AggregateKind)


@dataclass(frozen=True)
class Aggregate:
    """One output column: ``kind`` of ``column`` (``None`` for COUNT(*)).

    ``kind`` is an :class:`AggregateKind` once built (a plain string is converted).
    """

    kind: AggregateKind | str
    column: str | None = None
    q: float | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in AGGREGATES:
            raise InvalidInputError(
                "unsupported aggregate", expected=f"one of {list(AGGREGATES)}", got=repr(self.kind)
            )
        object.__setattr__(self, "kind", AggregateKind(self.kind))
        if self.kind != "count" and self.column is None:
            raise InvalidInputError(f"{self.kind} needs a column", got="no column")
        if self.kind == "quantile":
            check_probability(self.q, "quantile level")

    @property
    def name(self) -> str:
        if self.alias:
            return self.alias
        if self.kind == "count":
            return "count" if self.column is None else f"count_{self.column}"
        if self.kind == "quantile":
            return f"quantile_{self.column}_{self.q:g}"
        return f"{self.kind}_{self.column}"


@dataclass(frozen=True)
class Contribution:
    """How much one person may contribute: at most ``max_groups`` groups, ``max_rows`` rows in each."""

    max_groups: int = 1
    max_rows: int = 1

    def __post_init__(self) -> None:
        for name in ("max_groups", "max_rows"):
            whole_number(
                getattr(self, name),
                name,
                fix=f"declare --{name.replace('_', '-')} 1 (or the true bound per person)",
            )


@dataclass(frozen=True)
class QuerySpec:
    """What to compute: aggregates, optional grouping and filter.

    Attributes:
        aggregates: The output columns.
        group_by: Grouping columns (categorical or bounded numeric).
        where: A SQL condition (the body of a WHERE clause: comparisons with
            literals, IN, BETWEEN, IS NULL, AND/OR/NOT), applied row by row
            before contribution bounding. A free Polars expression is not
            accepted: it could look across rows and break the sensitivity.
        keys: ``None`` to use declared categories when every grouping column
            has them (else unknown keys); ``"unknown"`` to force partition
            selection; or an explicit list of key tuples.
    """

    aggregates: tuple[Aggregate, ...]
    group_by: tuple[str, ...] = ()
    where: str | None = None
    keys: Sequence[tuple[Any, ...]] | Literal["unknown"] | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if not self.aggregates:
            raise InvalidInputError("a query needs at least one aggregate", got="none")
        if self.where is not None and not isinstance(self.where, str):
            raise InvalidInputError(
                "a filter is given as a SQL condition",
                expected="a string such as \"age >= 30 AND sex = 'Female'\"",
                got=type(self.where).__name__,
                fix="row-level filters only: an expression could look across rows",
            )
        repeated = sorted({g for g in self.group_by if self.group_by.count(g) > 1})
        if repeated:
            raise InvalidInputError(
                "a grouping column is listed twice",
                expected="each grouping column once",
                got=f"GROUP BY {', '.join(self.group_by)}",
                fix=f"list {', '.join(repeated)} once",
            )
        # The output columns: the group labels, then the aggregates. One name, one column.
        names = [*self.group_by, *(a.name for a in self.aggregates)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidInputError(
                "two output columns have the same name",
                expected="distinct names for the grouping columns and the aggregates",
                got=str(dup),
                fix="alias the aggregates with AS, with names that are not grouping columns",
            )


@dataclass(frozen=True)
class QueryResult:
    """Noisy answer rows, with per-cell noise scale and confidence interval."""

    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    epsilon: float
    delta: float
    confidence: float
    mechanism: str
    notes: tuple[str, ...]
    charged: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pl.DataFrame:
        """Values only, one row per group."""
        return pl.DataFrame(
            [
                {c: r[c]["value"] if isinstance(r[c], dict) else r[c] for c in self.columns}
                for r in self.rows
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "rows": self.rows,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "mechanism": self.mechanism,
            "ci_level": self.confidence,
            "ci_note": "intervals cover the DP noise only; clamping and contribution-bounding "
            "bias are not included; quantile intervals are ranges of quantile levels",
            "notes": list(self.notes),
            **({"charged": self.charged} if self.charged else {}),
        }

"""The Python API: DP queries on a frame, charged before they run.

:class:`PrivateFrame` wraps a Polars or pandas frame and its
:class:`~veil.data.PrivacySchema`. It charges either a workspace
:class:`~veil.ledger.Ledger` (a registered dataset) or a local, in-memory
:class:`~veil.ledger.Budget` (composed with the same PLD accountant) before
any noisy value is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import polars as pl
from dp_accounting import dp_event

from veil.data import Catalog, ColumnSpec, PrivacySchema
from veil.dp._query import (
    Aggregate,
    Contribution,
    QueryPlan,
    QueryResult,
    QuerySpec,
    as_polars,
    plan_query,
    run_plan,
)
from veil.dp._sql import parse_sql
from veil.dp._where import compile_where
from veil.errors import BudgetExceededError, InvalidInputError
from veil.ledger import Budget, Ledger, PLDAccountant, zcdp_rho

__all__ = ["PrivateFrame", "query_dataset"]

Frame = pl.DataFrame | pl.LazyFrame | pd.DataFrame


class _LocalBudget:
    """An in-memory odometer for frames outside a workspace (same accountant as the ledger)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.events: list[dp_event.DpEvent] = []
        self.accountant = PLDAccountant()

    def spent(self, events: Sequence[dp_event.DpEvent]) -> float:
        if self.budget.rho is not None:
            return zcdp_rho(events)
        assert self.budget.delta is not None  # noqa: S101
        return self.accountant.epsilon(events, self.budget.delta)

    def limit(self) -> float:
        return float(self.budget.rho if self.budget.rho is not None else self.budget.epsilon)  # type: ignore[arg-type]

    def charge(self, event: dp_event.DpEvent) -> dict[str, Any]:
        after = self.spent([*self.events, event])
        if not after <= self.limit() * (1 + 1e-9):
            before = self.spent(self.events)
            raise BudgetExceededError(
                "this query would exceed the frame's privacy budget; nothing was computed",
                expected=f"total spend within {self.budget}",
                got=f"{after:.6g} after this query ({before:.6g} spent so far)",
                fix="ask for a smaller epsilon, or give the PrivateFrame a larger budget",
                details={"spent": before, "would_spend": after, "budget": self.budget.to_dict()},
            )
        self.events.append(event)
        key = "rho" if self.budget.rho is not None else "epsilon"
        return {
            "spent": {key: after},
            "remaining": self.limit() - after,
            "budget": self.budget.to_dict(),
        }


class PrivateFrame:
    """A frame that answers only differentially private queries.

    Args:
        frame: Polars (eager or lazy) or pandas data.
        schema: Its privacy schema: bounds and categories are taken from here, never from the data.
        budget: A local budget (for frames outside a workspace).
        ledger, dataset: Charge this workspace ledger's dataset instead.
        purpose: Recorded with every charge (ledger only).
        contribution: Default contribution bounds per person.

    >>> import polars as pl
    >>> from veil.data import Catalog, ColumnSpec, PrivacySchema
    >>> from veil.ledger import Budget
    >>> schema = PrivacySchema(columns=(ColumnSpec("age", "numeric", bounds=(0, 100)),))
    >>> pf = PrivateFrame(pl.DataFrame({"age": [30, 40, 50] * 100}), schema, budget=Budget(epsilon=1.0))
    >>> result = pf.mean("age", epsilon=0.5)
    >>> 0 <= result.rows[0]["mean_age"]["value"] <= 100
    True
    """

    def __init__(
        self,
        frame: Frame,
        schema: PrivacySchema,
        *,
        budget: Budget | None = None,
        ledger: Ledger | None = None,
        dataset: str | None = None,
        purpose: str | None = None,
        contribution: Contribution | None = None,
        table_names: tuple[str, ...] = ("t",),
    ) -> None:
        if (ledger is None) == (budget is None):
            raise InvalidInputError(
                "a PrivateFrame needs exactly one place to charge",
                expected="budget=Budget(...) or ledger=Ledger(...) with dataset=...",
                got=f"budget={budget!r}, ledger={'set' if ledger else None}",
            )
        if ledger is not None and not dataset:
            raise InvalidInputError("charging a ledger needs the dataset name", got="dataset=None")
        self._frame = as_polars(frame)
        self.schema = schema
        self._ledger = ledger
        self._dataset = dataset
        self._local = _LocalBudget(budget) if budget is not None else None
        self.purpose = purpose
        self.contribution = contribution
        self.table_names = (*table_names, *((dataset,) if dataset else ()))

    # ------------------------------------------------------------ the general entry point
    def plan(
        self,
        query: str | QuerySpec,
        *,
        epsilon: float,
        delta: float = 0.0,
        confidence: float = 0.95,
        mechanism: Literal["auto", "laplace", "gaussian"] = "auto",
        contribution: Contribution | None = None,
    ) -> QueryPlan:
        """The plan of ``query``: components, scales and what it will charge (nothing is charged)."""
        spec = parse_sql(query, table_names=self.table_names) if isinstance(query, str) else query
        return plan_query(
            spec,
            self.schema,
            epsilon=epsilon,
            delta=delta,
            contribution=contribution or self.contribution or _schema_contribution(self.schema),
            confidence=confidence,
            mechanism=mechanism,
        )

    def query(
        self,
        query: str | QuerySpec,
        *,
        epsilon: float,
        delta: float = 0.0,
        confidence: float = 0.95,
        mechanism: Literal["auto", "laplace", "gaussian"] = "auto",
        contribution: Contribution | None = None,
        purpose: str | None = None,
    ) -> QueryResult:
        """Answer ``query`` (SQL text or a :class:`QuerySpec`) with DP, charging first."""
        plan = self.plan(
            query,
            epsilon=epsilon,
            delta=delta,
            confidence=confidence,
            mechanism=mechanism,
            contribution=contribution,
        )
        self._check_columns(plan)
        charged = self._charge(plan, purpose)
        result = run_plan(plan, self._frame)
        return replace(result, charged=charged)

    def _check_columns(self, plan: QueryPlan) -> None:
        names = set(self._frame.collect_schema().names())
        wanted = {*plan.spec.group_by, *(c.column for c in plan.components if c.column)}
        if plan.where_expr is not None:
            wanted |= set(plan.where_expr.meta.root_names())
        if self.schema.privacy_unit is not None:
            wanted.add(self.schema.privacy_unit)
        for name in sorted(wanted):
            self.schema.column(name)  # raises with the closest declared name
        missing = sorted(wanted - names)
        if missing:
            raise InvalidInputError(
                "the frame lacks declared columns",
                expected=str(sorted(wanted)),
                got=f"missing {missing}",
            )
        # Checked before the charge, from the frame's types alone (never from its values).
        dtypes = self._frame.collect_schema()
        measured = sorted({c.column for c in plan.components if c.column})
        wrong = [f"{c}: {dtypes[c]}" for c in measured if not dtypes[c].is_numeric()]
        if wrong:
            raise InvalidInputError(
                "a measured column does not hold numbers",
                expected="numeric columns for SUM, AVG, VARIANCE and quantiles",
                got=", ".join(wrong),
                fix="convert the column to numbers before querying",
            )
        if plan.spec.where is not None:
            compile_where(plan.spec.where, dtypes)  # literals of the columns' types
        _check_key_types(plan, dtypes)

    def _charge(self, plan: QueryPlan, purpose: str | None) -> dict[str, Any]:
        event = plan.event
        if self._local is not None:
            return self._local.charge(event.dp_event)
        assert self._ledger is not None  # noqa: S101
        assert self._dataset is not None  # noqa: S101
        receipt = self._ledger.charge(self._dataset, event, purpose=purpose or self.purpose or "")
        return receipt.to_dict()

    # ------------------------------------------------------------ shorthands
    def _one(self, agg: Aggregate, by: Sequence[str], **kwargs: Any) -> QueryResult:
        keys = kwargs.pop("keys", None)
        return self.query(QuerySpec((agg,), tuple(by), keys=keys), **kwargs)

    def count(self, *, by: Sequence[str] = (), **kwargs: Any) -> QueryResult:
        return self._one(Aggregate("count"), by, **kwargs)

    def sum(self, column: str, *, by: Sequence[str] = (), **kwargs: Any) -> QueryResult:
        return self._one(Aggregate("sum", column), by, **kwargs)

    def mean(self, column: str, *, by: Sequence[str] = (), **kwargs: Any) -> QueryResult:
        return self._one(Aggregate("mean", column), by, **kwargs)

    def variance(self, column: str, *, by: Sequence[str] = (), **kwargs: Any) -> QueryResult:
        return self._one(Aggregate("variance", column), by, **kwargs)

    def quantile(
        self, column: str, q: float, *, by: Sequence[str] = (), **kwargs: Any
    ) -> QueryResult:
        return self._one(Aggregate("quantile", column, q=q), by, **kwargs)

    def median(self, column: str, *, by: Sequence[str] = (), **kwargs: Any) -> QueryResult:
        return self.quantile(column, 0.5, by=by, **kwargs)

    def histogram(self, column: str, *, bins: int = 10, **kwargs: Any) -> QueryResult:
        """Counts per declared category, or per equal-width bin of a bounded numeric column."""
        spec = self.schema.column(column)
        if spec.kind == "categorical" and spec.categories is not None:
            return self._one(Aggregate("count"), (column,), **kwargs)
        if spec.kind != "numeric" or spec.bounds is None:
            raise InvalidInputError(
                f"cannot build a histogram of '{column}'",
                expected="a categorical column with declared categories or a bounded numeric column",
                got=f"kind {spec.kind!r}, bounds {spec.bounds}, categories {spec.categories}",
                fix=f"declare --bounds {column}=LOW:HIGH or --categories {column}=a,b,c",
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise InvalidInputError("bins must be a whole number >= 1", got=repr(bins))
        lo, hi = spec.bounds
        edges = np.linspace(lo, hi, bins + 1)
        labels = tuple(
            f"[{edges[i]:g}, {edges[i + 1]:g}{']' if i == bins - 1 else ')'}" for i in range(bins)
        )
        bin_col = f"{column}_bin"
        values = pl.col(column).cast(pl.Float64, strict=False).fill_nan(None)
        index = (
            ((values.clip(lo, hi) - lo) / (hi - lo) * bins).floor().clip(0, bins - 1).cast(pl.Int64)
        )
        binned = self._frame.with_columns(
            pl.when(values.is_null())
            .then(None)
            .otherwise(
                index.replace_strict(list(range(bins)), list(labels), return_dtype=pl.String)
            )
            .alias(bin_col)
        )
        schema = PrivacySchema(
            columns=(*self.schema.columns, ColumnSpec(bin_col, "categorical", categories=labels)),
            privacy_unit=self.schema.privacy_unit,
            max_groups=self.schema.max_groups,
            max_rows=self.schema.max_rows,
        )
        view = PrivateFrame.__new__(PrivateFrame)
        view.__dict__.update(self.__dict__)
        view._frame = binned  # noqa: SLF001 - a binned view sharing this frame's budget
        view.schema = schema
        return view._one(Aggregate("count"), (bin_col,), **kwargs)  # noqa: SLF001


def _schema_contribution(schema: PrivacySchema) -> Contribution:
    return Contribution(max_groups=schema.max_groups, max_rows=schema.max_rows)


def _check_key_types(plan: QueryPlan, dtypes: pl.Schema) -> None:
    """Refuse group keys that cannot stand for values of their column (before the charge)."""
    keys, by = plan.keys, plan.spec.group_by
    if keys is None or not by or all(isinstance(v, str) for key in keys for v in key):
        return  # no keys, or all strings: compared with the columns as strings
    for j, column in enumerate(by):
        values = [key[j] for key in keys]
        try:
            pl.Series(column, values, dtype=dtypes[column], strict=True)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as exc:
            raise InvalidInputError(
                f"the group keys for '{column}' are not values of its type ({dtypes[column]})",
                expected=f"keys of type {dtypes[column]} (or every key as a string)",
                got=", ".join(repr(v) for v in values[:5]),
                fix=f"give the keys of '{column}' as the column holds them",
            ) from exc


def query_dataset(
    catalog: Catalog,
    ledger: Ledger,
    dataset: str,
    sql: str,
    *,
    epsilon: float,
    delta: float = 0.0,
    purpose: str,
    confidence: float = 0.95,
    mechanism: Literal["auto", "laplace", "gaussian"] = "auto",
) -> QueryResult:
    """Answer ``sql`` on a registered dataset, charging its ledger first.

    The query is parsed and planned, and the data loaded and verified against
    its fingerprint, *before* the charge: a query that cannot run costs nothing.
    """
    info = catalog.get(dataset)
    probe = PrivateFrame(
        pl.DataFrame(), info.schema, budget=Budget(epsilon=1.0), table_names=("t", dataset)
    )
    plan = probe.plan(sql, epsilon=epsilon, delta=delta, confidence=confidence, mechanism=mechanism)
    ledger.preview(dataset, plan.event)  # refuse early (and cheaply) when the budget is short
    wanted = {*plan.spec.group_by, *(c.column for c in plan.components if c.column)}
    if plan.where_expr is not None:
        wanted |= set(plan.where_expr.meta.root_names())
    if info.schema.privacy_unit:
        wanted.add(info.schema.privacy_unit)
    for name in wanted:
        info.schema.column(name)
    frame = catalog.load_frame(dataset, columns=sorted(wanted) or None)
    private = PrivateFrame(
        frame, info.schema, ledger=ledger, dataset=dataset, purpose=purpose, table_names=("t",)
    )
    return private.query(
        plan.spec,
        epsilon=epsilon,
        delta=delta,
        confidence=confidence,
        mechanism=mechanism,
        purpose=purpose,
    )

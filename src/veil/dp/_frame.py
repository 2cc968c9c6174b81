"""The Python API: DP queries on a frame, charged through the one budget gate before they run.

:class:`PrivateFrame` wraps a Polars or pandas frame and its
:class:`~veil.data.PrivacySchema`. Every query is charged to a
:class:`~veil.ledger.BudgetGuard` before any noisy value is computed: the
workspace :class:`~veil.ledger.Ledger` (a registered dataset, passed in by the
caller) or a :class:`~veil.ledger.LocalBudget` (a frame outside a workspace;
``budget=Budget(...)`` builds one). Both validate the event and compose it
with the same accountant, so a query one refuses the other refuses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from veil._validate import whole_number
from veil.access import Permission
from veil.data import Catalog, ColumnSpec, DataUse, PrivacySchema
from veil.dp._execute import as_polars, run_plan
from veil.dp._plan import QueryPlan, is_issued, plan_query
from veil.dp._spark import is_spark_frame
from veil.dp._spec import Aggregate, Contribution, NoiseMechanism, QueryResult, QuerySpec
from veil.dp._sql import parse_sql
from veil.dp._where import compile_where
from veil.errors import InvalidInputError
from veil.ledger import Budget, BudgetGuard, LocalBudget

__all__ = ["PrivateFrame", "query_dataset"]

Frame = pl.DataFrame | pl.LazyFrame | pd.DataFrame

ENGINES = ("polars", "spark")
"""The query engines: Polars on this machine (default), Apache Spark (the ``spark`` extra)."""

LOCAL_PURPOSE = "PrivateFrame query"
"""The purpose recorded by a frame's own local budget when none is given."""


class PrivateFrame:
    """A frame that answers only differentially private queries.

    Args:
        frame: Polars (eager or lazy) or pandas data.
        schema: Its privacy schema: bounds and categories are taken from here, never from the data.
        budget: A local budget for a frame outside a workspace: the frame
            charges its own :class:`~veil.ledger.LocalBudget`, under the name
            ``dataset`` (default ``"local"``).
        guard: Or any :class:`~veil.ledger.BudgetGuard` (the workspace
            :class:`~veil.ledger.Ledger`, a shared ``LocalBudget``), charged
            under ``dataset`` (required).
        ledger: Deprecated alias of ``guard`` (kept for one release).
        dataset: The budget charged: a registered dataset for the ledger, a label for a local budget.
        purpose: Recorded with every charge (default ``"PrivateFrame query"``
            for ``budget=``; a ``guard`` refuses a charge without one).
        contribution: Default contribution bounds per person.

    Each answer's ``charged`` is the gate's receipt (``Receipt.to_dict()``):
    the event, what it cost alone, and the budget after it.

    >>> import polars as pl
    >>> from veil.data import Catalog, ColumnSpec, PrivacySchema
    >>> from veil.ledger import Budget
    >>> schema = PrivacySchema(columns=(ColumnSpec("age", "numeric", bounds=(0, 100)),))
    >>> pf = PrivateFrame(pl.DataFrame({"age": [30, 40, 50] * 100}), schema, budget=Budget(epsilon=1.0))
    >>> result = pf.mean("age", epsilon=0.5)
    >>> 0 <= result.rows[0]["mean_age"]["value"] <= 100
    True
    >>> result.charged["budget"]["remaining"]
    0.5
    """

    def __init__(
        self,
        frame: Frame,
        schema: PrivacySchema,
        *,
        budget: Budget | None = None,
        guard: BudgetGuard | None = None,
        ledger: BudgetGuard | None = None,
        dataset: str | None = None,
        purpose: str | None = None,
        contribution: Contribution | None = None,
        table_names: tuple[str, ...] = ("t",),
    ) -> None:
        names = (*table_names, *((dataset,) if dataset else ()))
        given = {"budget": budget, "guard": guard, "ledger": ledger}
        named = [name for name, value in given.items() if value is not None]
        if len(named) != 1:
            raise InvalidInputError(
                "a PrivateFrame needs exactly one place to charge",
                expected="budget=Budget(...), or guard=<a BudgetGuard: Ledger or LocalBudget> "
                "with dataset=...",
                got=", ".join(named) if named else "none",
            )
        if budget is not None:
            if not isinstance(budget, Budget):
                raise InvalidInputError(
                    "budget= takes a Budget",
                    expected="Budget(epsilon=..., delta=...) or Budget(rho=...)",
                    got=type(budget).__name__,
                    fix="pass a workspace Ledger or a LocalBudget as guard= instead",
                )
            dataset = dataset or "local"
            self.guard: BudgetGuard = LocalBudget(budget, dataset=dataset)
            purpose = purpose or LOCAL_PURPOSE
        else:
            chosen = guard if guard is not None else ledger
            if not isinstance(chosen, BudgetGuard):
                raise InvalidInputError(
                    "guard= takes a budget gate",
                    expected="a BudgetGuard: the workspace Ledger or a LocalBudget",
                    got=type(chosen).__name__,
                )
            if not dataset:
                raise InvalidInputError(
                    "charging a guard needs the dataset (budget) name",
                    expected="dataset='...'",
                    got="dataset=None",
                    fix="pass the registered dataset's name (or the LocalBudget's name)",
                )
            self.guard = chosen
        self.dataset: str = dataset
        # A catalogue load of a consent-managed dataset names the consent state it applied;
        # every charge made from this frame records it (Polars frames carry no attrs).
        attrs = frame.attrs if isinstance(frame, pd.DataFrame) else {}
        self.consent: dict[str, Any] | None = attrs.get("veil.consent")
        # A Spark DataFrame stays on Spark (the Spark engine); everything else becomes Polars.
        self._frame: Any = frame if is_spark_frame(frame) else as_polars(frame)
        self.schema = schema
        self.purpose = purpose
        self.contribution = contribution
        self.table_names = names

    # ------------------------------------------------------------ the general entry point
    def plan(
        self,
        query: str | QuerySpec,
        *,
        epsilon: float,
        delta: float = 0.0,
        confidence: float = 0.95,
        mechanism: NoiseMechanism | str = NoiseMechanism.AUTO,
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
        mechanism: NoiseMechanism | str = NoiseMechanism.AUTO,
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
        return self.run(plan, purpose=purpose)

    def run(self, plan: QueryPlan, *, purpose: str | None = None) -> QueryResult:
        """Answer a plan already made (by :meth:`plan` or :func:`~veil.dp.plan_query`), charging first.

        The frame's column types are checked against the plan, then the
        plan's event is charged to the guard (refused: nothing computed), then
        the same plan is computed. Only an unchanged plan from ``plan_query``
        for this frame's schema is run: the charge is what its mechanisms say.
        """
        if not isinstance(plan, QueryPlan) or not is_issued(plan):
            raise InvalidInputError(
                "run() takes a plan made by plan() or plan_query(), unchanged",
                expected="the QueryPlan plan_query returned",
                got=type(plan).__name__ if not isinstance(plan, QueryPlan) else "a changed copy",
                fix="make the plan with PrivateFrame.plan(...) and pass it as it is",
            )
        if plan.schema != self.schema:
            raise InvalidInputError(
                "the plan was made for another privacy schema than this frame's",
                expected="a plan made with this frame's schema",
                got="another schema",
                fix="make the plan with this frame's plan(...)",
            )
        self._check_columns(plan)
        event = plan.event
        if self.consent is not None:
            event = replace(event, details={**event.details, "consent": self.consent})
        receipt = self.guard.charge(self.dataset, event, purpose=purpose or self.purpose or "")
        result = run_plan(plan, self._frame)
        return replace(result, charged=receipt.to_dict())

    @property
    def engine(self) -> str:
        """``"spark"`` for a Spark DataFrame, else ``"polars"``."""
        return "spark" if is_spark_frame(self._frame) else "polars"

    def _dtypes(self) -> dict[str, pl.DataType]:
        """The frame's column types (from its schema, never its values)."""
        if is_spark_frame(self._frame):
            from veil.dp._spark import spark_dtypes  # noqa: PLC0415 - pyspark is optional

            return spark_dtypes(self._frame)
        return dict(self._frame.collect_schema())

    def _check_columns(self, plan: QueryPlan) -> None:
        wanted = _wanted_columns(plan)
        dtypes = self._dtypes()
        missing = sorted(wanted - set(dtypes))
        if missing:
            raise InvalidInputError(
                "the frame lacks declared columns",
                expected=str(sorted(wanted)),
                got=f"missing {missing}",
            )
        # Checked before the charge, from the frame's types alone (never from its values).
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
        whole_number(bins, "bins", expected=None)
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
        if is_spark_frame(self._frame):
            from veil.dp._spark import spark_bins  # noqa: PLC0415 - pyspark is optional

            binned = spark_bins(self._frame, column, bin_col, lo, hi, labels)
        else:
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


def _check_key_types(plan: QueryPlan, dtypes: Mapping[str, pl.DataType]) -> None:
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


def _wanted_columns(plan: QueryPlan) -> set[str]:
    """The columns ``plan`` reads: grouping, measured, filtered, and the privacy unit.

    Each must be declared in the plan's schema (the error names the closest
    declared column); ``query_dataset`` loads only these, and ``PrivateFrame``
    checks the frame has them, both before the charge.
    """
    wanted = {*plan.spec.group_by, *(c.column for c in plan.components if c.column)}
    if plan.where_expr is not None:
        wanted |= set(plan.where_expr.meta.root_names())
    if plan.schema.privacy_unit is not None:
        wanted.add(plan.schema.privacy_unit)
    for name in sorted(wanted):
        plan.schema.column(name)  # raises with the closest declared name
    return wanted


def query_dataset(
    catalog: Catalog,
    guard: BudgetGuard,
    dataset: str,
    sql: str,
    *,
    epsilon: float,
    delta: float = 0.0,
    purpose: str,
    confidence: float = 0.95,
    mechanism: NoiseMechanism | str = NoiseMechanism.AUTO,
    engine: str = "polars",
    spark_master: str | None = None,
) -> QueryResult:
    """Answer ``sql`` on a registered dataset, charging ``guard`` (the workspace ledger) first.

    The query is parsed and planned once, from the registered schema; the
    plan's event is previewed on the guard (a short budget refuses before any
    data is read); only the columns the plan reads are loaded and verified
    against the dataset's fingerprint; their types are checked; and only then
    is the same plan charged and computed. A query that cannot run costs nothing.

    The acting principal (``catalog.access``) must hold ``budget.spend`` on
    ``dataset``: that is checked before anything else, so an auditor or a
    consumer is refused (and the refusal recorded) before the catalogue or the
    rows are touched. The rows are loaded for the mechanism
    (:attr:`~veil.data.DataUse.MECHANISM`), recorded on the trail with
    ``purpose``.

    ``engine="spark"`` computes on Spark (``spark_master``, default
    ``local[2]``): the session starts before the charge (a session that cannot
    start costs nothing); a Parquet dataset is read by Spark where it lies,
    after its fingerprint is checked, so it need not fit in memory; other
    datasets are loaded as usual and handed to Spark. The answer is the one
    the Polars engine gives for the same rows, bounding salt and noise.

    Raises:
        PermissionDeniedError: The acting principal may not spend ``dataset``'s budget.
        EngineError: Spark could not start, or its job failed (after the charge).
    """
    if engine not in ENGINES:
        raise InvalidInputError(
            "unknown query engine",
            expected=" or ".join(ENGINES),
            got=repr(engine),
            fix="pass --engine polars (default) or --engine spark",
        )
    catalog.access.require(
        Permission.BUDGET_SPEND, dataset, action="privacy.charge", purpose=purpose
    )
    info = catalog.get(dataset)
    spec = parse_sql(sql, table_names=("t", dataset))
    plan = plan_query(
        spec,
        info.schema,
        epsilon=epsilon,
        delta=delta,
        contribution=_schema_contribution(info.schema),
        confidence=confidence,
        mechanism=mechanism,
    )
    guard.preview(dataset, plan.event)  # refuse early (and cheaply) when the budget is short
    wanted = _wanted_columns(plan)
    columns = sorted(wanted) or None
    frame: Any
    if engine == "spark":
        from veil.dp._spark import DEFAULT_MASTER, spark_session  # noqa: PLC0415 - optional

        session = spark_session(spark_master or DEFAULT_MASTER)
        path = catalog.verified_source(
            dataset, columns=columns, use=DataUse.MECHANISM, purpose=purpose
        )
        if path is not None:
            frame = session.read.parquet(str(path))
            frame = frame.select(*columns) if columns else frame
        else:
            loaded = catalog.load_frame(
                dataset, columns=columns, use=DataUse.MECHANISM, purpose=purpose
            )
            frame = session.createDataFrame(loaded)
    else:
        frame = catalog.load_frame(dataset, columns=columns, use=DataUse.MECHANISM, purpose=purpose)
    private = PrivateFrame(frame, info.schema, guard=guard, dataset=dataset, purpose=purpose)
    return private.run(plan, purpose=purpose)

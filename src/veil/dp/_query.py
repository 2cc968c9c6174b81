"""Differentially private queries on Polars and pandas frames.

A query is planned from declared facts only (the schema's bounds and
categories, the contribution bounds, epsilon and delta), charged to the
ledger, and only then computed:

1. **Plan.** Each aggregate needs noisy components: one count per group
   (shared by COUNT, AVG and VARIANCE, and used for partition selection), a
   sum of clamped values (SUM), a sum and a sum of squares of values centred
   on the middle of their bounds (AVG, VARIANCE: the centring halves the
   sensitivity), and an exponential-mechanism quantile per group. Epsilon
   (and delta, when the Gaussian mechanism is chosen) is split evenly over
   the components. Sensitivities follow from the contribution bounds: a
   person touches at most ``max_groups`` groups (L0) with at most
   ``max_rows`` rows each (Linf), so L1 = L0 * Linf * (per-row bound) and
   L2 = sqrt(L0) * Linf * (per-row bound).
2. **Charge** (:meth:`veil.ledger.Ledger.charge` or a local
   :class:`~veil.ledger.Budget`): refused before any value is computed.
3. **Compute**: contribution bounding (a random subset of each person's
   groups and rows), clamping to the declared bounds, exact aggregates with
   Polars, then OpenDP noise.

Groups come from declared categories (**known keys**: every declared key is
released, even when empty) or from the data (**unknown keys**: a group is
released only when its noisy count clears a threshold chosen so that a group
created by one person appears with probability at most delta; needs delta > 0).

Every cell carries its noise scale and a confidence interval at the
requested level for the *noise only*: clamping and contribution-bounding bias
are not included, and quantile intervals are stated in rank space.
"""

from __future__ import annotations

import functools
import math
import secrets
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats

from veil._validate import whole_number
from veil.data import PrivacySchema
from veil.dp._mechanisms import gaussian_sigma, laplace_half_width
from veil.dp._noise import gaussian_noise, laplace_noise, noisy_max
from veil.dp._where import compile_where
from veil.errors import InvalidInputError, SchemaError
from veil.ledger import (
    Mechanism,
    PrivacyEvent,
)
from veil.ledger.params import check_delta, check_probability, check_release_epsilon

# run_plan is not exported: it releases noisy values and charges nothing, so only
# PrivateFrame.query (which charges first) calls it.
__all__ = [
    "Aggregate",
    "Contribution",
    "NoiseMechanism",
    "QueryPlan",
    "QueryResult",
    "QuerySpec",
    "plan_query",
]


class NoiseMechanism(StrEnum):
    """The noise of a query's sums and counts; ``AUTO`` picks the smaller error for the budget.

    A plain string (``"laplace"``) is accepted wherever a member is.
    """

    AUTO = "auto"
    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


AggregateKind = Literal["count", "sum", "mean", "variance", "quantile"]
AGGREGATES: tuple[AggregateKind, ...] = ("count", "sum", "mean", "variance", "quantile")
QUANTILE_CANDIDATES = 1001
# The float64 arithmetic of a query is sized for frames of up to MAX_ROWS rows (Polars holds
# at most 2^32 by default): plan_query refuses bounds and epsilons for which a sum over that
# many rows, plus its noise, could leave float64's range, so no outcome depends on the data.
MAX_ROWS = 2**40
_TAIL = 745.0  # P(|Laplace| > 745 scale) = e^-745 ~ 5e-324; the Gaussian's tail is thinner
_FLOAT_ROOM = sys.float_info.max / 16  # headroom for the interval arithmetic in _cell
_INT_ROOM = float(2**53)  # noisy counts stay exact integers in float64


@dataclass(frozen=True)
class Aggregate:
    """One output column: ``kind`` of ``column`` (``None`` for COUNT(*))."""

    kind: AggregateKind
    column: str | None = None
    q: float | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in AGGREGATES:
            raise InvalidInputError(
                "unsupported aggregate", expected=f"one of {list(AGGREGATES)}", got=repr(self.kind)
            )
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
class _Component:
    """A noisy quantity the aggregates are built from."""

    kind: Literal["count", "sum", "csum", "csumsq", "quantile"]
    column: str | None
    q: float | None
    per_row: float  # bound on one row's contribution to this quantity
    integer: bool
    epsilon: float = 0.0
    delta: float = 0.0
    scale: float = 0.0  # Laplace scale, Gaussian sigma, or exponential-noise scale (quantile)
    noise: Literal["laplace", "gaussian", "exponential"] = "laplace"


@dataclass(frozen=True)
class QueryPlan:
    """A query made concrete: components, scales, mechanisms, and what will be charged."""

    spec: QuerySpec
    schema: PrivacySchema
    contribution: Contribution
    epsilon: float
    delta: float
    confidence: float
    mechanism: str
    components: tuple[_Component, ...]
    keys: tuple[tuple[Any, ...], ...] | None
    threshold: float | None
    selection_delta: float
    mechanisms: tuple[Mechanism, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    where_expr: pl.Expr | None = None

    @property
    def event(self) -> PrivacyEvent:
        text = self.spec.text or _describe_spec(self.spec)
        return PrivacyEvent(
            what=text,
            mechanisms=self.mechanisms,
            operation="query",
            details={
                "epsilon_requested": self.epsilon,
                "delta_requested": self.delta,
                "contribution": {
                    "max_groups": self.contribution.max_groups,
                    "max_rows": self.contribution.max_rows,
                },
                "keys": "declared"
                if self.keys is not None
                else ("none" if not self.spec.group_by else "unknown"),
            },
        )


def _describe_spec(spec: QuerySpec) -> str:
    parts = ", ".join(a.name for a in spec.aggregates)
    by = f" by {', '.join(spec.group_by)}" if spec.group_by else ""
    where = f" where {spec.where}" if spec.where else ""
    return f"{parts}{by}{where}"


def _bounds(schema: PrivacySchema, column: str, purpose: str) -> tuple[float, float]:
    spec = schema.column(column)
    if spec.kind != "numeric" or spec.bounds is None:
        raise SchemaError(
            f"column '{column}' has no declared bounds, so {purpose} of it has no sensitivity",
            expected="a numeric column with declared bounds",
            got=f"kind {spec.kind!r}, bounds {spec.bounds}",
            fix=f"declare them when registering: --bounds {column}=LOW:HIGH",
        )
    return spec.bounds


def plan_query(  # noqa: C901, PLR0912, PLR0915 - one place derives every scale
    spec: QuerySpec,
    schema: PrivacySchema,
    *,
    epsilon: float,
    delta: float = 0.0,
    contribution: Contribution | None = None,
    confidence: float = 0.95,
    mechanism: NoiseMechanism | str = NoiseMechanism.AUTO,
) -> QueryPlan:
    """Derive every noise scale of ``spec`` from declared facts (no data is read)."""
    epsilon = check_release_epsilon(epsilon)  # at most MAX_RELEASE_EPSILON (veil.ledger)
    delta = check_delta(delta)
    check_probability(confidence, "confidence level")
    if mechanism not in set(NoiseMechanism):
        raise InvalidInputError(
            "unknown mechanism", expected="auto, laplace or gaussian", got=repr(mechanism)
        )
    mechanism = NoiseMechanism(mechanism)
    contribution = contribution or Contribution()
    if schema.privacy_unit is None and (contribution.max_groups, contribution.max_rows) != (1, 1):
        raise InvalidInputError(
            "contribution bounds need a privacy-unit column",
            expected="max_groups = max_rows = 1 when each row is a distinct person",
            got=f"max_groups={contribution.max_groups}, max_rows={contribution.max_rows}",
            fix="register the dataset with --id PERSON_COLUMN, or drop the bounds",
        )
    notes: list[str] = []
    # Which columns may be used at all.
    for col in spec.group_by:
        col_spec = schema.column(col)
        if col_spec.kind in {"identifier", "array"}:
            raise SchemaError(
                f"cannot group by '{col}'",
                expected="a categorical or numeric column",
                got=f"kind {col_spec.kind!r}",
                fix="group by a categorical column with declared categories",
            )
    # Keys.
    keys: tuple[tuple[Any, ...], ...] | None
    if not spec.group_by:
        keys = ((),)
    elif spec.keys == "unknown":
        keys = None
    elif spec.keys is not None:
        keys = tuple(tuple(k) if isinstance(k, (list, tuple)) else (k,) for k in spec.keys)
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated or any(len(k) != len(spec.group_by) for k in keys):
            raise InvalidInputError(
                "explicit group keys must be distinct tuples, one value per grouping column",
                expected=f"distinct keys of length {len(spec.group_by)}",
                got=f"repeated {repeated}" if repeated else "keys of another length",
                fix="list each group once (each listed group is released once, with fresh noise)",
            )
    else:
        cats = [schema.column(c).categories for c in spec.group_by]
        if all(c is not None for c in cats):
            keys = tuple(_product([tuple(c) for c in cats if c is not None]))
        else:
            keys = None
    if keys is None and delta == 0:
        undeclared = [c for c in spec.group_by if schema.column(c).categories is None]
        raise InvalidInputError(
            "grouping by a column without declared categories needs delta > 0",
            expected="declared categories (known keys), or a delta for partition selection",
            got=f"no categories declared for {undeclared} and delta = 0",
            fix="pass --delta 1e-6 (groups that only one person creates are then suppressed), "
            "or declare the categories with --categories COL=a,b,c",
        )
    _check_bounds_width(schema, spec)
    # Components.
    comps: dict[tuple[str, str | None, float | None], _Component] = {}

    def need(kind: str, column: str | None, q: float | None, per_row: float, integer: bool) -> None:
        comps.setdefault((kind, column, q), _Component(kind, column, q, per_row, integer))  # type: ignore[arg-type]

    # The count is computed when it is shown, selects groups, or feeds another estimate.
    if keys is None or any(
        a.kind in {"count", "mean", "variance", "quantile"} for a in spec.aggregates
    ):
        need("count", None, None, 1.0, integer=True)
    for agg in spec.aggregates:
        if agg.kind == "count":
            if agg.column is not None:
                schema.column(agg.column)
                notes.append(
                    f"COUNT({agg.column}) is computed as COUNT(*): missing values are imputed, not dropped"
                )
            continue
        assert agg.column is not None  # noqa: S101 - Aggregate guarantees it
        lo, hi = _bounds(schema, agg.column, agg.kind)
        half = (hi - lo) / 2
        if agg.kind == "sum":
            need("sum", agg.column, None, max(abs(lo), abs(hi)), integer=False)
        elif agg.kind == "mean":
            need("csum", agg.column, None, half, integer=False)
        elif agg.kind == "variance":
            need("csum", agg.column, None, half, integer=False)
            need("csumsq", agg.column, None, half * half, integer=False)
        else:
            need("quantile", agg.column, agg.q, 1.0, integer=False)
    use_gaussian = mechanism == "gaussian"
    if use_gaussian and delta == 0:
        raise InvalidInputError(
            "the Gaussian mechanism needs delta > 0",
            expected="--delta > 0 with --mechanism gaussian",
            got="delta = 0",
            fix="pass --delta 1e-6, or use the Laplace mechanism",
        )
    selection_delta = 0.0
    gaussian_delta = 0.0
    if keys is None:
        selection_delta = delta / 2 if use_gaussian else delta
    if use_gaussian:
        gaussian_delta = delta - selection_delta
    components = list(comps.values())
    eps_each = epsilon / len(components)
    n_gauss = sum(1 for c in components if c.kind != "quantile")
    delta_each = gaussian_delta / n_gauss if use_gaussian and n_gauss else 0.0
    l0, linf = contribution.max_groups, contribution.max_rows
    n_groups_touched = 1 if not spec.group_by else l0
    mechanisms: list[Mechanism] = []
    planned: list[_Component] = []
    threshold: float | None = None
    for comp in components:
        if comp.kind == "quantile":
            # Per group a score of sensitivity max(q, 1-q) * Linf; a person's groups compose.
            assert comp.q is not None  # noqa: S101
            sens = max(comp.q, 1 - comp.q) * linf
            scale = 2 * sens * n_groups_touched / eps_each
            grid, resolution = quantile_grid(*_bounds(schema, str(comp.column), "a quantile"))
            planned.append(_replace(comp, epsilon=eps_each, scale=scale, noise="exponential"))
            mechanisms.append(
                Mechanism.epsilon_delta(
                    "exponential_quantile",
                    eps_each,
                    0.0,
                    column=comp.column,
                    q=comp.q,
                    noise_scale=scale,
                    candidates=int(grid.size),
                    resolution=resolution,
                    bounds=list(_bounds(schema, str(comp.column), "a quantile")),
                )
            )
            continue
        l1 = n_groups_touched * linf * comp.per_row
        l2 = math.sqrt(n_groups_touched) * linf * comp.per_row
        if use_gaussian:
            sigma = gaussian_sigma(eps_each, delta_each, l2)
            planned.append(
                _replace(
                    comp,
                    epsilon=eps_each,
                    delta=delta_each,
                    scale=sigma,
                    noise="gaussian",
                    integer=False,
                )
            )
            mech = Mechanism.gaussian(sigma, l2, quantity=_label(comp))
        else:
            scale = l1 / eps_each
            integer = comp.integer and float(l1).is_integer()
            planned.append(
                _replace(comp, epsilon=eps_each, scale=scale, noise="laplace", integer=integer)
            )
            mech = (
                Mechanism.discrete_laplace(scale, int(l1), quantity=_label(comp))
                if integer
                else Mechanism.laplace(scale, l1, quantity=_label(comp))
            )
        if comp.kind == "count" and keys is None:
            # Partition selection reuses the count's noise: released only above the threshold.
            if use_gaussian:
                threshold = linf + sigma * float(stats.norm.isf(selection_delta / l0))
            else:
                a = math.exp(-1.0 / scale)
                threshold = linf + math.ceil(scale * math.log(l0 / (selection_delta * (1 + a))))
            mech = Mechanism.epsilon_delta(
                "partition_selection",
                eps_each if not use_gaussian else _gauss_eps(sigma, l2, delta_each),
                selection_delta + (delta_each if use_gaussian else 0.0),
                noise="gaussian" if use_gaussian else "discrete_laplace",
                scale=planned[-1].scale,
                threshold=threshold,
                max_groups=l0,
                max_rows=linf,
            )
        mechanisms.append(mech)
    _check_arithmetic(planned, schema, epsilon)
    if schema.privacy_unit is None:
        notes.append("each row is one person (no privacy-unit column)")
    else:
        notes.append(
            f"each person ('{schema.privacy_unit}') contributes at most {l0} group(s) and "
            f"{linf} row(s) per group; extra rows are dropped at random"
        )
    plan = QueryPlan(
        spec=spec,
        schema=schema,
        contribution=contribution,
        epsilon=epsilon,
        delta=delta,
        confidence=confidence,
        mechanism="gaussian" if use_gaussian else "laplace",
        components=tuple(planned),
        keys=keys,
        threshold=threshold,
        selection_delta=selection_delta,
        mechanisms=tuple(mechanisms),
        notes=tuple(notes),
        where_expr=compile_where(spec.where) if spec.where else None,
    )
    _ISSUED[id(plan)] = plan
    return plan


# The plans plan_query made, by identity (weakly: a plan dropped is forgotten). PrivateFrame.run
# charges a plan's own mechanisms, so it runs only a plan made here and left unchanged: a copy
# with other components or mechanisms (dataclasses.replace) could charge less than it spends.
_ISSUED: weakref.WeakValueDictionary[int, QueryPlan] = weakref.WeakValueDictionary()


def is_issued(plan: QueryPlan) -> bool:
    """Whether ``plan`` is one :func:`plan_query` returned (the object itself, not a copy)."""
    return _ISSUED.get(id(plan)) is plan


def _check_bounds_width(schema: PrivacySchema, spec: QuerySpec) -> None:
    """Refuse bounds too narrow for float64 (a subnormal width rounds the sensitivity to 0)."""
    for col in sorted({a.column for a in spec.aggregates if a.column and a.kind != "count"}):
        lo, hi = _bounds(schema, col, "an aggregate")
        width = hi - lo
        narrowest = (
            sys.float_info.min if all(a.kind != "variance" for a in spec.aggregates) else 1e-150
        )
        if not width >= narrowest:
            raise SchemaError(
                f"the bounds of '{col}' ({lo:g}:{hi:g}) are too narrow for float64 arithmetic",
                expected=f"a width hi - lo of at least {narrowest:g} (the sensitivity would round to 0)",
                got=f"{width:g}",
                fix=f"declare wider bounds, or rescale '{col}' (for example to other units)",
            )


_WORDS = {
    "count": "the count",
    "sum": "the sum of",
    "csum": "the centred sum of",
    "csumsq": "the sum of squares of",
    "quantile": "the quantile of",
}


def _words(comp: _Component) -> str:
    return _WORDS[comp.kind] + (f" '{comp.column}'" if comp.column else "")


def _check_arithmetic(planned: list[_Component], schema: PrivacySchema, epsilon: float) -> None:
    """Refuse, before any charge, a plan whose sums or noise could leave float64's range.

    A sum over up to ``MAX_ROWS`` rows at the bounds, plus ``_TAIL`` noise scales,
    must fit (its square too, for the centred sum a variance squares): then no data,
    however extreme (NaN, infinities, values at the bounds), can make the computation
    after the charge fail, and neighbouring datasets cannot be told apart by an error.
    """
    squared = {c.column for c in planned if c.kind == "csumsq"}
    for comp in planned:
        if not (math.isfinite(comp.scale) and comp.scale >= sys.float_info.min):
            raise InvalidInputError(
                f"epsilon {epsilon:g} gives {_words(comp)} a noise scale of {comp.scale:g}, "
                "outside float64's range",
                expected="an epsilon between about 1e-12 and 1e6",
                got=f"epsilon {epsilon:g}",
                fix="ask for an epsilon such as 0.1 to 10",
            )
        if comp.kind == "quantile":
            continue
        room = _INT_ROOM if comp.integer else _FLOAT_ROOM
        if comp.kind == "csum" and comp.column in squared:
            room = math.sqrt(_FLOAT_ROOM)
        data_reach = MAX_ROWS * comp.per_row
        if not data_reach <= room / 2:
            lo, hi = _bounds(schema, str(comp.column), "an aggregate")
            widest = room / 2 / MAX_ROWS
            if comp.kind == "csumsq":
                widest = math.sqrt(widest)
            raise SchemaError(
                f"the bounds of '{comp.column}' ({lo:g}:{hi:g}) are too wide for float64: "
                f"{_words(comp)} over up to 2^40 rows could overflow",
                expected=f"values of at most about {widest:.3g} from the middle of the bounds"
                if comp.kind != "sum"
                else f"bounds within about +-{widest:.3g}",
                got=f"{lo:g}:{hi:g}",
                fix=f"declare narrower bounds for '{comp.column}', or rescale it (other units)",
            )
        if not data_reach + _TAIL * comp.scale <= room:
            smallest = epsilon * _TAIL * comp.scale / (room - data_reach)
            raise InvalidInputError(
                f"epsilon {epsilon:g} is too small: {_words(comp)} would get noise of scale "
                f"{comp.scale:g}, beyond what float64 (and the answer) can carry",
                expected=f"epsilon >= {smallest:.3g} for this query",
                got=f"epsilon {epsilon:g}",
                fix=f"ask for epsilon {smallest:.2g} or more (such tiny epsilons give no usable answer)",
            )


def _gauss_eps(sigma: float, l2: float, delta: float) -> float:
    from veil.ledger import gaussian_epsilon  # noqa: PLC0415

    return gaussian_epsilon(sigma / l2, delta)


def _replace(comp: _Component, **changes: Any) -> _Component:
    from dataclasses import replace  # noqa: PLC0415

    return replace(comp, **changes)


def _label(comp: _Component) -> str:
    return comp.kind if comp.column is None else f"{comp.kind}({comp.column})"


def _product(lists: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [()]
    for values in lists:
        out = [(*prefix, v) for prefix in out for v in values]
    return out


# ---------------------------------------------------------------------------- execution


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


def as_polars(frame: pl.DataFrame | pl.LazyFrame | pd.DataFrame) -> pl.LazyFrame:
    if isinstance(frame, pl.LazyFrame):
        return frame
    if isinstance(frame, pl.DataFrame):
        return frame.lazy()
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame).lazy()
    raise InvalidInputError(
        "unsupported frame type",
        expected="a Polars DataFrame/LazyFrame or a pandas DataFrame",
        got=type(frame).__name__,
    )


def _restrict_to_keys(plan: QueryPlan, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Compare group columns with the declared keys; with a privacy unit, drop other rows."""
    spec, schema = plan.spec, plan.schema
    assert plan.keys is not None  # noqa: S101 - called only with known keys
    if all(isinstance(v, str) for key in plan.keys for v in key):
        # Declared categories are strings; a loader may have parsed "1", "2" as 1.0, 2.0.
        dtypes = lf.collect_schema()
        lf = lf.with_columns(_as_category_strings(c, dtypes[c]) for c in spec.group_by)
    # Rows outside the declared keys are never released: their groups are dropped when the
    # aggregates are aligned with the keys. With a privacy unit they are dropped here, so
    # that they do not use up a person's quota of groups.
    if schema.privacy_unit is not None:
        dtypes = lf.collect_schema()
        key_frame = pl.DataFrame(
            {c: [k[i] for k in plan.keys] for i, c in enumerate(spec.group_by)},
            schema={c: dtypes[c] for c in spec.group_by},
        ).lazy()
        lf = lf.join(key_frame, on=list(spec.group_by), how="semi", nulls_equal=True)
    return lf


def _clamped_columns(plan: QueryPlan, dtypes: pl.Schema) -> dict[str, pl.Expr]:
    """The clamped (and centred) columns the aggregation sums, by name."""
    schema = plan.schema
    added: dict[str, pl.Expr] = {}
    for comp in plan.components:
        if comp.column is None:
            continue
        lo, hi = _bounds(schema, comp.column, comp.kind)
        mid = (lo + hi) / 2
        dtype = dtypes[comp.column]
        # Non-strict: a value that is not a number becomes missing; no error can depend on data.
        x = pl.col(comp.column)
        if dtype != pl.Float64:
            x = x.cast(pl.Float64, strict=False)
        if comp.kind == "quantile":
            # As for the sums below: missing at `mid`, NaN at the upper bound.
            added[f"__veil_x_{comp.column}"] = pl.min_horizontal(
                pl.max_horizontal(x.fill_null(mid), lo), hi
            )
            continue
        # Clamped and centred with min/max_horizontal, one cheap pass (clip keeps NaN and
        # fill_nan costs a second pass). These map NaN, which Polars orders above every
        # number, to the upper bound, and a missing value to the lower bound; run_plan adds
        # each group's missing count back, so missing values count as `mid` (0 once centred).
        centred = pl.min_horizontal(pl.max_horizontal(x, lo), hi) - mid
        if comp.kind in {"sum", "csum"}:
            # Centred values are summed directly (sum(x) - mid * n would carry the rounding
            # error of a large sum into the centred sum); SUM is then sum(c) + mid * n, whose
            # one rounding is ~1e-16 * |mid| * n, far below its sensitivity max(|lo|, |hi|).
            added[f"__veil_c_{comp.column}"] = centred
        else:
            added[f"__veil_sq_{comp.column}"] = centred * centred
    return added


def _prepare(plan: QueryPlan, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Filter, bound contributions, and add clamped copies of the measured columns.

    Clamped values are materialised as columns (``__veil_x_COL``, and ``__veil_sq_COL``
    for the centred squares) so that the aggregation is plain sums: Polars evaluates a
    compound expression inside ``group_by().agg()`` group by group, 3-4x slower.
    """
    schema, spec = plan.schema, plan.spec
    lf = frame
    if plan.where_expr is not None:
        lf = lf.filter(plan.where_expr)
    if plan.keys is not None and spec.group_by:
        lf = _restrict_to_keys(plan, lf)
    unit = schema.privacy_unit
    if unit is not None:
        # Rows without an identifier belong to nobody we can bound: they are dropped (the
        # catalogue refuses them at registration; a frame passed in directly may have them).
        lf = lf.filter(pl.col(unit).is_not_null())
        salt = secrets.randbits(63)
        l0, linf = plan.contribution.max_groups, plan.contribution.max_rows
        if spec.group_by:
            lf = lf.with_columns(
                pl.struct([unit, *spec.group_by]).hash(salt).alias("__veil_gh"),
            ).filter(pl.col("__veil_gh").rank("dense").over(unit) <= l0)
            by = [unit, *spec.group_by]
        else:
            by = [unit]
        # A random subset of each person's rows per group: the key hashes the person, the
        # group and the row's position among *that person's* rows, never a global row number.
        lf = lf.with_columns(
            pl.struct([*by, pl.int_range(pl.len()).over(by).alias("__veil_i")])
            .hash(salt)
            .alias("__veil_rh")
        ).filter(pl.col("__veil_rh").rank("ordinal").over(by) <= linf)
    added = _clamped_columns(plan, lf.collect_schema())
    return lf.with_columns(**added) if added else lf


def _centred_sum(column: str | None, lo: float, hi: float) -> pl.Expr:
    """sum(clamped x - mid), with each missing value's lo - mid contribution taken back out."""
    return pl.col(f"__cs_{column}") + (hi - lo) / 2 * pl.col(f"__nn_{column}")


def _component_columns(plan: QueryPlan) -> list[pl.Expr]:
    """Each component's exact value per group, from the plain aggregates (on ~100 rows)."""
    out = []
    for i, comp in enumerate(plan.components):
        if comp.kind == "count":
            expr = pl.col("__n").cast(pl.Int64)
        elif comp.kind == "sum":
            lo, hi = _bounds(plan.schema, str(comp.column), comp.kind)
            expr = _centred_sum(comp.column, lo, hi) + (lo + hi) / 2 * pl.col("__n").cast(
                pl.Float64
            )
        elif comp.kind == "csum":
            lo, hi = _bounds(plan.schema, str(comp.column), comp.kind)
            expr = _centred_sum(comp.column, lo, hi)
        elif comp.kind == "csumsq":
            lo, hi = _bounds(plan.schema, str(comp.column), comp.kind)
            # Each missing value was clamped to the lower bound: (lo - mid)^2 = half^2 each.
            half_sq = ((hi - lo) / 2) ** 2
            expr = pl.col(f"__q_{comp.column}") - half_sq * pl.col(f"__nn_{comp.column}")
        else:
            expr = pl.col(f"__l_{comp.column}")
        out.append(expr.alias(f"__c{i}"))
    return out


def _as_category_strings(column: str, dtype: pl.DataType) -> pl.Expr:
    """The column as the strings categories are declared with (``1.0`` becomes ``"1"``)."""
    col = pl.col(column)
    if dtype == pl.String:
        return col
    if dtype.is_float():
        whole = col.is_finite() & (col == col.round(0)) & (col.abs() < 2.0**53)
        as_int = col.cast(pl.Int64, strict=False).cast(pl.String)
        return pl.when(whole).then(as_int).otherwise(col.cast(pl.String)).alias(column)
    return col.cast(pl.String).alias(column)


def run_plan(plan: QueryPlan, frame: pl.DataFrame | pl.LazyFrame | pd.DataFrame) -> QueryResult:  # noqa: C901, PLR0912, PLR0915
    """Compute the noisy answer of a plan that has *already been charged*."""
    spec, schema = plan.spec, plan.schema
    lf = as_polars(frame)
    available = lf.collect_schema().names()
    needed = set(spec.group_by) | {c.column for c in plan.components if c.column}
    if schema.privacy_unit:
        needed.add(schema.privacy_unit)
    missing = sorted(needed - set(available))
    if missing:
        raise SchemaError(
            "the frame lacks columns the query needs",
            expected=str(sorted(needed)),
            got=f"missing {missing}",
        )
    lf = _prepare(plan, lf)
    # Plain sums of materialised columns only (see _prepare).
    aggs: dict[str, pl.Expr] = {"__n": pl.len()}
    for measured in sorted(
        {c.column for c in plan.components if c.column and c.kind != "quantile"}
    ):
        aggs[f"__nn_{measured}"] = pl.col(measured).null_count()
    for comp in plan.components:
        if comp.kind in {"sum", "csum"}:
            aggs[f"__cs_{comp.column}"] = pl.col(f"__veil_c_{comp.column}").sum()
        elif comp.kind == "csumsq":
            aggs[f"__q_{comp.column}"] = pl.col(f"__veil_sq_{comp.column}").sum()
        elif comp.kind == "quantile":
            aggs[f"__l_{comp.column}"] = pl.col(f"__veil_x_{comp.column}").sort().implode()
    agg_exprs = [e.alias(k) for k, e in aggs.items()]
    if spec.group_by:
        exact = lf.group_by(list(spec.group_by)).agg(agg_exprs).collect(engine="streaming")
    else:
        exact = lf.select(agg_exprs).collect(engine="streaming")
    exact = exact.with_columns(_component_columns(plan))
    # Align with the keys: known keys in declared order (empty groups are zeros).
    if plan.keys is not None:
        if spec.group_by:
            key_frame = pl.DataFrame(
                {c: [k[j] for k in plan.keys] for j, c in enumerate(spec.group_by)},
                schema={c: exact.schema[c] for c in spec.group_by},
            )
            exact = key_frame.join(exact, on=list(spec.group_by), how="left", nulls_equal=True)
        key_rows = [tuple(k) for k in plan.keys]
    else:
        # Sorted, so that the order of released groups says nothing about the data.
        exact = exact.sort(list(spec.group_by), nulls_last=True)
        key_rows = list(exact.select(list(spec.group_by)).iter_rows())
    n = len(key_rows)
    noisy: dict[int, np.ndarray] = {}
    for i, comp in enumerate(plan.components):
        column = exact.get_column(f"__c{i}") if exact.height else pl.Series([], dtype=pl.Float64)
        if comp.kind == "quantile":
            noisy[i] = _quantiles(plan, comp, column, n)
            continue
        values = column.fill_null(0).to_numpy()
        if not comp.integer:
            # Never reached with the bounds plan_query accepts; kept so that no value can make
            # the noise step raise after the charge: non-finite sums become the data's reach.
            reach = MAX_ROWS * comp.per_row
            values = np.clip(
                np.nan_to_num(values.astype(float), nan=0.0, posinf=reach, neginf=-reach),
                -reach,
                reach,
            )
        if comp.noise == "gaussian":
            noisy[i] = gaussian_noise(values.astype(float), comp.scale)
        else:
            noisy[i] = laplace_noise(
                values.astype(np.int64 if comp.integer else float), comp.scale, integer=comp.integer
            )
    # Partition selection.
    keep = np.ones(n, dtype=bool)
    if plan.keys is None:
        assert plan.threshold is not None  # noqa: S101
        count_index = next(i for i, c in enumerate(plan.components) if c.kind == "count")
        keep = noisy[count_index] >= plan.threshold
    rows: list[dict[str, Any]] = []
    level = plan.confidence
    k_ci = {a.name: _ci_parts(a) for a in spec.aggregates}
    for r in range(n):
        if not keep[r]:
            continue
        row: dict[str, Any] = dict(zip(spec.group_by, key_rows[r], strict=True))
        for agg in spec.aggregates:
            row[agg.name] = _cell(plan, agg, noisy=noisy, r=r, level=level, parts=k_ci[agg.name])
        rows.append(row)
    notes = list(plan.notes)
    if plan.keys is None and spec.group_by:
        notes.append(
            f"groups were selected by a noisy count >= {plan.threshold:g}; groups below it are "
            f"not shown (probability <= {plan.selection_delta:g} that a group created by one person appears)"
        )
    return QueryResult(
        columns=(*spec.group_by, *(a.name for a in spec.aggregates)),
        rows=rows,
        epsilon=plan.epsilon,
        delta=plan.delta,
        confidence=level,
        mechanism=plan.mechanism,
        notes=tuple(notes),
    )


def _ci_parts(agg: Aggregate) -> int:
    # A quantile's level interval uses its exponential noise and a lower bound on the count.
    return {"count": 1, "sum": 1, "mean": 2, "variance": 3, "quantile": 2}[agg.kind]


def _quantiles(plan: QueryPlan, comp: _Component, column: pl.Series, n: int) -> np.ndarray:
    """One exponential-mechanism quantile per group, over the fixed grid of the bounds.

    Each value is first rounded to its nearest grid point (a per-row map: the
    sensitivity is unchanged), so a run of equal values sits *on* a candidate.
    A candidate ``c`` scores ``-max(0, lt - q n, gt - (1 - q) n)`` where ``lt``
    and ``gt`` count the rounded values below and above it: its distance, in
    rows, from being a ``q``-quantile (Smith 2011's rank utility, extended to
    ties; 0 for every exact ``q``-quantile). Changing one row moves every
    score by at most ``max(q, 1 - q)``. Noise comes from OpenDP's report-noisy-max.
    """
    lo, hi = _bounds(plan.schema, str(comp.column), "a quantile")
    grid, _ = quantile_grid(lo, hi)
    # A value x is rounded to grid[k] when mids[k - 1] <= x < mids[k].
    mids = grid[:-1] / 2 + grid[1:] / 2
    q = float(comp.q or 0.5)
    out = np.empty(n)
    lists = column.to_list() if column.len() else [None] * n
    for r in range(n):
        values = np.asarray(lists[r] if lists[r] is not None else [], dtype=float)
        size = values.size
        below_mid = np.searchsorted(values, mids, side="left")
        lt = np.concatenate(([0], below_mid))
        gt = size - np.concatenate((below_mid, [size]))
        dist = np.maximum(0.0, np.maximum(lt - q * size, gt - (1 - q) * size))
        out[r] = grid[noisy_max(-dist, comp.scale, monotonic=False)]
    return out


@functools.lru_cache(maxsize=64)
def _quantile_grid(lo: float, hi: float) -> tuple[tuple[float, ...], float]:
    span = hi - lo
    if not math.isfinite(span):  # bounds near the float limits: an even grid, halved to fit
        return tuple(np.linspace(lo / 2, hi / 2, QUANTILE_CANDIDATES) * 2), span
    raw = span / (QUANTILE_CANDIDATES - 1)
    exponent = math.floor(math.log10(raw))
    mult = next(m for m in (1, 2, 5, 10) if m * 10.0**exponent >= raw)
    step = mult * 10.0**exponent
    first, last = math.ceil(lo / step) - 1, math.floor(hi / step) + 1

    def at(k: int) -> float:  # k * step, correctly rounded (0.1 * 3 would give 0.30000000000000004)
        return float(k * mult * 10**exponent) if exponent >= 0 else k * mult / 10 ** (-exponent)

    points = {lo, hi} | {v for k in range(first, last + 1) if lo <= (v := at(k)) <= hi}
    return tuple(sorted(points)), step


def quantile_grid(lo: float, hi: float) -> tuple[np.ndarray, float]:
    """The candidates of a quantile over ``[lo, hi]`` and their resolution (a fixed, public grid).

    The multiples of a round step (1, 2 or 5 times a power of ten) that fit at
    most ``QUANTILE_CANDIDATES - 1`` steps into the bounds, plus the bounds
    themselves: ``[17, 90]`` gives 17.0, 17.1, ..., 90.0, so integer data
    (ages, counts) lies exactly on candidates.
    """
    points, step = _quantile_grid(float(lo), float(hi))
    return np.asarray(points, dtype=float), step


def _half_width(comp: _Component, level: float) -> float:
    if comp.noise == "gaussian":
        return float(stats.norm.isf((1 - level) / 2)) * comp.scale
    return laplace_half_width(comp.scale, level, integer=comp.integer)


def _cell(
    plan: QueryPlan,
    agg: Aggregate,
    *,
    noisy: Mapping[int, np.ndarray],
    r: int,
    level: float,
    parts: int,
) -> dict[str, Any]:
    comps = plan.components
    idx = {(c.kind, c.column, c.q): i for i, c in enumerate(comps)}
    # Bonferroni: each of the `parts` noisy inputs at level 1 - (1 - level) / parts.
    part_level = 1 - (1 - level) / parts
    ci_count = idx.get(("count", None, None), -1)
    count_val = float(noisy[ci_count][r]) if ci_count >= 0 else math.nan
    count_hw = _half_width(comps[ci_count], part_level) if ci_count >= 0 else math.nan
    if agg.kind == "count":
        count_value = max(0, round(count_val))
        return {
            "value": count_value,
            "noise_scale": comps[ci_count].scale,
            "mechanism": comps[ci_count].noise,
            "ci": [max(0.0, count_val - count_hw), count_val + count_hw],
        }
    col = str(agg.column)
    lo, hi = _bounds(plan.schema, col, agg.kind)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    if agg.kind == "sum":
        i = idx[("sum", col, None)]
        s, hw = float(noisy[i][r]), _half_width(comps[i], part_level)
        return {
            "value": s,
            "noise_scale": comps[i].scale,
            "mechanism": comps[i].noise,
            "ci": [s - hw, s + hw],
        }
    if agg.kind == "quantile":
        i = idx[("quantile", col, agg.q)]
        value = float(noisy[i][r])
        # With probability >= 1 - (1 - level) / 2 the chosen candidate is within
        # `rank_error` rows of being a q-quantile of the (grid-rounded) data: report-noisy-max
        # picks a candidate scoring t below the best (0) with probability <= m exp(-t / scale).
        # With probability >= 1 - (1 - level) / 2 the true count is >= n_lo. Together: the
        # released value is a p-quantile, for some p in [q - w, q + w], w = rank_error / n_lo.
        grid, resolution = quantile_grid(lo, hi)
        rank_error = comps[i].scale * math.log(grid.size / (1 - part_level))
        n_lo = count_val - count_hw
        w = rank_error / n_lo if n_lo >= 1 else 1.0
        q = float(agg.q or 0.5)
        return {
            "value": value,
            "noise_scale": comps[i].scale,
            "mechanism": "exponential",
            "ci": None,
            "rank_error": rank_error,
            "resolution": resolution,
            "ci_quantile_level": [max(0.0, q - w), min(1.0, q + w)],
        }
    i = idx[("csum", col, None)]
    s, s_hw = float(noisy[i][r]), _half_width(comps[i], part_level)
    n_lo, n_hi = max(1.0, count_val - count_hw), max(1.0, count_val + count_hw)
    n_val = max(1.0, count_val)
    if agg.kind == "mean":
        value = float(np.clip(mid + s / n_val, lo, hi))
        ends = [mid + a / b for a in (s - s_hw, s + s_hw) for b in (n_lo, n_hi)]
        return {
            "value": value,
            # The released mean is mid + (noisy centred sum) / (noisy count): its noise scale
            # is the sum's divided by the count (to first order; the interval has the rest).
            "noise_scale": comps[i].scale / n_val,
            "noise_scale_centred_sum": comps[i].scale,
            "mechanism": comps[i].noise,
            "noise_on": f"sum of ({col} - {mid:g}) and the count",
            "ci": [float(np.clip(min(ends), lo, hi)), float(np.clip(max(ends), lo, hi))],
        }
    j = idx[("csumsq", col, None)]
    ss, ss_hw = float(noisy[j][r]), _half_width(comps[j], part_level)
    m = s / n_val
    value = float(np.clip(ss / n_val - m * m, 0.0, half * half))
    # f(a, c, b) = a/b - (c/b)^2 over the box of the three intervals: linear in a; in c
    # extreme at the ends or at 0; in b at the ends or at the stationary point b = 2 c^2 / a.
    s_ends = [s - s_hw, s + s_hw] + ([0.0] if s - s_hw < 0 < s + s_hw else [])
    vals = []
    for a in (ss - ss_hw, ss + ss_hw):
        for c in s_ends:
            inner = [2 * c * c / a] if a > 0 and n_lo < 2 * c * c / a < n_hi else []
            vals += [a / b - (c / b) * (c / b) for b in (n_lo, n_hi, *inner)]
    return {
        "value": value,
        # First order: d/d(ss) = 1/n, d/d(s) = -2 (s/n) / n, on the noisy count n.
        "noise_scale": (comps[j].scale + 2 * abs(m) * comps[i].scale) / n_val,
        "noise_scale_centred_sum": comps[i].scale,
        "noise_scale_centred_sum_of_squares": comps[j].scale,
        "mechanism": comps[j].noise,
        "noise_on": f"sums of ({col} - {mid:g}) and its square, and the count",
        "ci": [
            float(np.clip(min(vals), 0.0, half * half)),
            float(np.clip(max(vals), 0.0, half * half)),
        ],
    }

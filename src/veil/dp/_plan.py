"""Planning differentially private queries on Polars and pandas frames.

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
   Polars, then OpenDP noise (:mod:`veil.dp._execute`).

This module is step 1; what a query asks for and what it answers are in
:mod:`veil.dp._spec`.

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
import sys
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats

from veil.data import PrivacySchema
from veil.dp._mechanisms import gaussian_sigma
from veil.dp._spec import Contribution, NoiseMechanism, QuerySpec
from veil.dp._where import compile_where
from veil.errors import InvalidInputError, SchemaError
from veil.ledger import Mechanism, PrivacyEvent, gaussian_epsilon
from veil.ledger.params import check_delta, check_probability, check_release_epsilon

__all__ = [
    "MAX_ROWS",
    "QUANTILE_CANDIDATES",
    "Component",
    "QueryPlan",
    "declared_bounds",
    "is_issued",
    "plan_query",
    "quantile_grid",
]


QUANTILE_CANDIDATES = 1001
# The float64 arithmetic of a query is sized for frames of up to MAX_ROWS rows (Polars holds
# at most 2^32 by default): plan_query refuses bounds and epsilons for which a sum over that
# many rows, plus its noise, could leave float64's range, so no outcome depends on the data.
MAX_ROWS = 2**40
_TAIL = 745.0  # P(|Laplace| > 745 scale) = e^-745 ~ 5e-324; the Gaussian's tail is thinner
_FLOAT_ROOM = sys.float_info.max / 16  # headroom for the interval arithmetic in _cell
_INT_ROOM = float(2**53)  # noisy counts stay exact integers in float64


@dataclass(frozen=True)
class Component:
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
    components: tuple[Component, ...]
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


def declared_bounds(schema: PrivacySchema, column: str, purpose: str) -> tuple[float, float]:
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
    comps: dict[tuple[str, str | None, float | None], Component] = {}

    def need(kind: str, column: str | None, q: float | None, per_row: float, integer: bool) -> None:
        comps.setdefault((kind, column, q), Component(kind, column, q, per_row, integer))  # type: ignore[arg-type]

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
        lo, hi = declared_bounds(schema, agg.column, agg.kind)
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
    planned: list[Component] = []
    threshold: float | None = None
    for comp in components:
        if comp.kind == "quantile":
            # Per group a score of sensitivity max(q, 1-q) * Linf; a person's groups compose.
            assert comp.q is not None  # noqa: S101
            sens = max(comp.q, 1 - comp.q) * linf
            scale = 2 * sens * n_groups_touched / eps_each
            grid, resolution = quantile_grid(
                *declared_bounds(schema, str(comp.column), "a quantile")
            )
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
                    bounds=list(declared_bounds(schema, str(comp.column), "a quantile")),
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
        lo, hi = declared_bounds(schema, col, "an aggregate")
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


def _words(comp: Component) -> str:
    return _WORDS[comp.kind] + (f" '{comp.column}'" if comp.column else "")


def _check_arithmetic(planned: list[Component], schema: PrivacySchema, epsilon: float) -> None:
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
            lo, hi = declared_bounds(schema, str(comp.column), "an aggregate")
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
    return gaussian_epsilon(sigma / l2, delta)


def _replace(comp: Component, **changes: Any) -> Component:
    return replace(comp, **changes)


def _label(comp: Component) -> str:
    return comp.kind if comp.column is None else f"{comp.kind}({comp.column})"


def _product(lists: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [()]
    for values in lists:
        out = [(*prefix, v) for prefix in out for v in values]
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

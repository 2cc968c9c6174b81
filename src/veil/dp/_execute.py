"""Running a charged query plan: bound contributions, clamp, aggregate with Polars, add noise.

:func:`run_plan` releases noisy values and charges nothing, so only
:meth:`veil.dp.PrivateFrame.run` (which charges first) calls it. Every cell
carries its noise scale and a confidence interval for the noise only.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from scipy import stats

from veil.dp._mechanisms import laplace_half_width
from veil.dp._noise import gaussian_noise, laplace_noise, noisy_max
from veil.dp._plan import MAX_ROWS, Component, QueryPlan, declared_bounds, quantile_grid
from veil.dp._spec import Aggregate, QueryResult
from veil.errors import InvalidInputError, SchemaError

__all__ = ["as_polars", "run_plan"]


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
        lo, hi = declared_bounds(schema, comp.column, comp.kind)
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
            lo, hi = declared_bounds(plan.schema, str(comp.column), comp.kind)
            expr = _centred_sum(comp.column, lo, hi) + (lo + hi) / 2 * pl.col("__n").cast(
                pl.Float64
            )
        elif comp.kind == "csum":
            lo, hi = declared_bounds(plan.schema, str(comp.column), comp.kind)
            expr = _centred_sum(comp.column, lo, hi)
        elif comp.kind == "csumsq":
            lo, hi = declared_bounds(plan.schema, str(comp.column), comp.kind)
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


def _quantiles(plan: QueryPlan, comp: Component, column: pl.Series, n: int) -> np.ndarray:
    """One exponential-mechanism quantile per group, over the fixed grid of the bounds.

    Each value is first rounded to its nearest grid point (a per-row map: the
    sensitivity is unchanged), so a run of equal values sits *on* a candidate.
    A candidate ``c`` scores ``-max(0, lt - q n, gt - (1 - q) n)`` where ``lt``
    and ``gt`` count the rounded values below and above it: its distance, in
    rows, from being a ``q``-quantile (Smith 2011's rank utility, extended to
    ties; 0 for every exact ``q``-quantile). Changing one row moves every
    score by at most ``max(q, 1 - q)``. Noise comes from OpenDP's report-noisy-max.
    """
    lo, hi = declared_bounds(plan.schema, str(comp.column), "a quantile")
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


def _half_width(comp: Component, level: float) -> float:
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
    lo, hi = declared_bounds(plan.schema, col, agg.kind)
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

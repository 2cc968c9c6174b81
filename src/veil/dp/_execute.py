"""Running a charged query plan: the Polars engine, and the release every engine shares.

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
import polars_hash  # noqa: F401 - registers the stable ``nchash`` namespace (XXH64)
from scipy import stats

from veil.dp._engine import (
    HASH_SEED,
    KEY_SEPARATOR,
    NULL_TOKEN,
    Exact,
    check_needed_columns,
    fixed_points,
    measured_columns,
    quantile_columns,
    quantile_mids,
)
from veil.dp._mechanisms import laplace_half_width
from veil.dp._noise import gaussian_noise, laplace_noise, noisy_max
from veil.dp._plan import MAX_ROWS, Component, QueryPlan, declared_bounds, quantile_grid
from veil.dp._spark import is_spark_frame, spark_aggregate
from veil.dp._spec import Aggregate, QueryResult
from veil.errors import InvalidInputError

__all__ = ["OPENDP", "NoiseSource", "aggregate", "as_polars", "release", "run_plan"]


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
    """The integer (fixed-point) columns the aggregation sums, and the quantiles' grid index.

    See :mod:`veil.dp._engine`: every engine computes exactly these columns
    with the same float operations, so their sums agree to the last bit.
    """
    added: dict[str, pl.Expr] = {}
    for column, fp in fixed_points(plan).items():
        x = pl.col(column)
        if dtypes[column] != pl.Float64:
            # Non-strict: a value that is not a number becomes missing; no error can depend on data.
            x = x.cast(pl.Float64, strict=False)
        # min/max_horizontal map NaN (ordered above every number) to the upper bound and a
        # missing value to the lower bound; the driver takes the missing values back out.
        centred = pl.min_horizontal(pl.max_horizontal(x, fp.lo), fp.hi) - fp.mid
        # Summed as 128-bit integers: exact for any number of rows (Spark sums two limbs).
        added[f"__veil_t_{column}"] = (centred * fp.scale).cast(pl.Int64).cast(pl.Int128)
        if any(c.kind == "csumsq" and c.column == column for c in plan.components):
            squares = ((centred * centred) * fp.scale_sq).cast(pl.Int64)
            added[f"__veil_s_{column}"] = squares.cast(pl.Int128)
    for column in quantile_columns(plan):
        lo, hi = declared_bounds(plan.schema, column, "a quantile")
        x = pl.col(column)
        if dtypes[column] != pl.Float64:
            x = x.cast(pl.Float64, strict=False)
        # Missing at the midpoint of the bounds, NaN at the upper bound, then the candidate
        # each value rounds to: the number of grid midpoints <= it.
        clamped = pl.min_horizontal(pl.max_horizontal(x.fill_null((lo + hi) / 2), lo), hi)
        mids = pl.Series(quantile_mids(plan, column), dtype=pl.Float64)
        added[f"__veil_k_{column}"] = (
            pl.lit(mids).search_sorted(clamped, side="right").cast(pl.Int64)
        )
    return added


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


def _portable_hash(fields: list[pl.Expr]) -> pl.Expr:
    """XXH64 (seed 42) of the fields joined as text: Spark's ``xxhash64`` of the same string."""
    text = pl.concat_str(
        [f.cast(pl.String).fill_null(NULL_TOKEN) for f in fields], separator=KEY_SEPARATOR
    )
    hashed: pl.Expr = text.nchash.xxhash64(seed=HASH_SEED)  # type: ignore[attr-defined]
    return hashed.reinterpret(signed=True)


def _run_starts(columns: list[str]) -> pl.Expr:
    """True on the first row of each run of equal ``columns`` (missing equals missing)."""
    changed = pl.lit(value=False)
    for c in columns:
        changed = changed | pl.col(c).ne_missing(pl.col(c).shift(1))
    return changed | (pl.int_range(pl.len()) == 0)


def _rank_in_runs(runs: list[str], new_value: pl.Expr | None = None) -> pl.Expr:
    """On rows sorted by ``runs`` (then by a key): the key's rank within each run, from 1.

    Ordinal (the row's place in its run) when ``new_value`` is None; dense (counting
    changes of the key) otherwise. O(n) cumulative sums instead of a window per run.
    """
    starts = _run_starts(runs)
    if new_value is None:
        count = pl.int_range(pl.len(), dtype=pl.Int64)
    else:
        count = (starts | new_value).cast(pl.Int64).cum_sum()
    base = pl.when(starts).then(count).forward_fill()
    return count - base + 1


def _bound(plan: QueryPlan, lf: pl.LazyFrame, unit: str, salt: int) -> pl.LazyFrame:
    """Each person's random subset: at most max_groups groups, max_rows rows per group.

    Which ones is decided by XXH64 keys (see ``veil.dp._engine``): a person keeps the
    groups whose key ``(salt, person, group)`` ranks among their ``max_groups`` smallest
    (dense rank), and in each group the rows whose key ``(salt, person, group,
    position)`` ranks among the ``max_rows`` smallest, where ``position`` is the row's
    place among that person's rows of that group in frame order, never a global row
    number. Computed with stable sorts and running sums (a window per person is ~10x
    slower in Polars); the Spark engine computes the same ranks with window functions.
    """
    spec = plan.spec
    # Rows without an identifier belong to nobody we can bound: they are dropped (the
    # catalogue refuses them at registration; a frame passed in directly may have them).
    lf = lf.filter(pl.col(unit).is_not_null())
    l0, linf = plan.contribution.max_groups, plan.contribution.max_rows
    keyed = [pl.lit(str(salt)), pl.col(unit)]
    groups = [pl.col(g) for g in spec.group_by]
    lf = lf.with_row_index("__veil_ord")
    if spec.group_by:
        gh = pl.col("__veil_gh")
        lf = (
            lf.with_columns(_portable_hash([*keyed, *groups]).alias("__veil_gh"))
            .sort([unit, "__veil_gh", "__veil_ord"], maintain_order=True)
            .with_columns(_rank_in_runs([unit], gh.ne(gh.shift(1))).alias("__veil_gr"))
            .filter(pl.col("__veil_gr") <= l0)
        )
        by = [unit, *spec.group_by]
    else:
        by = [unit]
    # The position of each row among its person's rows of its group, in frame order.
    lf = lf.sort([*by, "__veil_ord"], nulls_last=True, maintain_order=True).with_columns(
        (_rank_in_runs(by) - 1).alias("__veil_i")
    )
    rh = _portable_hash([*keyed, *groups, pl.col("__veil_i")]).alias("__veil_rh")
    return (
        lf.with_columns(rh)
        .sort([*by, "__veil_rh", "__veil_i"], nulls_last=True, maintain_order=True)
        .with_columns(_rank_in_runs(by).alias("__veil_rr"))
        .filter(pl.col("__veil_rr") <= linf)
    )


def _prepare(plan: QueryPlan, frame: pl.LazyFrame, salt: int) -> pl.LazyFrame:
    """Filter, bound contributions, and add the columns the aggregation sums.

    The summed values are materialised as columns (``__veil_t_COL`` and the
    like) so that the aggregation is plain sums: Polars evaluates a compound
    expression inside ``group_by().agg()`` group by group, 3-4x slower.
    """
    schema, spec = plan.schema, plan.spec
    lf = frame
    if plan.where_expr is not None:
        lf = lf.filter(plan.where_expr)
    if plan.keys is not None and spec.group_by:
        lf = _restrict_to_keys(plan, lf)
    unit = schema.privacy_unit
    if unit is not None:
        lf = _bound(plan, lf, unit, salt)
    added = _clamped_columns(plan, lf.collect_schema())
    return lf.with_columns(**added) if added else lf


def _polars_aggregate(plan: QueryPlan, frame: Any, salt: int) -> Exact:
    """The Polars engine: the aggregates of :class:`~veil.dp._engine.Exact`, streaming."""
    spec = plan.spec
    lf = as_polars(frame)
    available = lf.collect_schema().names()
    check_needed_columns(plan, available)
    lf = _prepare(plan, lf, salt)
    # Plain sums of materialised columns only (see _prepare).
    aggs: dict[str, pl.Expr] = {"__n": pl.len().cast(pl.Int64)}
    for column in measured_columns(plan):
        aggs[f"__nn_{column}"] = pl.col(column).null_count().cast(pl.Int64)
        for part in ("t", "s"):
            if part == "s" and not any(
                c.kind == "csumsq" and c.column == column for c in plan.components
            ):
                continue
            aggs[f"__{part}_{column}"] = pl.col(f"__veil_{part}_{column}").sum()
    agg_exprs = [e.alias(k) for k, e in aggs.items()]
    by = list(spec.group_by)
    queries = [lf.group_by(by).agg(agg_exprs) if by else lf.select(agg_exprs)]
    hist_columns = quantile_columns(plan)
    for column in hist_columns:
        k = f"__veil_k_{column}"
        queries.append(
            lf.group_by([*by, k]).agg(pl.len().cast(pl.Int64).alias("__hn")).rename({k: "__k"})
        )
    frames = (
        [queries[0].collect(engine="streaming")]
        if len(queries) == 1
        else pl.collect_all(queries, engine="streaming")
    )
    return Exact(
        groups=frames[0],
        histograms=dict(zip(hist_columns, frames[1:], strict=True)),
        engine="polars",
    )


def _units(groups: pl.DataFrame, column: str) -> list[int]:
    """A 128-bit integer sum column as Python integers (a group without rows sums to 0)."""
    return [int(v or 0) for v in groups.get_column(column).to_list()]


def _to_float(units: int, shift: int) -> float:
    """``units * 2**-shift``, correctly rounded (Python's int / int true division)."""
    return units / (1 << shift) if shift >= 0 else float(units * (1 << -shift))


def _component_values(plan: QueryPlan, exact: Exact) -> pl.DataFrame:
    """The group columns and each component's exact value per group (``__c{i}``)."""
    groups = exact.groups
    by = list(plan.spec.group_by)
    n = groups.get_column("__n").fill_null(0).cast(pl.Int64).to_list() if groups.height else []
    fps = fixed_points(plan)
    columns: dict[str, pl.Series] = {}
    for i, comp in enumerate(plan.components):
        name = f"__c{i}"
        if comp.kind == "count":
            columns[name] = pl.Series(name, n, dtype=pl.Int64)
            continue
        if comp.kind == "quantile":
            continue
        fp = fps[str(comp.column)]
        nn = groups.get_column(f"__nn_{fp.column}").fill_null(0).to_list()
        null_t, null_sq = fp.null_units()
        if comp.kind == "csumsq":
            units = _units(groups, f"__s_{fp.column}")
            values = [
                _to_float(u - m * null_sq, fp.shift_sq) for u, m in zip(units, nn, strict=True)
            ]
        else:
            units = _units(groups, f"__t_{fp.column}")
            values = [_to_float(u - m * null_t, fp.shift) for u, m in zip(units, nn, strict=True)]
            if comp.kind == "sum":
                # A missing value counts as the midpoint: SUM = sum(c) + mid * n.
                values = [v + fp.mid * count for v, count in zip(values, n, strict=True)]
        columns[name] = pl.Series(name, values, dtype=pl.Float64)
    return groups.select(by).with_columns(**columns) if by else pl.DataFrame(columns)


def _histograms(
    plan: QueryPlan, exact: Exact, key_rows: list[tuple[Any, ...]]
) -> dict[str, np.ndarray]:
    """Per quantile column, a (groups x candidates) array of counts in ``key_rows`` order."""
    out: dict[str, np.ndarray] = {}
    by = list(plan.spec.group_by)
    index = {k: r for r, k in enumerate(key_rows)}
    for column, hist in exact.histograms.items():
        size = len(quantile_mids(plan, column)) + 1
        counts = np.zeros((len(key_rows), size), dtype=np.int64)
        keys = hist.select(by).iter_rows() if by else ((),) * hist.height
        for key, k, c in zip(
            keys, hist.get_column("__k").to_list(), hist.get_column("__hn").to_list(), strict=True
        ):
            r = index.get(tuple(key))
            if r is not None:  # a group outside the declared keys is never released
                counts[r, int(k)] += int(c)
        out[column] = counts
    return out


def aggregate(plan: QueryPlan, frame: Any, *, salt: int | None = None) -> Exact:
    """The engine's :class:`~veil.dp._engine.Exact` aggregates of ``frame`` (nothing released).

    ``salt`` fixes which rows contribution bounding keeps (tests, and the
    benchmark comparing engines); by default it is fresh from ``secrets``.
    """
    salt = secrets.randbits(63) if salt is None else int(salt)
    if is_spark_frame(frame):
        return spark_aggregate(plan, frame, salt)
    return _polars_aggregate(plan, frame, salt)


def run_plan(
    plan: QueryPlan,
    frame: Any,
    *,
    salt: int | None = None,
    noise: NoiseSource | None = None,
) -> QueryResult:
    """Compute the noisy answer of a plan that has *already been charged*.

    The engine (Polars, or Spark for a Spark DataFrame) aggregates; the release
    (noise, partition selection, intervals) runs here on the driver for every
    engine. ``noise`` replaces OpenDP's samplers for tests and the engine
    comparison only; a release always uses the default.
    """
    return release(plan, aggregate(plan, frame, salt=salt), noise=noise)


class NoiseSource:
    """Where the release draws noise: OpenDP's samplers (the only source in a release)."""

    def laplace(self, values: np.ndarray, scale: float, *, integer: bool) -> np.ndarray:
        return laplace_noise(values, scale, integer=integer)

    def gaussian(self, values: np.ndarray, sigma: float) -> np.ndarray:
        return gaussian_noise(values, sigma)

    def noisy_max(self, scores: np.ndarray, scale: float) -> int:
        return noisy_max(scores, scale, monotonic=False)


OPENDP = NoiseSource()


def release(plan: QueryPlan, exact: Exact, *, noise: NoiseSource | None = None) -> QueryResult:  # noqa: C901, PLR0912
    """Noise, partition selection and intervals for an engine's aggregates (on the driver)."""
    spec = plan.spec
    source = noise or OPENDP
    values = _component_values(plan, exact)
    # Align with the keys: known keys in declared order (empty groups are zeros).
    if plan.keys is not None:
        if spec.group_by:
            key_frame = pl.DataFrame(
                {c: [k[j] for k in plan.keys] for j, c in enumerate(spec.group_by)},
                schema={c: values.schema[c] for c in spec.group_by},
            )
            values = key_frame.join(values, on=list(spec.group_by), how="left", nulls_equal=True)
        key_rows = [tuple(k) for k in plan.keys]
    else:
        # Sorted, so that the order of released groups says nothing about the data.
        values = values.sort(list(spec.group_by), nulls_last=True)
        key_rows = list(values.select(list(spec.group_by)).iter_rows())
    n = len(key_rows)
    hists = _histograms(plan, exact, key_rows) if exact.histograms else {}
    noisy: dict[int, np.ndarray] = {}
    for i, comp in enumerate(plan.components):
        if comp.kind == "quantile":
            noisy[i] = _quantiles(plan, comp, hists[str(comp.column)], source)
            continue
        column = values.get_column(f"__c{i}") if values.height else pl.Series([], dtype=pl.Float64)
        exact_values = column.fill_null(0).to_numpy()
        if not comp.integer:
            # Never reached with the bounds plan_query accepts; kept so that no value can make
            # the noise step raise after the charge: non-finite sums become the data's reach.
            reach = MAX_ROWS * comp.per_row
            exact_values = np.clip(
                np.nan_to_num(exact_values.astype(float), nan=0.0, posinf=reach, neginf=-reach),
                -reach,
                reach,
            )
        if comp.noise == "gaussian":
            noisy[i] = source.gaussian(exact_values.astype(float), comp.scale)
        else:
            noisy[i] = source.laplace(
                exact_values.astype(np.int64 if comp.integer else float),
                comp.scale,
                integer=comp.integer,
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


def _quantiles(
    plan: QueryPlan, comp: Component, counts: np.ndarray, source: NoiseSource
) -> np.ndarray:
    """One exponential-mechanism quantile per group, over the fixed grid of the bounds.

    Each value is first rounded to its nearest grid point (a per-row map: the
    sensitivity is unchanged; the engine counts how many values round to each
    candidate), so a run of equal values sits *on* a candidate. A candidate
    ``c`` scores ``-max(0, lt - q n, gt - (1 - q) n)`` where ``lt`` and ``gt``
    count the rounded values below and above it: its distance, in rows, from
    being a ``q``-quantile (Smith 2011's rank utility, extended to ties; 0 for
    every exact ``q``-quantile). Changing one row moves every score by at most
    ``max(q, 1 - q)``. Noise comes from OpenDP's report-noisy-max.
    """
    lo, hi = declared_bounds(plan.schema, str(comp.column), "a quantile")
    grid, _ = quantile_grid(lo, hi)
    q = float(comp.q or 0.5)
    out = np.empty(counts.shape[0])
    for r in range(counts.shape[0]):
        row = counts[r]
        size = int(row.sum())
        below = np.concatenate(([0], np.cumsum(row)[:-1]))  # values rounded below candidate k
        lt = below
        gt = size - below - row
        dist = np.maximum(0.0, np.maximum(lt - q * size, gt - (1 - q) * size))
        out[r] = grid[source.noisy_max(-dist, comp.scale)]
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

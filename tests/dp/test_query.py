"""DP queries: planning, refusals, contribution bounding, keys, accuracy, coverage and audits.

Statistical tests follow STYLE.md: each declares its false-failure rate
(``ALPHA``) and uses exact Clopper-Pearson bounds (tests/_dpstats.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from tests._dpstats import audit_power_floor, clopper_pearson, epsilon_lower_bound

from veil.data import ColumnSpec, PrivacySchema
from veil.dp import (
    Aggregate,
    Contribution,
    PrivateFrame,
    QuerySpec,
    aggregate,
    laplace_half_width,
    parse_sql,
    plan_query,
    release,
)
from veil.dp._execute import run_plan  # charges nothing: the tests' own calibration runs
from veil.errors import BudgetExceededError, InvalidInputError, SchemaError
from veil.ledger import Budget, PLDAccountant

ALPHA = 1e-6

SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("g", "categorical", categories=("a", "b", "c")),
        ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),
        ColumnSpec("free", "numeric"),
        ColumnSpec("city", "categorical"),
    )
)
UNIT_SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("pid", "identifier"),
        ColumnSpec("g", "categorical", categories=("a", "b", "c")),
        ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),
    ),
    privacy_unit="pid",
    max_groups=1,
    max_rows=1,
)


def frame(n: int = 3000, seed: int = 42) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "g": rng.choice(["a", "b"], n),  # "c" is declared but empty
            "x": rng.uniform(0, 10, n),
            "free": rng.normal(size=n),
            "city": rng.choice(["paris", "lyon"], n),
        }
    )


def value(result, column, row=0):
    return result.rows[row][column]["value"]


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_invalid_epsilon_is_refused(epsilon):
    with pytest.raises(InvalidInputError, match="epsilon"):
        plan_query(parse_sql("SELECT COUNT(*) FROM t"), SCHEMA, epsilon=epsilon)


@pytest.mark.parametrize("delta", [1.0, 1.5, -1e-9, math.nan, math.inf])
def test_invalid_delta_is_refused(delta):
    with pytest.raises(InvalidInputError, match="delta"):
        plan_query(parse_sql("SELECT COUNT(*) FROM t"), SCHEMA, epsilon=1.0, delta=delta)


def test_undeclared_column_names_the_closest_declared_one():
    with pytest.raises(SchemaError, match="'x'"):
        plan_query(parse_sql("SELECT AVG(xx) FROM t"), SCHEMA, epsilon=1.0)


def test_unbounded_numeric_column_has_no_sensitivity():
    with pytest.raises(SchemaError, match="no declared bounds") as caught:
        plan_query(parse_sql("SELECT SUM(free) FROM t"), SCHEMA, epsilon=1.0)
    assert "--bounds free=LOW:HIGH" in str(caught.value)


def test_grouping_without_declared_categories_needs_delta():
    with pytest.raises(InvalidInputError, match="needs delta > 0"):
        plan_query(parse_sql("SELECT city, COUNT(*) FROM t GROUP BY city"), SCHEMA, epsilon=1.0)


def test_gaussian_needs_delta():
    with pytest.raises(InvalidInputError, match="Gaussian mechanism needs delta"):
        plan_query(parse_sql("SELECT COUNT(*) FROM t"), SCHEMA, epsilon=1.0, mechanism="gaussian")


def test_schema_bounds_with_lo_above_hi_are_refused():
    with pytest.raises(SchemaError):
        ColumnSpec("x", "numeric", bounds=(5.0, 1.0))


def test_contribution_bounds_need_a_privacy_unit():
    with pytest.raises(InvalidInputError, match="privacy-unit"):
        plan_query(
            parse_sql("SELECT COUNT(*) FROM t"),
            SCHEMA,
            epsilon=1.0,
            contribution=Contribution(max_groups=2),
        )
    with pytest.raises(SchemaError, match="needs a privacy-unit"):
        PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0, 1)),), max_rows=3)


def test_exhausted_local_budget_refuses_and_charges_nothing():
    pf = PrivateFrame(frame(), SCHEMA, budget=Budget(epsilon=1.0))
    pf.count(epsilon=0.6)
    before = pf.guard.status(pf.dataset)
    with pytest.raises(BudgetExceededError) as caught:
        pf.count(epsilon=0.6)
    assert caught.value.exit_code == 8
    assert pf.guard.status(pf.dataset) == before
    assert before.events == 1
    pf.count(epsilon=0.4)  # what remains can still be spent


def test_private_frame_needs_exactly_one_place_to_charge():
    with pytest.raises(InvalidInputError, match="exactly one place"):
        PrivateFrame(frame(), SCHEMA)


# ------------------------------------------------------------------ planning


def test_plan_derives_scales_from_declared_bounds_and_splits_epsilon():
    plan = plan_query(
        parse_sql("SELECT g, COUNT(*), SUM(x), AVG(x) FROM t GROUP BY g"), SCHEMA, epsilon=1.5
    )
    kinds = {c.kind: c for c in plan.components}
    assert set(kinds) == {"count", "sum", "csum"}
    # Three components at epsilon 0.5 each; one row changes a count by 1, a sum by 10,
    # a sum centred on 5 by 5.
    assert kinds["count"].scale == pytest.approx(2.0)
    assert kinds["sum"].scale == pytest.approx(20.0)
    assert kinds["csum"].scale == pytest.approx(10.0)
    assert plan.keys == (("a",), ("b",), ("c",))
    # Pure composition: the charge at delta 0 is exactly the requested epsilon.
    assert PLDAccountant().epsilon([plan.event.dp_event], 0.0) == pytest.approx(1.5)


def test_contribution_bounds_scale_the_sensitivity():
    schema = PrivacySchema(
        columns=UNIT_SCHEMA.columns, privacy_unit="pid", max_groups=2, max_rows=3
    )
    pf = PrivateFrame(pl.DataFrame(), schema, budget=Budget(epsilon=10))
    plan = pf.plan("SELECT g, COUNT(*) FROM t GROUP BY g", epsilon=1.0)
    assert plan.components[0].scale == pytest.approx(6.0)  # L1 = L0 * Linf = 6
    gauss = pf.plan(
        "SELECT g, COUNT(*) FROM t GROUP BY g", epsilon=1.0, delta=1e-6, mechanism="gaussian"
    )
    mech = gauss.mechanisms[0]
    assert mech.parameters["sensitivity"] == pytest.approx(math.sqrt(2) * 3)  # L2


def test_query_with_declared_delta_charges_at_most_what_was_asked():
    plan = plan_query(
        parse_sql("SELECT city, COUNT(*), AVG(x) FROM t GROUP BY city"),
        SCHEMA,
        epsilon=1.0,
        delta=1e-6,
    )
    assert PLDAccountant().epsilon([plan.event.dp_event], 1e-6) <= 1.0 + 1e-9


# ------------------------------------------------------------------ answers


def test_answers_are_close_to_the_truth_with_a_large_epsilon():
    data = frame()
    pf = PrivateFrame(data, SCHEMA, budget=Budget(epsilon=1e4))
    result = pf.query(
        "SELECT g, COUNT(*) AS n, SUM(x), AVG(x), VARIANCE(x), MEDIAN(x) FROM t "
        "WHERE x > 1 GROUP BY g",
        epsilon=100.0,  # the largest one release may spend
    )
    truth = (
        data.filter(pl.col("x") > 1)
        .group_by("g")
        .agg(
            pl.len().alias("n"),
            pl.col("x").sum().alias("s"),
            pl.col("x").mean().alias("m"),
            pl.col("x").var(ddof=0).alias("v"),
            pl.col("x").median().alias("q"),
        )
    )
    by_group = {r["g"]: r for r in truth.iter_rows(named=True)}
    rows = {r["g"]: r for r in result.rows}
    assert set(rows) == {"a", "b", "c"}  # known keys: the empty group is released too
    assert rows["c"]["n"]["value"] <= 5
    for g in ("a", "b"):
        assert rows[g]["n"]["value"] == pytest.approx(by_group[g]["n"], abs=3)
        assert rows[g]["sum_x"]["value"] == pytest.approx(by_group[g]["s"], rel=1e-3)
        assert rows[g]["mean_x"]["value"] == pytest.approx(by_group[g]["m"], rel=1e-3)
        assert rows[g]["variance_x"]["value"] == pytest.approx(by_group[g]["v"], rel=1e-2)
        assert rows[g]["quantile_x_0.5"]["value"] == pytest.approx(by_group[g]["q"], abs=0.1)
        for cell in ("n", "sum_x", "mean_x", "variance_x"):
            assert rows[g][cell]["ci"][0] <= rows[g][cell]["value"] <= rows[g][cell]["ci"][1]


def test_pandas_frames_are_accepted():
    data = frame().to_pandas()
    assert isinstance(data, pd.DataFrame)
    result = PrivateFrame(data, SCHEMA, budget=Budget(epsilon=100)).count(epsilon=50)
    assert value(result, "count") == pytest.approx(3000, abs=3)


def test_values_outside_bounds_are_clamped_and_nulls_imputed():
    data = pl.DataFrame({"x": [100.0, -100.0, None, 5.0]})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    result = PrivateFrame(data, schema, budget=Budget(epsilon=100)).sum("x", epsilon=100)
    # Noise of scale 0.1: |noise| > 2 with probability e^-20.
    assert value(result, "sum_x") == pytest.approx(10 + 0 + 5 + 5, abs=2)


def test_histogram_of_a_bounded_numeric_column():
    data = pl.DataFrame({"x": [0.5] * 100 + [9.5] * 300})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    result = PrivateFrame(data, schema, budget=Budget(epsilon=100)).histogram(
        "x", bins=2, epsilon=100
    )
    counts = {r["x_bin"]: r["count"]["value"] for r in result.rows}
    assert counts == {"[0, 5)": pytest.approx(100, abs=2), "[5, 10]": pytest.approx(300, abs=2)}


def test_contribution_bounding_keeps_at_most_the_declared_rows_per_person():
    # Person 0 has 500 rows; everyone else one. With max_rows=1 they count once.
    data = pl.DataFrame(
        {"pid": [0] * 500 + list(range(1, 101)), "g": ["a"] * 600, "x": [10.0] * 600}
    )
    pf = PrivateFrame(data, UNIT_SCHEMA, budget=Budget(epsilon=100))
    result = pf.query("SELECT COUNT(*), SUM(x) FROM t", epsilon=100)
    assert value(result, "count") == pytest.approx(101, abs=1)
    # Noise of scale 0.2 (without bounding the sum would be 6,000).
    assert value(result, "sum_x") == pytest.approx(1010, abs=5)


def test_contribution_bounding_keeps_at_most_the_declared_groups_per_person():
    data = pl.DataFrame({"pid": [0, 0, 0], "g": ["a", "b", "c"], "x": [1.0, 1.0, 1.0]})
    schema = PrivacySchema(columns=UNIT_SCHEMA.columns, privacy_unit="pid", max_groups=2)
    result = PrivateFrame(data, schema, budget=Budget(epsilon=100)).count(by=["g"], epsilon=100)
    assert sum(r["count"]["value"] for r in result.rows) == 2


def test_unknown_keys_hide_a_group_created_by_one_person():
    data = pl.DataFrame({"city": ["paris"] * 2000 + ["tiny-village"], "x": [1.0] * 2001})
    pf = PrivateFrame(data, SCHEMA, budget=Budget(epsilon=100, delta=1e-3))
    shown = set()
    for _ in range(20):
        result = pf.query("SELECT city, COUNT(*) FROM t GROUP BY city", epsilon=1.0, delta=1e-9)
        shown |= {r["city"] for r in result.rows}
    # Each run shows tiny-village with probability <= 1e-9 (so this fails w.p. <= 2e-8).
    assert shown == {"paris"}
    assert any("selected by a noisy count" in n for n in result.notes)


def test_results_serialise_with_charge_and_notes():
    pf = PrivateFrame(frame(), SCHEMA, budget=Budget(epsilon=5, delta=1e-6))
    result = pf.query("SELECT g, COUNT(*) FROM t GROUP BY g", epsilon=1.0)
    payload = result.to_dict()
    assert payload["ci_level"] == 0.95
    assert "clamping" in payload["ci_note"]
    # The gate's receipt: what this query cost alone, and the budget after it.
    assert payload["charged"]["dataset"] == "local"
    assert payload["charged"]["charged"]["epsilon"] == pytest.approx(1.0, rel=1e-5)
    assert payload["charged"]["budget"]["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-5)
    assert payload["charged"]["budget"]["remaining"] == pytest.approx(4.0, rel=1e-5)
    assert result.to_frame().columns == ["g", "count"]


# ------------------------------------------------------------------ calibration and coverage


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sql", "cell"),
    [
        ("SELECT COUNT(*) FROM t", "count"),
        ("SELECT SUM(x) FROM t", "sum_x"),
        ("SELECT AVG(x) FROM t", "mean_x"),
        ("SELECT VARIANCE(x) FROM t", "variance_x"),
    ],
)
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_confidence_intervals_reach_their_nominal_coverage(sql, cell, mechanism):
    data = pl.DataFrame({"x": np.linspace(0.0, 10.0, 40)})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    truth = {
        "count": 40.0,
        "sum_x": float(data["x"].sum()),
        "mean_x": float(data["x"].mean()),
        "variance_x": float(data["x"].var(ddof=0)),
    }[cell]
    delta = 1e-5 if mechanism == "gaussian" else 0.0
    plan = plan_query(
        parse_sql(sql), schema, epsilon=1.0, delta=delta, mechanism=mechanism, confidence=0.9
    )
    runs = 1500
    covered = 0
    for _ in range(runs):
        lo, hi = run_plan(plan, data).rows[0][cell]["ci"]
        covered += lo - 1e-9 <= truth <= hi + 1e-9
    upper = clopper_pearson(covered, runs, ALPHA)[1]
    assert upper >= 0.9, (
        f"{cell}: {covered}/{runs} intervals covered the truth, significantly below 90% "
        f"(type I error <= {ALPHA})"
    )


@pytest.mark.slow
def test_count_noise_matches_the_discrete_laplace_variance():
    # Zero the signal: an empty frame, so every noisy count is pure noise. The released
    # value is clipped at 0, but the interval's upper end is the raw noisy count + half-width.
    data = pl.DataFrame({"x": pl.Series([], dtype=pl.Float64)})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    plan = plan_query(parse_sql("SELECT COUNT(*) FROM t"), schema, epsilon=0.5)
    scale = plan.components[0].scale
    half_width = laplace_half_width(scale, 0.95, integer=True)
    runs = 3000
    raw = np.array(
        [run_plan(plan, data).rows[0]["count"]["ci"][1] - half_width for _ in range(runs)]
    )
    a = math.exp(-1.0 / scale)
    var_theory = 2 * a / (1 - a) ** 2
    sample_var = float(np.var(raw))
    # Normal approximation of the sample variance's spread, Var(s^2) ~ sigma^4 (2 + kurtosis) / n,
    # with the Laplace excess kurtosis 3 (discrete Laplace: slightly less): conservative.
    z = float(stats.norm.isf(ALPHA / 2))
    tolerance = z * var_theory * math.sqrt(5 / runs)
    assert abs(sample_var - var_theory) <= tolerance, (
        f"count noise variance {sample_var:.3f}, theory {var_theory:.3f} (type I error <= {ALPHA})"
    )
    assert abs(float(np.mean(raw))) <= z * math.sqrt(var_theory / runs), "count noise is biased"


# ------------------------------------------------------------------ empirical DP audits


def _releases(plan, schema, frame, runs):
    """``runs`` independent releases of ``plan`` on ``frame``, distributed as ``run_plan``'s.

    Without a privacy unit the engine's aggregation samples nothing (it is checked to repeat
    exactly), so the frame is aggregated once and only the release (noise, selection,
    intervals) runs each time: half the cost of a whole query. Contribution bounding samples
    rows per person, so with a privacy unit every run aggregates afresh.
    """
    if schema.privacy_unit is not None:
        return (run_plan(plan, frame) for _ in range(runs))
    exact = aggregate(plan, frame)
    assert exact.groups.equals(aggregate(plan, frame).groups), "aggregation is not deterministic"
    return (release(plan, exact) for _ in range(runs))


def _audit(sql, schema, d0, d1, event, *, epsilon, runs, delta=0.0, mechanism="auto"):
    plan = plan_query(parse_sql(sql), schema, epsilon=epsilon, delta=delta, mechanism=mechanism)
    k0 = sum(bool(event(r)) for r in _releases(plan, schema, d0, runs))
    k1 = sum(bool(event(r)) for r in _releases(plan, schema, d1, runs))
    return k0, k1


BOUNDED = PrivacySchema(
    columns=(
        ColumnSpec("g", "categorical", categories=("a", "b")),
        ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),
        ColumnSpec("city", "categorical"),
    )
)


@pytest.mark.slow
def test_audit_count():
    d0 = pl.DataFrame({"g": ["a"] * 10, "x": [5.0] * 10, "city": ["p"] * 10})
    d1 = pl.concat([d0, pl.DataFrame({"g": ["a"], "x": [10.0], "city": ["p"]})])
    runs = 3000

    k0, k1 = _audit(
        "SELECT COUNT(*) FROM t",
        BOUNDED,
        d0,
        d1,
        lambda r: value(r, "count") >= 11,
        epsilon=1.0,
        runs=runs,
    )
    bound = epsilon_lower_bound(k0, runs, k1, runs, ALPHA)
    assert bound <= 1.0, (
        f"COUNT leaks more than epsilon=1: bound {bound:.3f} (type I error <= {ALPHA})"
    )
    # Power: P0 = P(Z >= 1), P1 = P(Z >= 0) for discrete Laplace(1): the audit reaches this floor.
    a = math.exp(-1.0)
    floor = audit_power_floor(a / (1 + a), runs, 1 / (1 + a), runs, ALPHA)
    assert bound >= floor, f"COUNT looks noisier than claimed: {bound:.3f} < {floor:.3f}"


@pytest.mark.slow
def test_audit_sum_mean_and_median():
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 10, 30)
    d0 = pl.DataFrame({"g": ["a"] * 30, "x": base, "city": ["p"] * 30})
    d1 = pl.concat([d0, pl.DataFrame({"g": ["a"], "x": [10.0], "city": ["p"]})])
    runs = 2000
    cases = [
        ("SELECT SUM(x) FROM t", "sum_x", float(base.sum()) + 10),
        ("SELECT AVG(x) FROM t", "mean_x", float(np.mean([*base, 10.0]))),
        ("SELECT MEDIAN(x) FROM t", "quantile_x_0.5", float(np.median([*base, 10.0]))),
    ]
    for sql, cell, threshold in cases:
        k0, k1 = _audit(
            sql,
            BOUNDED,
            d0,
            d1,
            lambda r, c=cell, t=threshold: value(r, c) >= t,
            epsilon=1.0,
            runs=runs,
        )
        bound = epsilon_lower_bound(k0, runs, k1, runs, ALPHA / 3)
        assert bound <= 1.0, (
            f"{sql} leaks more than epsilon=1: {bound:.3f} (type I error <= {ALPHA})"
        )


@pytest.mark.slow
def test_audit_gaussian_count():
    d0 = pl.DataFrame({"g": ["a"] * 10, "x": [5.0] * 10, "city": ["p"] * 10})
    d1 = pl.concat([d0, pl.DataFrame({"g": ["a"], "x": [10.0], "city": ["p"]})])
    runs = 3000
    delta = 1e-3
    k0, k1 = _audit(
        "SELECT COUNT(*) FROM t",
        BOUNDED,
        d0,
        d1,
        lambda r: value(r, "count") >= 12,
        epsilon=1.0,
        runs=runs,
        delta=delta,
        mechanism="gaussian",
    )
    bound = epsilon_lower_bound(k0, runs, k1, runs, ALPHA, delta=delta)
    assert bound <= 1.0, (
        f"Gaussian COUNT leaks more than (1, {delta}): {bound:.3f} (type I error <= {ALPHA})"
    )


@pytest.mark.slow
def test_audit_partition_selection_of_unknown_keys():
    # D1 adds one person in a new group; the group may appear with probability <= delta.
    d0 = pl.DataFrame({"g": ["a"] * 50, "x": [5.0] * 50, "city": ["p"] * 50})
    d1 = pl.concat([d0, pl.DataFrame({"g": ["a"], "x": [5.0], "city": ["new"]})])
    runs = 3000
    delta = 0.02  # large on purpose, so the release probability is measurable
    plan = plan_query(
        parse_sql("SELECT city, COUNT(*) FROM t GROUP BY city"), BOUNDED, epsilon=1.0, delta=delta
    )
    k1 = sum(any(r["city"] == "new" for r in run_plan(plan, d1).rows) for _ in range(runs))
    lower = clopper_pearson(k1, runs, ALPHA)[0]
    assert lower <= delta, (
        f"a one-person group appeared in {k1}/{runs} runs, above delta={delta} "
        f"(type I error <= {ALPHA})"
    )
    # Exact release probability from the threshold: P(1 + Z >= tau) for discrete Laplace.
    scale = plan.components[0].scale
    a = math.exp(-1.0 / scale)
    p_release = a ** (plan.threshold - 1) / (1 + a)
    assert p_release <= delta
    lo, hi = clopper_pearson(k1, runs, ALPHA)
    assert lo <= p_release <= hi, f"release rate {k1}/{runs} vs theory {p_release:.4f}"


@pytest.mark.slow
def test_audit_contribution_bounding():
    # D1 adds a person with 40 rows; with max_rows=1 the count moves by at most 1.
    d0 = pl.DataFrame({"pid": list(range(10)), "g": ["a"] * 10, "x": [5.0] * 10})
    d1 = pl.concat([d0, pl.DataFrame({"pid": [99] * 40, "g": ["a"] * 40, "x": [5.0] * 40})])
    # The event "count >= 12" (two above D0's 10): P0 = P(Z >= 2), and with bounding
    # P1 = P(Z >= 1), a ratio of e. A bound that let two rows through would make
    # P1 = P(Z >= 0): this audit then reaches a bound above 1 with probability >= 1 - 2
    # ALPHA (floor below), with a third of the runs the event "count >= 11" needed to
    # catch even no bounding at all (its floor at 3,000 runs was 1.04, for 40 rows).
    runs = 1000
    a = math.exp(-1.0)
    two_rows_floor = audit_power_floor(a**2 / (1 + a), runs, 1 / (1 + a), runs, ALPHA)
    assert two_rows_floor > 1.0  # the design: an off-by-one bound cannot pass unseen
    k0, k1 = _audit(
        "SELECT COUNT(*) FROM t",
        UNIT_SCHEMA,
        d0,
        d1,
        lambda r: value(r, "count") >= 12,
        epsilon=1.0,
        runs=runs,
    )
    bound = epsilon_lower_bound(k0, runs, k1, runs, ALPHA)
    assert bound <= 1.0, f"bounding failed: bound {bound:.3f} > 1 (type I error <= {ALPHA})"


def test_spec_api_matches_sql():
    spec = QuerySpec((Aggregate("count"), Aggregate("mean", "x")), ("g",))
    plan_a = plan_query(spec, SCHEMA, epsilon=1.0)
    plan_b = plan_query(
        parse_sql("SELECT g, COUNT(*), AVG(x) FROM t GROUP BY g"), SCHEMA, epsilon=1.0
    )
    assert [c.scale for c in plan_a.components] == [c.scale for c in plan_b.components]


# ------------------------------------------------------------------ review findings


def test_filters_are_sql_conditions_never_free_expressions():
    with pytest.raises(InvalidInputError, match="SQL condition"):
        QuerySpec((Aggregate("count"),), where=pl.col("x") > pl.col("x").mean())  # type: ignore[arg-type]
    pf = PrivateFrame(frame(), SCHEMA, budget=Budget(epsilon=100))
    spec = QuerySpec((Aggregate("count"),), where="x >= 5 AND g IN ('a')")
    expected = frame().filter((pl.col("x") >= 5) & (pl.col("g") == "a")).height
    assert value(pf.query(spec, epsilon=100.0), "count") == pytest.approx(expected, abs=2)


def test_duplicate_explicit_keys_are_refused():
    spec = QuerySpec((Aggregate("count"),), ("g",), keys=[("a",), ("a",)])
    with pytest.raises(InvalidInputError, match="distinct"):
        plan_query(spec, SCHEMA, epsilon=1.0)


def test_rows_without_a_privacy_unit_are_dropped():
    data = pl.DataFrame({"pid": [None] * 50 + [1, 2], "g": ["a"] * 52, "x": [1.0] * 52})
    result = PrivateFrame(data, UNIT_SCHEMA, budget=Budget(epsilon=100)).count(epsilon=100)
    assert value(result, "count") == 2


def test_odd_group_values_never_raise_after_the_charge():
    # NaN, infinity and huge floats in a group column whose categories are "1" and "2".
    schema = PrivacySchema(
        columns=(
            ColumnSpec("g", "categorical", categories=("1", "2")),
            ColumnSpec("x", "numeric", bounds=(0.0, 1.0)),
        )
    )
    data = pl.DataFrame({"g": [1.0, 2.0, math.nan, math.inf, 2.0**70], "x": [0.5] * 5})
    result = PrivateFrame(data, schema, budget=Budget(epsilon=100)).count(by=["g"], epsilon=100)
    assert {r["g"]: r["count"]["value"] for r in result.rows} == {"1": 1, "2": 1}


def test_a_string_column_cannot_be_measured_and_nothing_is_charged():
    data = pl.DataFrame({"x": ["1", "2"]})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    pf = PrivateFrame(data, schema, budget=Budget(epsilon=1.0))
    with pytest.raises(InvalidInputError, match="does not hold numbers"):
        pf.sum("x", epsilon=1.0)
    assert pf.guard.status(pf.dataset).events == 0


def test_a_sum_alone_spends_nothing_on_a_hidden_count():
    plan = plan_query(parse_sql("SELECT g, SUM(x) FROM t GROUP BY g"), SCHEMA, epsilon=1.0)
    assert [c.kind for c in plan.components] == ["sum"]
    assert plan.components[0].scale == pytest.approx(10.0)


def test_sql_variance_and_percentile_semantics():
    with pytest.raises(InvalidInputError, match="VAR_SAMP"):
        parse_sql("SELECT VAR_SAMP(x) FROM t")
    with pytest.raises(InvalidInputError, match="PERCENTILE_DISC"):
        parse_sql("SELECT PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY x) FROM t")
    desc = parse_sql("SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY x DESC) FROM t")
    assert desc.aggregates[0].q == pytest.approx(0.1)
    assert parse_sql("SELECT VAR_POP(x) FROM t").aggregates[0].kind == "variance"


@pytest.mark.slow
def test_intervals_are_never_inverted():
    data = pl.DataFrame({"x": [1.0, 9.0, 5.0]})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    plan = plan_query(parse_sql("SELECT AVG(x), VARIANCE(x) FROM t"), schema, epsilon=0.5)
    for _ in range(300):
        row = run_plan(plan, data).rows[0]
        for cell in ("mean_x", "variance_x"):
            lo, hi = row[cell]["ci"]
            assert lo <= hi, row[cell]


def test_unknown_keys_are_released_in_sorted_order():
    data = pl.DataFrame(
        {"city": ["lyon"] * 500 + ["paris"] * 500 + ["brest"] * 500, "x": [1.0] * 1500}
    )
    pf = PrivateFrame(data, SCHEMA, budget=Budget(epsilon=100, delta=1e-3))
    result = pf.query("SELECT city, COUNT(*) FROM t GROUP BY city", epsilon=5.0, delta=1e-6)
    assert [r["city"] for r in result.rows] == ["brest", "lyon", "paris"]


def test_missing_values_count_at_the_middle_and_nan_at_the_upper_bound():
    # 100 copies, so that epsilon 100 (the most one release may spend) resolves the sums.
    data = pl.DataFrame({"x": [100.0, -100.0, None, 5.0, math.nan, 3.0] * 100})
    schema = PrivacySchema(columns=(ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),))
    pf = PrivateFrame(data, schema, budget=Budget(epsilon=100))
    row = pf.query("SELECT COUNT(*), SUM(x), AVG(x), VARIANCE(x) FROM t", epsilon=100).rows[0]
    clamped = np.tile([10.0, 0.0, 5.0, 5.0, 10.0, 3.0], 100)
    assert row["count"]["value"] == 600
    # Noise of scale 0.4: |noise| > 5 with probability e^-12.5 (NaN at mid would be 500 less).
    assert row["sum_x"]["value"] == pytest.approx(clamped.sum(), abs=5)
    assert row["mean_x"]["value"] == pytest.approx(clamped.mean(), abs=1e-2)
    assert row["variance_x"]["value"] == pytest.approx(clamped.var(), abs=1e-2)

"""PrivateFrame: refusals before the charge, nothing data-dependent after it.

A refused query must leave the frame's budget whole: each refusal is followed
by a query that spends the *entire* budget, which succeeds only if nothing
was charged.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

import veil.dp
from veil.data import ColumnSpec, PrivacySchema
from veil.dp import Aggregate, PrivateFrame, QuerySpec, parse_sql, plan_query
from veil.errors import InvalidInputError, SchemaError, VeilError
from veil.ledger import Budget

BUDGET = 1.0


def schema(bounds: tuple[float, float]) -> PrivacySchema:
    return PrivacySchema(
        columns=(
            ColumnSpec("x", "numeric", bounds=bounds),
            ColumnSpec("n", "numeric", bounds=(0, 100)),
            ColumnSpec("g", "categorical", categories=("a", "b")),
        )
    )


def private(values: list[float], bounds: tuple[float, float] = (0.0, 10.0)) -> PrivateFrame:
    data = pl.DataFrame(
        {
            "x": pl.Series(values, dtype=pl.Float64),
            "n": pl.Series([i % 7 for i in range(len(values))], dtype=pl.Int64),
            "g": ["a" if i % 2 else "b" for i in range(len(values))],
        }
    )
    return PrivateFrame(data, schema(bounds), budget=Budget(epsilon=BUDGET))


def outcome(pf: PrivateFrame, sql: str) -> str:
    """'ok', or the refusal's class; a refusal must leave the whole budget unspent."""
    try:
        pf.query(sql, epsilon=BUDGET)
    except VeilError as error:
        pf.count(epsilon=BUDGET)  # raises BudgetExceededError if the refusal charged anything
        return type(error).__name__
    return "ok"


AGGREGATIONS = (
    "SELECT COUNT(*) FROM t",
    "SELECT SUM(x) FROM t",
    "SELECT AVG(x) FROM t",
    "SELECT VARIANCE(x) FROM t",
    "SELECT MEDIAN(x) FROM t",
    "SELECT QUANTILE(x, 0.9) FROM t",
    "SELECT g, COUNT(*), SUM(x), AVG(x), VARIANCE(x) FROM t GROUP BY g",
)


@pytest.mark.parametrize(
    ("bounds", "rows", "extra"),
    [
        # The neighbours: AVG answered on the first and overflowed on the second.
        ((0.0, 1e308), [1e308] * 3 + [5e307] * 10, 1e308),
        ((-1e307, 1e307), [1e307] * 17, 1e307),
        ((-1.7e308, 1.7e308), [1.7e308] * 5, -1.7e308),
        # Values no loader would let through, passed to PrivateFrame directly.
        ((0.0, 10.0), [5.0] * 10, math.inf),
        ((0.0, 10.0), [5.0] * 10, -math.inf),
        ((0.0, 10.0), [5e-324] * 10, math.nan),
        ((0.0, 10.0), [1e-310] * 10, 1e308),
        # Near the widest bounds the arithmetic allows, and subnormal bounds.
        ((-1e140, 1e140), [1e140] * 10, -1e140),
        ((0.0, 1e-320), [1e-320] * 10, 0.0),
        ((0.0, 1e-200), [1e-200] * 10, 0.0),
    ],
)
def test_neighbouring_frames_at_numeric_edges_behave_alike(bounds, rows, extra):
    for sql in AGGREGATIONS:
        first = outcome(private(rows, bounds), sql)
        second = outcome(private([*rows, extra], bounds), sql)
        assert first == second, f"{sql} with bounds {bounds}: {first} vs {second}"


def test_wide_bounds_are_refused_before_any_charge():
    pf = private([1e308] * 3, (0.0, 1e308))
    with pytest.raises(InvalidInputError, match="too wide for float64"):
        pf.query("SELECT AVG(x) FROM t", epsilon=BUDGET)
    assert pf.count(epsilon=BUDGET).rows  # the whole budget is still there


@pytest.mark.parametrize(
    "where",
    ["n = 'abc'", "g > 5", "n IN ('a', 'b')", "g IN ('a', 3)", "x BETWEEN 'a' AND 'm'"],
)
def test_where_literals_of_the_wrong_type_are_refused_before_the_charge(where):
    pf = private([1.0, 2.0, 3.0])
    assert outcome(pf, f"SELECT COUNT(*) FROM t WHERE {where}") == "InvalidInputError"


def test_between_strings_are_literals():
    pf = PrivateFrame(
        pl.DataFrame({"g": ["a", "c", "k", "z"] * 50}),
        PrivacySchema(columns=(ColumnSpec("g", "categorical"),)),
        budget=Budget(epsilon=100),
    )
    result = pf.query("SELECT COUNT(*) AS n FROM t WHERE g BETWEEN 'b' AND 'm'", epsilon=100)
    assert abs(result.rows[0]["n"]["value"] - 100) <= 2  # 'c' and 'k'; noise scale 0.01


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        (["g"], [(1,), (2,)]),  # numbers for a text column
        (["n"], [(1.5,), (2,)]),  # a fraction for an integer column
        (["n"], [("1",), (2,)]),  # a string among numbers
        (["g", "n"], [("a", 1), (2, 1)]),  # a number for a text column, in a pair
    ],
)
def test_explicit_keys_of_the_wrong_type_are_refused_before_the_charge(by, keys):
    pf = private([1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="group keys for"):
        pf.count(by=by, keys=keys, epsilon=BUDGET)
    assert pf.count(epsilon=BUDGET).rows


def test_explicit_keys_of_the_right_type_are_answered():
    pf = private([1.0] * 30)
    result = pf.count(by=["n"], keys=[(0,), (1,), (99,)], epsilon=BUDGET)
    assert [r["n"] for r in result.rows] == [0, 1, 99]


def test_a_repeated_grouping_column_is_refused():
    with pytest.raises(InvalidInputError, match="grouping column is listed twice"):
        QuerySpec((Aggregate("count"),), ("g", "g"))


def test_an_aggregate_named_like_a_grouping_column_is_refused():
    with pytest.raises(InvalidInputError, match="same name"):
        QuerySpec((Aggregate("count", alias="g"),), ("g",))
    pf = private([1.0, 2.0])
    assert outcome(pf, "SELECT g, COUNT(*) AS g FROM t GROUP BY g") == "InvalidInputError"


def test_avg_and_variance_report_the_noise_scale_of_the_released_value():
    pf = private([5.0] * 200)
    plan = pf.plan("SELECT COUNT(*) AS n, AVG(x), VARIANCE(x) FROM t", epsilon=BUDGET)
    scales = {c.kind: c.scale for c in plan.components}
    result = pf.query("SELECT COUNT(*) AS n, AVG(x), VARIANCE(x) FROM t", epsilon=BUDGET)
    row = result.rows[0]
    n = max(1.0, row["n"]["value"])
    mean, var = row["mean_x"], row["variance_x"]
    assert mean["noise_scale_centred_sum"] == pytest.approx(scales["csum"])
    assert mean["noise_scale"] == pytest.approx(scales["csum"] / n)
    assert var["noise_scale_centred_sum_of_squares"] == pytest.approx(scales["csumsq"])
    centred_mean = mean["value"] - 5.0
    assert var["noise_scale"] == pytest.approx(
        (scales["csumsq"] + 2 * abs(centred_mean) * scales["csum"]) / n, rel=0.05
    )


def test_no_public_function_releases_without_a_charge():
    assert "run_plan" not in veil.dp.__all__
    assert not hasattr(veil.dp, "run_plan")


# ---------------------------------------------------------------- the limits docs/dp.md states


@pytest.mark.parametrize(
    ("sql", "fits", "too_wide"),
    [
        ("SELECT SUM(x) FROM t", 5.0e294, 5.2e294),
        ("SELECT AVG(x) FROM t", 5.0e294, 5.2e294),
        ("SELECT VARIANCE(x) FROM t", 1.5e141, 1.6e141),
    ],
)
def test_the_documented_widest_bounds(sql, fits, too_wide):
    plan_query(parse_sql(sql), schema((-fits, fits)), epsilon=1.0)
    with pytest.raises(SchemaError, match="too wide for float64"):
        plan_query(parse_sql(sql), schema((-too_wide, too_wide)), epsilon=1.0)


@pytest.mark.parametrize(
    ("sql", "width"),
    [("SELECT SUM(x) FROM t", 2e-308), ("SELECT VARIANCE(x) FROM t", 9e-151)],
)
def test_the_documented_narrowest_bounds(sql, width):
    with pytest.raises(SchemaError, match="too narrow"):
        plan_query(parse_sql(sql), schema((0.0, width)), epsilon=1.0)
    plan_query(parse_sql(sql), schema((0.0, width * 1.2)), epsilon=1.0)


def test_the_documented_smallest_epsilon_of_a_count():
    plan_query(parse_sql("SELECT COUNT(*) FROM t"), schema((0.0, 1.0)), epsilon=8.3e-14)
    with pytest.raises(InvalidInputError, match="too small"):
        plan_query(parse_sql("SELECT COUNT(*) FROM t"), schema((0.0, 1.0)), epsilon=8.2e-14)


def test_the_documented_size_and_depth_of_a_query():
    nested = "SELECT COUNT(*) FROM t WHERE " + "(" * 24 + "x > 1" + ")" * 24
    assert parse_sql(nested).where is not None
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        parse_sql("SELECT COUNT(*) FROM t WHERE " + "(" * 25 + "x > 1" + ")" * 25)
    assert parse_sql("SELECT COUNT(*) FROM t WHERE " + " OR ".join(["x = 1"] * 90))
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        parse_sql("SELECT COUNT(*) FROM t WHERE " + " OR ".join(["x = 1"] * 100))
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        parse_sql("SELECT COUNT(*) FROM t WHERE " + "NOT " * 2000 + "x = 1")
    assert parse_sql("SELECT COUNT(*) FROM t WHERE x IN (" + ", ".join(["1"] * 1500) + ")")
    with pytest.raises(InvalidInputError, match="too long"):
        parse_sql("SELECT COUNT(*) FROM t WHERE x IN (" + ", ".join(["1"] * 4000) + ")")

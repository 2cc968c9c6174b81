"""The Spark engine against the Polars engine: the same plan gives the same bits.

Each parity test runs one plan on a Polars frame and on a Spark DataFrame of
the same rows, with the same salt, and asserts that the engines' exact
aggregates (:class:`veil.dp._engine.Exact`) are identical, then that the
release of each with the same seeded noise is identical. The noise here is a
test-only :class:`SeededNoise` (NumPy's generator, never a private path), so
that two releases can be compared; the product always draws from OpenDP.

Also: SQL outside the subset is refused identically by both engines and
charges nothing; a session that cannot start is an ``EngineError`` naming the
cause; a Spark job that fails after the charge is an ``EngineError`` and the
charge stands; a Spark frame without a needed column is refused before the
charge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from veil.data import ColumnSpec, PrivacySchema
from veil.data._adult import ADULT_COLUMNS
from veil.dp import Contribution, PrivateFrame, parse_sql, plan_query
from veil.dp._engine import Exact
from veil.dp._execute import NoiseSource, aggregate, release
from veil.errors import EngineError, InvalidInputError
from veil.ledger import Budget

# Every test here starts (or shares) a JVM and runs Spark jobs: seconds each.
# One worker runs every in-process Spark test (`--dist loadgroup`): one JVM for the suite.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

SALT = 7
ROWS = 3_000
CONTRIBUTION = Contribution(max_groups=2, max_rows=3)

SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("pid", "identifier"),
        ColumnSpec("g", "categorical", categories=("a", "b", "c")),
        ColumnSpec("city", "categorical"),  # no categories: unknown keys
        ColumnSpec("k", "numeric", bounds=(0, 9)),  # an integer group column, unknown keys
        ColumnSpec("x", "numeric", bounds=(0.0, 10.0)),
        ColumnSpec("y", "numeric", bounds=(0, 100)),
    ),
    privacy_unit="pid",
    max_groups=CONTRIBUTION.max_groups,
    max_rows=CONTRIBUTION.max_rows,
)


class SeededNoise(NoiseSource):
    """Reproducible noise from NumPy's generator: for comparing two releases only.

    Not private (a seeded PRNG, textbook samplers); the product's only noise is
    OpenDP's (``veil.dp._execute.OPENDP``).
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def laplace(self, values: np.ndarray, scale: float, *, integer: bool) -> np.ndarray:
        values = np.asarray(values)
        if integer:
            # Discrete Laplace: the difference of two geometric variables.
            p = -np.expm1(-1.0 / scale)
            z = self.rng.geometric(p, values.shape) - self.rng.geometric(p, values.shape)
            return values.astype(np.int64) + z
        return values.astype(float) + self.rng.laplace(0.0, scale, values.shape)

    def gaussian(self, values: np.ndarray, sigma: float) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return values + self.rng.normal(0.0, sigma, values.shape)

    def noisy_max(self, scores: np.ndarray, scale: float) -> int:
        scores = np.asarray(scores, dtype=float)
        return int(np.argmax(scores + self.rng.exponential(scale, scores.shape)))


def _data(n: int = ROWS, seed: int = 42) -> pl.DataFrame:
    """People with 1-12 rows each, values outside the bounds, nulls and NaN in measured columns."""
    rng = np.random.default_rng(seed)
    pid: list[int | None] = [int(v) for v in rng.integers(0, n // 6, n)]
    pid[5] = None  # a row of nobody: dropped by both engines
    x = rng.uniform(-2.0, 12.0, n)  # clamped to [0, 10]
    x_list: list[float | None] = [float(v) for v in x]
    for i in range(0, n, 17):
        x_list[i] = None
    for i in range(3, n, 23):
        x_list[i] = float("nan")
    y: list[int | None] = [int(v) for v in rng.integers(-10, 120, n)]
    for i in range(1, n, 29):
        y[i] = None
    g: list[str | None] = [str(v) for v in rng.choice(["a", "b", "d"], n, p=[0.5, 0.4, 0.1])]
    for i in range(2, n, 31):
        g[i] = None
    city: list[str | None] = [
        str(v) for v in rng.choice(["paris", "lyon", "nice", "brest"], n, p=[0.5, 0.3, 0.19, 0.01])
    ]
    for i in range(4, n, 37):
        city[i] = None
    return pl.DataFrame(
        {
            "pid": pid,
            "g": g,
            "city": city,
            "k": rng.integers(0, 6, n),
            "x": x_list,
            "y": y,
        },
        schema={
            "pid": pl.Int64,
            "g": pl.String,
            "city": pl.String,
            "k": pl.Int64,
            "x": pl.Float64,
            "y": pl.Int64,
        },
    )


@pytest.fixture(scope="module")
def frames(spark: Any) -> tuple[pl.DataFrame, Any]:
    data = _data()
    return data, spark.createDataFrame(data.to_arrow())


def _plan(sql: str, schema: PrivacySchema = SCHEMA, *, delta: float = 0.0, **kwargs: Any):
    return plan_query(parse_sql(sql), schema, epsilon=1.0, delta=delta, **kwargs)


def _sorted(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.sort(by, nulls_last=True) if by and frame.height else frame


def assert_same_exact(polars: Exact, spark: Exact, by: list[str]) -> None:
    """Bit-identical groups and histograms (sorted; Spark's columns cast to Polars' schema)."""
    assert (polars.engine, spark.engine) == ("polars", "spark")
    assert sorted(spark.groups.columns) == sorted(polars.groups.columns)
    left = _sorted(polars.groups, by)
    right = _sorted(spark.groups.select(left.columns).cast(dict(left.schema)), by)
    assert left.equals(right), f"groups differ:\npolars\n{left}\nspark\n{right}"
    assert sorted(spark.histograms) == sorted(polars.histograms)
    for column, hist in polars.histograms.items():
        left = _sorted(hist, [*by, "__k"])
        other = spark.histograms[column].select(left.columns).cast(dict(left.schema))
        right = _sorted(other, [*by, "__k"])
        assert left.equals(right), f"histogram of {column} differs:\npolars\n{left}\nspark\n{right}"


def released(plan: Any, exact: Exact, seed: int) -> str:
    """The released rows as exact text (``repr`` of each float: every bit)."""
    result = release(plan, exact, noise=SeededNoise(seed))
    return json.dumps(result.to_dict(), sort_keys=True)


# (sql, delta): every aggregate, known and unknown keys, each WHERE form, empty results.
PARITY = [
    pytest.param(
        "SELECT COUNT(*), SUM(x), AVG(x), VARIANCE(x), MEDIAN(x), QUANTILE(x, 0.9) FROM t",
        0.0,
        id="all-aggregates",
    ),
    pytest.param(
        "SELECT g, COUNT(*), SUM(y), AVG(x), VARIANCE(y), MEDIAN(y), QUANTILE(x, 0.9) "
        "FROM t GROUP BY g",
        0.0,
        id="known-keys",
    ),
    pytest.param("SELECT k, COUNT(*), SUM(x) FROM t GROUP BY k", 1e-6, id="unknown-int-keys"),
    pytest.param(
        "SELECT city, COUNT(*), AVG(y), MEDIAN(x) FROM t GROUP BY city",
        1e-6,
        id="unknown-string-keys",
    ),
    pytest.param(
        "SELECT g, city, COUNT(*), SUM(x) FROM t GROUP BY g, city", 1e-6, id="two-group-columns"
    ),
    pytest.param(
        "SELECT COUNT(*), SUM(x), VARIANCE(x) FROM t WHERE g = 'a' AND y BETWEEN 10 AND 60",
        0.0,
        id="where-eq-and-between",
    ),
    pytest.param(
        "SELECT g, COUNT(*), AVG(y) FROM t WHERE city IN ('paris', 'nice') OR x IS NULL GROUP BY g",
        0.0,
        id="where-in-or-is-null",
    ),
    pytest.param(
        "SELECT COUNT(*), AVG(x), QUANTILE(y, 0.9) FROM t WHERE NOT (y > 50 OR g IS NULL)",
        0.0,
        id="where-not",
    ),
    pytest.param(
        "SELECT COUNT(*), SUM(x), AVG(x), MEDIAN(y) FROM t WHERE y > 1000", 0.0, id="empty"
    ),
    pytest.param(
        "SELECT g, COUNT(*), SUM(x), MEDIAN(y) FROM t WHERE y > 1000 GROUP BY g",
        0.0,
        id="empty-known-keys",
    ),
    pytest.param(
        "SELECT city, COUNT(*), SUM(x) FROM t WHERE y > 1000 GROUP BY city",
        1e-6,
        id="empty-unknown-keys",
    ),
]


@pytest.mark.parametrize(("sql", "delta"), PARITY)
def test_spark_and_polars_give_identical_aggregates_and_releases(frames, sql, delta, seed):
    data, sdf = frames
    plan = _plan(sql, delta=delta, contribution=CONTRIBUTION)
    by = list(plan.spec.group_by)
    polars, spark = aggregate(plan, data, salt=SALT), aggregate(plan, sdf, salt=SALT)
    assert_same_exact(polars, spark, by)
    total = int(polars.groups.get_column("__n").sum()) if polars.groups.height else 0
    if "1000" in sql:
        assert total == 0
    else:
        assert total > 0
    assert released(plan, polars, seed) == released(plan, spark, seed)
    # Another seed gives another release: the comparison is not of two constants.
    if total:
        assert released(plan, polars, seed) != released(plan, polars, seed + 1)


def test_bounding_drops_rows_identically(frames):
    """max_groups=2, max_rows=3 drop rows (people have up to ~15), the same rows on both."""
    data, sdf = frames
    plan = _plan("SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g", contribution=CONTRIBUTION)
    polars, spark = aggregate(plan, data, salt=SALT), aggregate(plan, sdf, salt=SALT)
    assert_same_exact(polars, spark, ["g"])
    bounded = int(polars.groups.get_column("__n").sum())
    raw = data.filter(pl.col("pid").is_not_null() & pl.col("g").is_in(["a", "b", "c"])).height
    assert 0 < bounded < raw
    per = data.filter(pl.col("pid").is_not_null()).group_by("pid", "g").len()
    assert per.get_column("len").max() > CONTRIBUTION.max_rows  # bounding had work to do
    # Another salt keeps other rows (the sums move) on both engines alike.
    other_p, other_s = aggregate(plan, data, salt=SALT + 1), aggregate(plan, sdf, salt=SALT + 1)
    assert_same_exact(other_p, other_s, ["g"])
    assert not _sorted(other_p.groups, ["g"]).equals(_sorted(polars.groups, ["g"]))


ADULT_SCHEMA = PrivacySchema(
    columns=(
        ColumnSpec("age", "numeric", bounds=(17, 90)),
        ColumnSpec("hours_per_week", "numeric", bounds=(1, 99)),
        ColumnSpec("capital_gain", "numeric", bounds=(0, 100_000)),
        ColumnSpec("sex", "categorical", categories=("Female", "Male")),
        ColumnSpec("education", "categorical"),
        ColumnSpec("workclass", "categorical"),
    )
)


@pytest.mark.parametrize(
    ("sql", "delta"),
    [
        (
            (
                "SELECT sex, COUNT(*), AVG(age), VARIANCE(hours_per_week), MEDIAN(age), "
                "SUM(capital_gain) FROM t WHERE workclass <> 'Private' GROUP BY sex"
            ),
            0.0,
        ),
        (
            (
                "SELECT education, COUNT(*), AVG(hours_per_week), QUANTILE(age, 0.9) FROM t "
                "WHERE sex = 'Female' AND workclass IS NOT NULL GROUP BY education"
            ),
            1e-6,
        ),
    ],
    ids=["known-keys", "unknown-keys"],
)
def test_adult_parity(spark, shared_data: Path, sql, delta, seed):
    adult = pl.read_csv(
        shared_data / "adult" / "adult.data",
        has_header=False,
        new_columns=list(ADULT_COLUMNS),
    ).drop_nulls("age")  # the file ends with an empty line
    adult = adult.with_columns(pl.col(pl.String).str.strip_chars().replace("?", None))
    assert adult.height == 32_561
    sdf = spark.createDataFrame(adult.to_arrow())
    plan = _plan(sql, ADULT_SCHEMA, delta=delta)
    by = list(plan.spec.group_by)
    polars, spark_exact = aggregate(plan, adult, salt=SALT), aggregate(plan, sdf, salt=SALT)
    assert_same_exact(polars, spark_exact, by)
    assert polars.groups.height >= 2
    assert released(plan, polars, seed) == released(plan, spark_exact, seed)


# ------------------------------------------------------------------ bad input


UNSUPPORTED = [
    "SELECT COUNT(*) FROM t JOIN u ON t.pid = u.pid",
    "SELECT COUNT(*) FROM (SELECT * FROM t) AS s",
    "SELECT COUNT(*) FROM t WHERE y IN (SELECT y FROM t)",
    "SELECT SUM(x) OVER (PARTITION BY g) FROM t",
    "SELECT SUM(x * 2) FROM t",
]


@pytest.mark.parametrize("sql", UNSUPPORTED)
def test_unsupported_sql_is_refused_alike_and_charges_nothing(frames, sql):
    data, sdf = frames
    errors = []
    for frame in (data, sdf):
        pf = PrivateFrame(frame, SCHEMA, budget=Budget(epsilon=5.0))
        before = pf.guard.status(pf.dataset)
        with pytest.raises(InvalidInputError) as caught:
            pf.query(sql, epsilon=1.0)
        after = pf.guard.status(pf.dataset)
        assert after.remaining == before.remaining == 5.0
        assert after.events == 0
        errors.append((type(caught.value), str(caught.value)))
    assert PrivateFrame(sdf, SCHEMA, budget=Budget(epsilon=1.0)).engine == "spark"
    assert errors[0] == errors[1]
    assert errors[0][0] is InvalidInputError
    assert "is outside the SQL subset" in errors[0][1]


def test_a_spark_frame_without_a_needed_column_is_refused_before_the_charge(frames):
    _, sdf = frames
    pf = PrivateFrame(sdf.drop("x"), SCHEMA, budget=Budget(epsilon=5.0))
    with pytest.raises(InvalidInputError, match=r"missing \['x'\]"):
        pf.query("SELECT SUM(x) FROM t", epsilon=1.0)
    status = pf.guard.status(pf.dataset)
    assert (status.remaining, status.events) == (5.0, 0)


def test_an_executor_failure_is_an_engine_error_and_the_charge_stands(frames):
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql import types as T  # noqa: N812

    _, sdf = frames

    def fails_above_100(value):  # no type hints: they would make it a pandas UDF
        if value is not None and value > 100:  # y reaches 119: some rows raise
            msg = f"veil-test-udf-failure at {value}"
            raise ValueError(msg)
        return value

    udf = F.udf(fails_above_100, T.DoubleType(), useArrow=False)
    broken = sdf.withColumn("x", udf(F.col("y").cast("double")))
    pf = PrivateFrame(broken, SCHEMA, budget=Budget(epsilon=5.0))
    with pytest.raises(EngineError) as caught:
        pf.query("SELECT SUM(x) FROM t", epsilon=1.0)
    error = caught.value
    assert (error.code, error.exit_code) == ("engine_failed", 19)
    assert "charge stands" in str(error)
    # The job failed for the reason the test planted (not, say, a worker that cannot start).
    assert "veil-test-udf-failure" in str(error.__cause__)
    status = pf.guard.status(pf.dataset)
    assert status.events == 1
    assert status.remaining == pytest.approx(4.0)


# ------------------------------------------------------------------ a session that cannot start

_START = """
import sys
from veil.dp._spark import spark_session
from veil.errors import EngineError
try:
    spark_session(sys.argv[1])
except EngineError as exc:
    print("ENGINE-ERROR", exc.code, exc.exit_code)
    print(exc)
    sys.exit(0)
print("STARTED")
sys.exit(1)
"""


def _start_in_subprocess(master: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _START, master],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"no EngineError:\n{done.stdout}\n{done.stderr[-2000:]}"
    assert done.stdout.startswith("ENGINE-ERROR engine_failed 19")
    return done.stdout


@pytest.mark.usefixtures("spark")  # skipped with it: needs pyspark
def test_a_session_without_java_is_an_engine_error_naming_java(tmp_path: Path):
    empty = tmp_path / "no-jdk"
    empty.mkdir()
    env = {**os.environ, "JAVA_HOME": str(empty)}
    out = _start_in_subprocess("local[1]", env)
    assert "Java" in out
    assert str(empty) in out


@pytest.mark.usefixtures("spark")  # skipped with it: needs pyspark and Java
def test_a_bad_master_is_an_engine_error_naming_the_master():
    out = _start_in_subprocess("bogus://nowhere", dict(os.environ))
    assert "Spark cannot start" in out
    assert "master" in out
    assert "bogus://nowhere" in out

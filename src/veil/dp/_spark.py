"""The Spark engine: the same plan, bounded, clamped and aggregated on Apache Spark.

Spark computes exactly what the Polars engine computes (:mod:`veil.dp._engine`):
the same row filter (compiled from the same parsed condition), the same
contribution bounding (XXH64 of the same text, ranked the same way), the same
fixed-point sums and grid indices. Only the aggregated groups come back to the
driver (one Arrow batch); noise, partition selection and intervals are added
there by :func:`veil.dp._execute.release`. No noise is ever drawn on an
executor.

Requires the ``spark`` extra (``pip install 'veil[spark]'``) and Java 17 or
later for local mode.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from veil.dp._engine import (
    HASH_SEED,
    KEY_SEPARATOR,
    LIMB_BITS,
    NULL_TOKEN,
    Exact,
    check_needed_columns,
    fixed_points,
    measured_columns,
    quantile_columns,
    quantile_mids,
)
from veil.dp._plan import QueryPlan, declared_bounds
from veil.dp._where import ExprBuilder, parse_where, predicate
from veil.errors import EngineError, MissingDependencyError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "DEFAULT_MASTER",
    "is_spark_frame",
    "spark_aggregate",
    "spark_bins",
    "spark_dtypes",
    "spark_session",
]

DEFAULT_MASTER = "local[2]"
_MASTER = re.compile(
    r"^(local(\[(\*|[1-9][0-9]*)(,[0-9]+)?\])?"
    r"|spark://[A-Za-z0-9.\-]+:[0-9]+(,[A-Za-z0-9.\-]+:[0-9]+)*"
    r"|yarn|k8s://\S+)$"
)
_LOW_MASK = (1 << LIMB_BITS) - 1
_LOG_CONFIG = Path(__file__).with_name("spark-log4j2.properties")
DEFAULT_DRIVER_MEMORY = "4g"
_LOCK = threading.Lock()


def _pyspark() -> Any:
    try:
        import pyspark  # noqa: PLC0415 - optional
    except ImportError as exc:
        raise MissingDependencyError(
            "the Spark engine needs pyspark",
            expected="pyspark 4 installed (the spark extra)",
            got="no module named pyspark",
            fix="pip install 'veil[spark]'",
        ) from exc
    return pyspark


def is_spark_frame(frame: Any) -> bool:
    """A PySpark DataFrame (classic or Spark Connect), recognised without importing pyspark."""
    return type(frame).__module__.startswith("pyspark.") and hasattr(frame, "groupBy")


def _java_problem() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        return None if os.access(java, os.X_OK) else f"JAVA_HOME={home} has no bin/java"
    return None if shutil.which("java") else "no java on PATH and JAVA_HOME is not set"


def spark_session(
    master: str = DEFAULT_MASTER, *, driver_memory: str = DEFAULT_DRIVER_MEMORY
) -> SparkSession:
    """The Spark session for ``master`` (``local[2]``, ``spark://host:7077``...), started once.

    Raises:
        EngineError: Java is missing, or Spark could not start or reach ``master``;
            the message names which.
    """
    if not isinstance(master, str) or not _MASTER.match(master):
        raise EngineError(
            "Spark cannot start: the master URL is not one Spark accepts",
            expected="local, local[N], local[*], spark://host:port, yarn or k8s://...",
            got=repr(master),
            fix="pass --spark-master local[2] (this machine) or your cluster's spark://host:7077",
        )
    _pyspark()
    from pyspark.sql import SparkSession  # noqa: PLC0415

    # PySpark warns about pandas 3 on every conversion; Veil hands it Arrow and plain frames.
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )

    with _LOCK:
        active = SparkSession.getActiveSession()
        if active is not None:
            current = active.sparkContext.master
            if current != master:
                raise EngineError(
                    "a Spark session for another master is already running in this process",
                    expected=f"master {master}",
                    got=f"master {current}",
                    fix="stop it (spark.stop()) or query with the same --spark-master",
                )
            return active
        if master.startswith("local"):
            # Local mode listens on this machine only (and says nothing about the hostname).
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            problem = _java_problem()
            if problem is not None:
                raise EngineError(
                    "Spark cannot start: it needs Java 17 or later",
                    expected="a java executable (JAVA_HOME/bin/java, or java on PATH)",
                    got=problem,
                    fix="install a JDK or JRE 17+ (Debian: apt-get install openjdk-17-jre-headless) "
                    "or set JAVA_HOME",
                )
        builder = (
            SparkSession.builder.master(master)
            .appName("veil")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", driver_memory)
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            # Python workers (a user's UDFs) run this interpreter, which has pyspark.
            .config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", sys.executable))
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_LOG_CONFIG}")
        )
        cores = _local_cores(master)
        if cores is not None:
            # Only the aggregated groups are shuffled: one partition per core, not Spark's 200.
            builder = builder.config("spark.sql.shuffle.partitions", str(cores))
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # Py4J, PySparkRuntimeError, SparkException: all say "no session"
            text = str(exc).strip().splitlines()
            raise EngineError(
                "Spark could not start",
                expected=f"a Spark session for master '{master}' (Java 17+; local[N] or a "
                "reachable spark://host:port)",
                got=text[0][:300] if text else type(exc).__name__,
                fix="check JAVA_HOME/java -version and the --spark-master URL",
            ) from exc
        session.sparkContext.setLogLevel("ERROR")
        return session


def _local_cores(master: str) -> int | None:
    """The worker threads of a ``local[N]`` master (``None`` for a cluster)."""
    if not master.startswith("local"):
        return None
    inside = master[len("local[") : -1].split(",", maxsplit=1)[0] if "[" in master else "1"
    return os.cpu_count() or 1 if inside == "*" else int(inside)


class _SparkBuilder(ExprBuilder):
    def __init__(self) -> None:
        from pyspark.sql import functions as F  # noqa: N812, PLC0415

        self.F = F

    def col(self, name: str) -> Any:
        return self.F.col(name)

    def lit(self, value: Any) -> Any:
        return self.F.lit(value)

    def is_in(self, column: Any, values: list[Any]) -> Any:
        return column.isin(values)

    def between(self, column: Any, low: Any, high: Any) -> Any:
        return column.between(self.lit(low), self.lit(high))

    def is_null(self, column: Any) -> Any:
        return column.isNull()


def spark_dtypes(frame: DataFrame) -> dict[str, pl.DataType]:
    """The frame's column types as the Polars types the planner checks (from the schema only)."""
    from pyspark.sql import types as T  # noqa: N812, PLC0415

    out: dict[str, pl.DataType] = {}
    for f in frame.schema.fields:
        t = f.dataType
        if isinstance(t, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
            out[f.name] = pl.Int64()
        elif isinstance(t, T.FloatType | T.DoubleType | T.DecimalType):
            out[f.name] = pl.Float64()
        elif isinstance(t, T.StringType | T.CharType | T.VarcharType):
            out[f.name] = pl.String()
        elif isinstance(t, T.BooleanType):
            out[f.name] = pl.Boolean()
        elif isinstance(t, T.DateType):
            out[f.name] = pl.Date()
        elif isinstance(t, T.TimestampType | T.TimestampNTZType):
            out[f.name] = pl.Datetime()
        else:
            out[f.name] = pl.Binary()  # neither numeric nor text: refused where it matters
    return out


def _hash(F: Any, fields: list[Column]) -> Any:  # noqa: N803
    """XXH64 (seed 42) of the fields joined as text (Polars computes the same, ``_execute``)."""
    text = F.concat_ws(
        KEY_SEPARATOR, *(F.coalesce(f.cast("string"), F.lit(NULL_TOKEN)) for f in fields)
    )
    assert HASH_SEED == 42  # noqa: PLR2004, S101 - Spark's xxhash64 seed, not configurable
    return F.xxhash64(text)


def _category_strings(F: Any, column: str, dtype: pl.DataType) -> Any:  # noqa: N803
    col = F.col(column)
    if dtype == pl.String:
        return col
    if dtype.is_float():
        whole = ~F.isnan(col) & (F.abs(col) < 2.0**53) & (col == F.round(col, 0))
        return F.when(whole, col.cast("long").cast("string")).otherwise(col.cast("string"))
    return col.cast("string")


def _restrict_to_keys(
    plan: QueryPlan, df: DataFrame, dtypes: Mapping[str, pl.DataType]
) -> DataFrame:
    """Keep the rows whose group is a declared key (null-safe), as the Polars engine does."""
    F = _F()  # noqa: N806
    spec = plan.spec
    assert plan.keys is not None  # noqa: S101
    if all(isinstance(v, str) for key in plan.keys for v in key):
        df = df.select(
            *(
                _category_strings(F, c, dtypes[c]).alias(c) if c in spec.group_by else F.col(c)
                for c in df.columns
            )
        )
    session = df.sparkSession
    names = [f"__veil_key{i}" for i in range(len(spec.group_by))]
    column_types = dict(df.dtypes)
    schema = ", ".join(f"{n} {column_types[c]}" for n, c in zip(names, spec.group_by, strict=True))
    keys = session.createDataFrame([tuple(k) for k in plan.keys], schema=schema)
    cond = None
    for n, c in zip(names, spec.group_by, strict=True):
        part = df[c].eqNullSafe(keys[n])
        cond = part if cond is None else cond & part
    return df.join(F.broadcast(keys), on=cond, how="left_semi")


def _F() -> Any:  # noqa: N802
    from pyspark.sql import functions as F  # noqa: N812, PLC0415

    return F


def _bound(plan: QueryPlan, df: DataFrame, unit: str, salt: int) -> DataFrame:
    """Each person's random subset: at most max_groups groups, max_rows rows per group.

    The same keys, hash and ranks as the Polars engine (``_execute._prepare``).
    """
    from pyspark.sql import Window  # noqa: PLC0415

    F = _F()  # noqa: N806
    spec = plan.spec
    df = df.filter(F.col(unit).isNotNull())
    l0, linf = plan.contribution.max_groups, plan.contribution.max_rows
    keyed = [F.lit(str(salt)), F.col(unit)]
    groups = [F.col(g) for g in spec.group_by]
    if spec.group_by:
        df = df.withColumn("__veil_gh", _hash(F, [*keyed, *groups]))
        df = df.withColumn(
            "__veil_gr", F.dense_rank().over(Window.partitionBy(unit).orderBy("__veil_gh"))
        ).filter(F.col("__veil_gr") <= l0)
        by = [unit, *spec.group_by]
    else:
        by = [unit]
    position = F.row_number().over(Window.partitionBy(*by).orderBy("__veil_row")) - 1
    df = df.withColumn("__veil_i", position)
    df = df.withColumn("__veil_rh", _hash(F, [*keyed, *groups, F.col("__veil_i")]))
    rank = F.row_number().over(Window.partitionBy(*by).orderBy("__veil_rh"))
    return df.withColumn("__veil_rr", rank).filter(F.col("__veil_rr") <= linf)


def _prepare(  # noqa: C901 - one step each
    plan: QueryPlan, df: DataFrame, salt: int
) -> tuple[DataFrame, dict[str, dict[str, Column]]]:
    """The rows to aggregate, and per measured column the fixed-point terms to sum, by name.

    The summed terms stay expressions inside the aggregation rather than added
    columns: each added column is one more analysis of the plan on the driver
    (tens of milliseconds a query), and Spark computes them the same either way.
    """
    from pyspark.ml.feature import Bucketizer  # noqa: PLC0415

    F = _F()  # noqa: N806
    schema, spec = plan.schema, plan.spec
    dtypes = spark_dtypes(df)
    unit = schema.privacy_unit
    if unit is not None:
        # Each row's place in the input, taken before any filter: the order of a person's
        # rows (as Polars sees them in frame order).
        df = df.withColumn("__veil_row", F.monotonically_increasing_id())
    if spec.where is not None:
        df = df.filter(predicate(parse_where(spec.where), dtypes, _SparkBuilder()))
    if plan.keys is not None and spec.group_by:
        if unit is not None:
            # As in Polars: with a privacy unit, rows outside the keys are dropped before the
            # bounding, so that they do not use up a person's quota of groups. Without one
            # their groups are dropped on the driver, when the groups are aligned with the keys.
            df = _restrict_to_keys(plan, df, dtypes)
        elif all(isinstance(v, str) for key in plan.keys for v in key):
            as_text = {
                c: _category_strings(F, c, dtypes[c])
                for c in spec.group_by
                if dtypes[c] != pl.String
            }
            if as_text:
                df = df.withColumns(as_text)
    if unit is not None:
        df = _bound(plan, df, unit, salt)
    sums: dict[str, dict[str, Column]] = {}
    for column, fp in fixed_points(plan).items():
        x = F.col(column).cast("double")
        # greatest/least skip a missing value (so it becomes lo) and order NaN above every
        # number (so it becomes hi): as Polars' min/max_horizontal.
        centred = F.least(F.greatest(x, F.lit(fp.lo)), F.lit(fp.hi)) - F.lit(fp.mid)
        units = (centred * F.lit(fp.scale)).cast("long")
        # high = floor(units / 2**22) (an arithmetic shift), low = units - high * 2**22 (the
        # low bits, always >= 0): what Polars computes with // and -.
        terms = sums[column] = {
            f"__th_{column}": F.shiftright(units, LIMB_BITS),
            f"__tl_{column}": units.bitwiseAND(F.lit(_LOW_MASK)),
        }
        if any(c.kind == "csumsq" and c.column == column for c in plan.components):
            squares = ((centred * centred) * F.lit(fp.scale_sq)).cast("long")
            terms[f"__sh_{column}"] = F.shiftright(squares, LIMB_BITS)
            terms[f"__sl_{column}"] = squares.bitwiseAND(F.lit(_LOW_MASK))
    added: dict[str, Column] = {}
    bucket_inputs = []
    for column in quantile_columns(plan):
        lo, hi = declared_bounds(plan.schema, column, "a quantile")
        x = F.coalesce(F.col(column).cast("double"), F.lit((lo + hi) / 2))
        added[f"__veil_x_{column}"] = F.least(F.greatest(x, F.lit(lo)), F.lit(hi))
        bucket_inputs.append(column)
    if added:
        df = df.withColumns(added)
    for column in bucket_inputs:
        # Candidate k = the number of grid midpoints <= the value (Bucketizer's bucket with
        # splits [-inf, mids..., inf]: each bucket [split_k, split_k+1) ), as Polars' search.
        splits = [float("-inf"), *quantile_mids(plan, column), float("inf")]
        df = Bucketizer(
            splits=splits, inputCol=f"__veil_x_{column}", outputCol=f"__veil_kd_{column}"
        ).transform(df)
        df = df.withColumn(f"__veil_k_{column}", F.col(f"__veil_kd_{column}").cast("long"))
    return df, sums


def spark_bins(  # noqa: PLR0917 - the Polars path's arguments, in its order
    frame: DataFrame, column: str, bin_col: str, lo: float, hi: float, labels: tuple[str, ...]
) -> DataFrame:
    """``frame`` with ``bin_col``: the equal-width bin label of ``column`` (as the Polars path)."""
    F = _F()  # noqa: N806
    bins = len(labels)
    values = F.col(column).cast("double")
    values = F.when(F.isnan(values), F.lit(None)).otherwise(values)
    clipped = F.least(F.greatest(values, F.lit(float(lo))), F.lit(float(hi)))
    index = F.floor((clipped - F.lit(float(lo))) / F.lit(float(hi - lo)) * F.lit(float(bins)))
    index = F.least(F.greatest(index, F.lit(0)), F.lit(bins - 1)).cast("int")
    label = F.element_at(F.array(*(F.lit(x) for x in labels)), index + 1)
    return frame.withColumn(bin_col, F.when(values.isNull(), F.lit(None)).otherwise(label))


def _to_polars(df: DataFrame) -> pl.DataFrame:
    table = df.toArrow()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # noqa: S101
    return frame


def spark_aggregate(plan: QueryPlan, frame: DataFrame, salt: int) -> Exact:
    """The aggregates of ``frame`` computed on Spark; only the groups reach the driver.

    Raises:
        EngineError: A Spark job failed (an executor died, a file vanished):
            nothing is released, and the caller's charge stands.
    """
    F = _F()  # noqa: N806
    check_needed_columns(plan, list(frame.columns))
    spec = plan.spec
    by = list(spec.group_by)
    df, sums = _prepare(plan, frame, salt)
    aggs = [F.count(F.lit(1)).cast("long").alias("__n")]
    for column in measured_columns(plan):
        aggs.append((F.count(F.lit(1)) - F.count(column)).cast("long").alias(f"__nn_{column}"))
        aggs += [F.sum(term).alias(name) for name, term in sums[column].items()]
    hist_columns = quantile_columns(plan)
    grouped = df.groupBy(*by).agg(*aggs) if by else df.agg(*aggs)
    hists = {
        column: df.groupBy(*by, f"__veil_k_{column}")
        .agg(F.count(F.lit(1)).cast("long").alias("__hn"))
        .withColumnRenamed(f"__veil_k_{column}", "__k")
        for column in hist_columns
    }
    # Only the actions run on the executors: a failure there is the engine's, after the charge.
    try:
        groups = _to_polars(grouped)
        histograms = {column: _to_polars(h) for column, h in hists.items()}
    except Exception as exc:
        if not _is_spark_error(exc):
            raise
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise EngineError(
            "the Spark job failed during the query: nothing was released, and the charge "
            "stands (the job may have computed on the rows)",
            expected="the query's Spark job to finish",
            got=(lines[0][:300] if lines else type(exc).__name__),
            fix="see the Spark logs; the budget already spent is not refunded",
            details={"engine": "spark"},
        ) from exc
    fill = {c: 0 for c in groups.columns if c.startswith("__")}
    groups = groups.with_columns(pl.col(c).fill_null(v) for c, v in fill.items())
    groups = _join_limbs(groups, plan)
    return Exact(groups=groups, histograms=histograms, engine="spark")


def _join_limbs(groups: pl.DataFrame, plan: QueryPlan) -> pl.DataFrame:
    """Each pair of limb sums as the one 128-bit sum the Polars engine returns (same columns)."""
    by = list(plan.spec.group_by)
    out = [*by, "__n"]
    joined: dict[str, pl.Series] = {}
    for column in measured_columns(plan):
        out.append(f"__nn_{column}")
        for part in ("t", "s"):
            high, low = f"__{part}h_{column}", f"__{part}l_{column}"
            if high not in groups.columns:
                continue
            name = f"__{part}_{column}"
            values = [
                (int(h) << LIMB_BITS) + int(lo)
                for h, lo in zip(groups.get_column(high), groups.get_column(low), strict=True)
            ]
            joined[name] = pl.Series(name, values, dtype=pl.Int128)
            out.append(name)
    return groups.with_columns(**joined).select(out)


def _is_spark_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("pyspark", "py4j")) or "Py4J" in type(exc).__name__

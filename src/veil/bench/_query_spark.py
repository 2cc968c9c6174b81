"""``veil bench query --engine spark``: the Spark engine against the Polars engine.

Three measurements, each in a fresh child process (as the Polars benchmark):

* **Identity.** A seeded table is written once to a Parquet file; Polars
  (``pl.scan_parquet``) and Spark (``spark.read.parquet``) read that same
  file. For each query below, ``aggregate(plan, frame, salt=seed)`` runs on
  both engines and the two :class:`~veil.dp._engine.Exact` results are
  compared bit for bit (groups and histograms, sorted by their keys); then
  ``release(plan, exact, noise=BenchNoise(seed))`` runs on each, and every
  released cell (value, scale, interval...) is compared exactly.
* **Time.** The benchmark query of ``veil bench query`` (COUNT, SUM, AVG per
  ``g``) through ``PrivateFrame(...).query`` on each engine, from the same
  Parquet file to the released answer, after ``WARMUPS`` untimed runs each,
  round-robin, median of the repeats;
  raw (non-private) Polars and Spark group-bys on the same file alongside.
  Spark's session start-up is timed apart.
* **Large.** A ``large_rows`` table written in chunks of 10M rows to Parquet
  files, queried on Spark only; wall time, time per 10M rows, the peak RSS of
  the Spark JVM and of the Python driver, and the rows that reached the
  driver (the aggregated groups).

The tables (seeded NumPy data, not privacy noise): ``person_id`` unique;
``user_id`` uniform in ``[0, rows / 4)``, so about four rows per user (the
privacy unit of the bounding query, whose contribution bound of 2 groups and
2 rows per group drops rows); ``g`` one of ``groups`` declared labels (known
keys); ``u`` ``"u<k>"`` with ``k`` Zipf(2)-distributed (undeclared: partition
selection drops its rare values); ``x`` uniform in [0, 100].
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from veil._memory import peak_resident_mb
from veil._validate import whole_number
from veil.bench._query_child import BOUNDS, EPSILON, QUERY_SQL, group_labels
from veil.bench._result import BenchResult, Column, Note, Table, View, fixed, ratio, verdict
from veil.dp import NoiseSource
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback

__all__ = ["BenchNoise", "SparkQueryResult", "run_spark_query_benchmark", "spark_query_table"]

CHILD = "veil.bench._query_spark"
"""The module whose ``_child_main`` runs this benchmark's subprocesses."""

WARMUPS = 3
"""Untimed runs of each engine before the timed ones."""

CHUNK_ROWS = 10_000_000
UNIT_ROWS = 4  # rows per user_id on average
MAX_GROUPS, MAX_ROWS = 2, 2  # the bounding query's contribution bound
SELECTION_DELTA = 1e-6
TIME_GOAL = 3.0  # Spark within 3x the Polars engine
# (name, SQL, privacy unit, delta); every query at epsilon 1.
IDENTITY_QUERIES: tuple[tuple[str, str, str | None, float], ...] = (
    ("count", "SELECT COUNT(*) FROM t", None, 0.0),
    ("sum", "SELECT SUM(x) FROM t", None, 0.0),
    ("mean", "SELECT AVG(x) FROM t", None, 0.0),
    ("median", "SELECT MEDIAN(x) FROM t", None, 0.0),
    (
        "group-by, known keys",
        "SELECT g, COUNT(*), SUM(x), AVG(x), MEDIAN(x) FROM t GROUP BY g",
        None,
        0.0,
    ),
    (
        "group-by, unknown keys (partition selection)",
        "SELECT u, COUNT(*), SUM(x), AVG(x) FROM t GROUP BY u",
        None,
        SELECTION_DELTA,
    ),
    (
        f"privacy unit user_id (max_groups {MAX_GROUPS}, max_rows {MAX_ROWS}; bounding drops rows)",
        "SELECT g, COUNT(*), SUM(x), AVG(x) FROM t WHERE x > 10 GROUP BY g",
        "user_id",
        0.0,
    ),
)


class BenchNoise(NoiseSource):
    """Seeded NumPy noise: **for this benchmark only, never used for a release**.

    Two engines that hand :func:`veil.dp._execute.release` the same exact
    aggregates must release the same values; with OpenDP's samplers (the only
    source a release uses) two runs differ by design, so the comparison uses
    this reproducible stand-in. It is not a secure sampler (floating-point
    Laplace, NumPy's generator): nothing released with it is private.
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0xBE7C4])

    def laplace(self, values: np.ndarray, scale: float, *, integer: bool) -> np.ndarray:
        arr = np.asarray(values)
        if integer:
            p = 1.0 - math.exp(-1.0 / scale)
            steps = self._rng.geometric(p, size=arr.shape) - self._rng.geometric(p, size=arr.shape)
            return arr.astype(np.int64) + steps
        return arr.astype(np.float64) + self._rng.laplace(0.0, scale, size=arr.shape)

    def gaussian(self, values: np.ndarray, sigma: float) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        return arr + self._rng.normal(0.0, sigma, size=arr.shape)

    def noisy_max(self, scores: np.ndarray, scale: float) -> int:
        arr = np.asarray(scores, dtype=np.float64)
        return int(np.argmax(arr + self._rng.exponential(scale, size=arr.shape)))


# ---------------------------------------------------------------------------- the tables


def spark_query_table(rows: int, groups: int, seed: int, chunk: int = 0) -> pl.DataFrame:
    """Rows ``[chunk * CHUNK_ROWS, ...)`` of the benchmark's table (see the module docstring).

    ``rows`` is the whole table's size (it sets the number of users); a chunk
    has ``min(CHUNK_ROWS, rows - start)`` rows. Deterministic in its arguments.
    """
    start = chunk * CHUNK_ROWS
    n = max(0, min(CHUNK_ROWS, rows - start))
    rng = np.random.default_rng([seed, chunk])
    labels = pl.Series("g", group_labels(groups), dtype=pl.String)
    return pl.DataFrame(
        {
            "person_id": pl.int_range(start, start + n, dtype=pl.Int64, eager=True),
            "user_id": rng.integers(0, max(1, rows // UNIT_ROWS), size=n, dtype=np.int64),
            "g": labels.gather(rng.integers(0, groups, size=n)),
            "u": pl.Series(np.minimum(rng.zipf(2.0, size=n), 1_000_000), dtype=pl.Int64),
            "x": rng.uniform(BOUNDS[0], BOUNDS[1], size=n),
        }
    ).with_columns(pl.format("u{}", pl.col("u")).alias("u"))


def _schema(groups: int, unit: str | None) -> Any:
    from veil.data import ColumnSpec, PrivacySchema  # noqa: PLC0415

    columns = (
        ColumnSpec("person_id", "identifier"),
        ColumnSpec("user_id", "identifier"),
        ColumnSpec("g", "categorical", categories=tuple(group_labels(groups))),
        ColumnSpec("u", "categorical"),
        ColumnSpec("x", "numeric", bounds=BOUNDS),
    )
    if unit is None:
        return PrivacySchema(columns=columns, privacy_unit=None)
    return PrivacySchema(
        columns=columns, privacy_unit=unit, max_groups=MAX_GROUPS, max_rows=MAX_ROWS
    )


def _write_chunks(folder: Path, rows: int, groups: int, seed: int, columns: list[str]) -> int:
    """Write the table in ``CHUNK_ROWS`` files under ``folder``; the in-memory size estimate."""
    folder.mkdir(parents=True, exist_ok=True)
    estimate = 0
    for chunk in range(math.ceil(rows / CHUNK_ROWS)):
        frame = spark_query_table(rows, groups, seed, chunk).select(columns)
        estimate += int(frame.estimated_size())
        frame.write_parquet(folder / f"part-{chunk:05d}.parquet")
        del frame
    return estimate


# ---------------------------------------------------------------------------- measuring


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    keys = [c for c in frame.columns if not c.startswith("__")] + (
        ["__k"] if "__k" in frame.columns else []
    )
    return frame.sort(keys, nulls_last=True) if keys else frame


def _exact_equal(a: Any, b: Any) -> tuple[bool, list[str]]:
    """Bit-for-bit equality of two ``Exact`` (rows sorted by their keys); the differences."""
    problems = []
    if not _sorted(a.groups).equals(_sorted(b.groups)):
        problems.append("groups differ")
    if set(a.histograms) != set(b.histograms):
        problems.append("histogram columns differ")
    problems.extend(
        f"histogram of {column} differs"
        for column in sorted(set(a.histograms) & set(b.histograms))
        if not _sorted(a.histograms[column]).equals(_sorted(b.histograms[column]))
    )
    return not problems, problems


def _collected(exact: Any) -> int:
    """Rows the engine handed the driver: aggregated groups plus histogram rows."""
    return int(exact.groups.height + sum(h.height for h in exact.histograms.values()))


def _compare_released(a: Any, b: Any, group_by: tuple[str, ...]) -> tuple[int, int, list[str]]:
    """Cells compared, cells that differ (any field), and a few examples."""
    rows_a, rows_b = list(a.rows), list(b.rows)
    mismatches, cells, examples = 0, 0, []
    if len(rows_a) != len(rows_b):
        examples.append(f"{len(rows_a)} rows on Polars, {len(rows_b)} on Spark")
    for ra, rb in zip(rows_a, rows_b, strict=False):
        for column in a.columns:
            if column in group_by:
                continue
            cells += 1
            if ra.get(column) != rb.get(column) or any(ra.get(g) != rb.get(g) for g in group_by):
                mismatches += 1
                if len(examples) < 3:  # noqa: PLR2004
                    examples.append(f"{column}: {ra.get(column)} != {rb.get(column)}")
    mismatches += abs(len(rows_a) - len(rows_b)) * max(1, len(a.columns) - len(group_by))
    return cells, mismatches, examples


def _identity(job: dict[str, Any], path: str, spark: Any) -> list[dict[str, Any]]:
    from veil.dp import (  # noqa: PLC0415
        PrivateFrame,
        aggregate,
        release,
    )
    from veil.ledger import Budget  # noqa: PLC0415

    seed, groups = job["seed"], job["groups"]
    out = []
    for name, sql, unit, delta in IDENTITY_QUERIES:
        lf = pl.scan_parquet(path)
        sdf = spark.read.parquet(path)
        private = PrivateFrame(
            lf, _schema(groups, unit), budget=Budget(epsilon=EPSILON, delta=delta or 0.0)
        )
        plan = private.plan(sql, epsilon=EPSILON, delta=delta)
        exact_p, polars_s = _timed(functools.partial(aggregate, plan, lf, salt=seed))
        exact_s, spark_s = _timed(functools.partial(aggregate, plan, sdf, salt=seed))
        same, problems = _exact_equal(exact_p, exact_s)
        released_p = release(plan, exact_p, noise=BenchNoise(seed))
        released_s = release(plan, exact_s, noise=BenchNoise(seed))
        cells, mismatches, examples = _compare_released(
            released_p, released_s, tuple(plan.spec.group_by)
        )
        out.append(
            {
                "query": name,
                "sql": sql,
                "privacy_unit": unit,
                "delta": delta,
                "exact_identical": same,
                "exact_differences": problems,
                "released_rows": len(released_p.rows),
                "cells_compared": cells,
                "mismatches": mismatches,
                "mismatch_examples": examples,
                "rows_counted": int(exact_p.groups["__n"].sum()),
                "rows_collected_polars": _collected(exact_p),
                "rows_collected_spark": _collected(exact_s),
                "aggregate_s": {"polars": polars_s, "spark": spark_s},
            }
        )
    return out


def _run_veil(frame: Any, schema: Any) -> Any:
    from veil.dp import PrivateFrame  # noqa: PLC0415
    from veil.ledger import Budget  # noqa: PLC0415

    return PrivateFrame(frame, schema, budget=Budget(epsilon=EPSILON)).query(
        QUERY_SQL, epsilon=EPSILON
    )


def _timing(job: dict[str, Any], path: str, spark: Any) -> dict[str, Any]:
    from pyspark.sql import functions as F  # noqa: N812, PLC0415

    from veil.bench._query_child import _progress  # noqa: PLC0415

    schema = _schema(job["groups"], None)
    runners: dict[str, Callable[[], Any]] = {
        "veil-polars": lambda: _run_veil(pl.scan_parquet(path), schema),
        "veil-spark": lambda: _run_veil(spark.read.parquet(path), schema),
        "raw-polars": lambda: (
            pl.scan_parquet(path)
            .group_by("g")
            .agg(pl.len(), pl.col("x").sum().alias("sum_x"), pl.col("x").mean().alias("mean_x"))
            .collect()
        ),
        "raw-spark": lambda: (
            spark.read.parquet(path)
            .groupBy("g")
            .agg(F.count(F.lit(1)), F.sum("x"), F.avg("x"))
            .toArrow()
        ),
    }
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    # Warm-up: WARMUPS untimed runs each on the same file (Spark's JVM compiles its code
    # paths over the first runs; timing the first run would measure the JIT, not the engine).
    for _ in range(WARMUPS):
        for name in names:
            runners[name]()
    repeats = job["repeats"]
    task = f"time the query on both engines ({job['rows']:,} rows)"
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            _, seconds = _timed(runners[name])
            times[name].append(seconds)
        _progress(task, r + 1, repeats, "repeats")
    out: dict[str, Any] = {
        name: {"times_s": t, "median_s": statistics.median(t), "min_s": min(t)}
        for name, t in times.items()
    }
    # One more run of each engine in phases (not in the times): where Veil's time goes.
    for name, frame in (("veil-polars", pl.scan_parquet), ("veil-spark", spark.read.parquet)):
        out[name]["phases_s"] = _phases(frame, path, schema)
    return out


def _phases(read: Callable[[str], Any], path: str, schema: Any) -> dict[str, float]:
    from veil.dp import (  # noqa: PLC0415
        PrivateFrame,
        aggregate,
        release,
    )
    from veil.ledger import Budget  # noqa: PLC0415

    frame, read_s = _timed(lambda: read(path))
    plan, plan_s = _timed(
        lambda: PrivateFrame(frame, schema, budget=Budget(epsilon=EPSILON)).plan(
            QUERY_SQL, epsilon=EPSILON
        )
    )
    exact, aggregate_s = _timed(lambda: aggregate(plan, frame))
    _, release_s = _timed(lambda: release(plan, exact))
    return {"read": read_s, "plan": plan_s, "aggregate": aggregate_s, "release": release_s}


def _jvm_pid(spark: Any) -> int | None:
    """The Spark JVM's pid: Py4J's launched process, else a java child of this process."""
    with contextlib.suppress(AttributeError):
        return int(spark.sparkContext._gateway.proc.pid)  # noqa: SLF001
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text(encoding="ascii")
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me and "java" in stat.split("(", 1)[1]:
                return int(entry.name)
    return None


def _spark_main(job: dict[str, Any]) -> dict[str, Any]:
    """Child: write the Parquet file, start Spark, check identity, time both engines."""
    from veil.bench._query_child import _progress  # noqa: PLC0415
    from veil.dp import spark_session  # noqa: PLC0415

    folder = Path(job["folder"])
    path = str(folder / "table.parquet")
    _progress("write the Parquet file", 0, 1, "files")
    table = spark_query_table(job["rows"], job["groups"], job["seed"])
    table.write_parquet(path)
    distinct = {c: int(table[c].n_unique()) for c in ("g", "u", "user_id")}
    del table
    _progress("write the Parquet file", 1, 1, "files")
    spark, startup = _timed(lambda: spark_session(job["master"]))
    _progress("identity: Polars and Spark", 0, 1, "checks")
    identity = _identity(job, path, spark)
    _progress("identity: Polars and Spark", 1, 1, "checks")
    timing = _timing(job, path, spark)
    spark.stop()
    return {
        "startup_s": startup,
        "identity": identity,
        "timing": timing,
        "distinct": distinct,
        "file_mb": Path(path).stat().st_size / 2**20,
    }


def _write_main(job: dict[str, Any]) -> dict[str, Any]:
    """Child: write the large table in ``CHUNK_ROWS`` Parquet files (its own process)."""
    from veil.bench._query_child import _progress  # noqa: PLC0415

    rows = job["large_rows"]
    folder = Path(job["folder"]) / "large"
    _progress(f"write {rows:,} rows to Parquet", 0, 1, "tables")
    estimate, write_s = _timed(
        lambda: _write_chunks(folder, rows, job["groups"], job["seed"], ["person_id", "g", "x"])
    )
    _progress(f"write {rows:,} rows to Parquet", 1, 1, "tables")
    return {
        "files": len(list(folder.iterdir())),
        "parquet_mb": sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
        "write_s": write_s,
        "polars_in_memory_estimate_gb": estimate / 2**30,
    }


def _large_main(job: dict[str, Any]) -> dict[str, Any]:
    """Child: the benchmark query on Spark alone, on the files ``_write_main`` wrote."""
    from veil.bench._query_child import _progress  # noqa: PLC0415
    from veil.dp import (  # noqa: PLC0415
        PrivateFrame,
        aggregate,
        release,
        spark_session,
    )
    from veil.ledger import Budget  # noqa: PLC0415

    rows, groups = job["large_rows"], job["groups"]
    folder = Path(job["folder"]) / "large"
    spark, startup = _timed(lambda: spark_session(job["master"]))
    jvm = _jvm_pid(spark)
    schema = _schema(groups, None)
    _progress(f"Spark on {rows:,} rows", 0, 1, "queries")
    start = time.perf_counter()
    frame = spark.read.parquet(str(folder))
    plan = PrivateFrame(frame, schema, budget=Budget(epsilon=EPSILON)).plan(
        QUERY_SQL, epsilon=EPSILON
    )
    exact, aggregate_s = _timed(lambda: aggregate(plan, frame))
    result, release_s = _timed(lambda: release(plan, exact))
    wall = time.perf_counter() - start
    _progress(f"Spark on {rows:,} rows", 1, 1, "queries")
    jvm_peak = peak_resident_mb(jvm) if jvm is not None else None
    python_peak = peak_resident_mb()
    spark.stop()
    return {
        "rows": rows,
        "startup_s": startup,
        "wall_s": wall,
        "aggregate_s": aggregate_s,
        "release_s": release_s,
        "s_per_10m_rows": wall / rows * 1e7,
        "jvm_pid_found": jvm is not None,
        "jvm_peak_rss_mb": jvm_peak,
        "python_peak_rss_mb": python_peak,
        "rows_collected": _collected(exact),
        "groups_released": len(result.rows),
    }


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True, kw_only=True)
class SparkQueryResult(BenchResult):
    """``veil bench query --engine spark``: identity, time against Polars, a large table."""

    benchmark: str = "query-spark"
    query: str
    date: str
    parameters: Mapping[str, Any]
    table: Mapping[str, Any]
    machine: Mapping[str, Any]
    versions: Mapping[str, str | None]
    method: tuple[str, ...]
    startup_s: float | None
    identity: tuple[Mapping[str, Any], ...]
    timing: Mapping[str, Any]
    large: Mapping[str, Any] | None
    errors: tuple[str, ...]
    goals: Mapping[str, Any]

    def view(self) -> View:
        """Identity per query, times of both engines, the large run, the goals."""
        p, goals = self.parameters, self.goals
        identity = Table(
            title=f"Identity, Polars vs Spark ({p['rows']:,} rows, one Parquet file)",
            columns=(
                Column("query", justify="left"),
                Column("exact equal"),
                Column("cells"),
                Column("mismatches"),
                Column("rows to driver"),
            ),
            rows=tuple(
                (
                    r["query"],
                    "yes" if r["exact_identical"] else "NO",
                    r["cells_compared"],
                    r["mismatches"],
                    r["rows_collected_spark"],
                )
                for r in self.identity
            ),
        )
        base = (self.timing.get("veil-polars") or {}).get("median_s")
        timing = Table(
            title=f"{self.query}: {p['rows']:,} rows from Parquet, {p['repeats']} repeat(s)",
            columns=(
                Column("engine", justify="left"),
                Column("median s", fixed(".3f")),
                Column("min s", fixed(".3f")),
                Column("x veil-polars", ratio),
            ),
            rows=tuple(
                (name, t["median_s"], t["min_s"], t["median_s"] / base if base else None)
                for name, t in self.timing.items()
            ),
        )
        notes = [
            Note(f"· Spark session start-up (not in the times): {self.startup_s or 0:.1f} s"),
            Note(f"· master {p['spark_master']}; identity noise: BenchNoise (benchmark only)"),
        ]
        for name, t in self.timing.items():
            if t.get("phases_s"):
                parts = ", ".join(f"{k} {v:.3f}" for k, v in t["phases_s"].items())
                notes.append(Note(f"· {name}, one run in phases (s): {parts}"))
        if self.large:
            lg = self.large
            jvm, py = lg.get("jvm_peak_rss_mb"), lg.get("python_peak_rss_mb")
            notes.append(
                Note(
                    f"· large: {lg['rows']:,} rows ({lg['parquet_mb']:,.0f} MB Parquet) on Spark: "
                    f"{lg['wall_s']:.1f} s ({lg['s_per_10m_rows']:.2f} s per 10M rows); peak RSS "
                    f"JVM {jvm or 0:,.0f} MB, Python driver {py or 0:,.0f} MB; "
                    f"{lg['rows_collected']} rows reached the driver"
                )
            )
            notes.append(
                Note(
                    "· large: Polars not run on it (an in-memory table of "
                    f"~{lg['polars_in_memory_estimate_gb']:.1f} GB estimated; the point is "
                    "Spark's scale)"
                )
            )
        notes.extend(Note(f"· error: {e}") for e in self.errors)
        notes.append(
            Note(
                f"· goals: identical releases {verdict(goals['identical'])}; Spark within "
                f"{TIME_GOAL:g}x Polars {verdict(goals['spark_within_3x_polars'])}; only the "
                f"aggregated groups reach the driver {verdict(goals['driver_gets_groups_only'])}"
            )
        )
        return (identity, timing, *notes)


def _check(rows: int, large_rows: int, groups: int, repeats: int, master: str) -> None:
    for name, value in (("rows", rows), ("groups", groups), ("repeats", repeats)):
        whole_number(value, name)
    if not isinstance(large_rows, int) or large_rows < 0:
        raise InvalidInputError(
            "--large-rows must be a whole number, 0 to skip the large table",
            expected="an integer >= 0",
            got=repr(large_rows),
        )
    if not master.strip():
        raise InvalidInputError(
            "--spark-master is empty", expected="local[2] or spark://host:port", got="''"
        )


def _goals(
    identity: list[dict[str, Any]], timing: Mapping[str, Any], large: Mapping[str, Any] | None
) -> dict[str, Any]:
    polars = (timing.get("veil-polars") or {}).get("median_s")
    spark = (timing.get("veil-spark") or {}).get("median_s")
    time_ratio = spark / polars if spark and polars else None
    # Only the aggregated rows reach the driver: Spark hands over exactly what Polars
    # computes (the groups and histogram rows), never more; the large run at most the groups.
    groups_only = (
        all(r["rows_collected_spark"] == r["rows_collected_polars"] for r in identity)
        if identity
        else None
    )
    if large is not None and groups_only is not None:
        groups_only = groups_only and large["rows_collected"] <= large["groups"]
    return {
        "identical": (
            all(r["exact_identical"] and r["mismatches"] == 0 for r in identity)
            if identity
            else None
        ),
        "cells_compared": sum(r["cells_compared"] for r in identity),
        "mismatches": sum(r["mismatches"] for r in identity),
        "spark_within_3x_polars": None if time_ratio is None else time_ratio <= TIME_GOAL,
        "time_ratio": time_ratio,
        "driver_gets_groups_only": groups_only,
    }


def run_spark_query_benchmark(
    rows: int = 10_000_000,
    groups: int = 100,
    repeats: int = 3,
    seed: int = 0,
    *,
    spark_master: str = "local[2]",
    large_rows: int = 200_000_000,
    progress: ProgressCallback | None = None,
) -> SparkQueryResult:
    """Identity of the Spark and Polars engines, their times, and Spark on a large table.

    Args:
        rows: Rows of the table both engines read (one Parquet file).
        groups: Declared labels of ``g``.
        repeats: Timed runs per engine (median and minimum reported).
        seed: Seed of the data, of the bounding salt and of the benchmark-only noise.
        spark_master: Spark master URL (``local[2]`` by default).
        large_rows: Rows of the large table (Spark only); 0 skips it.
        progress: Receives :class:`~veil.progress.ProgressEvent` values.

    Returns:
        The result (``to_dict()`` is the JSON report).
    """
    from veil.bench._query import _machine, _run_child, _version  # noqa: PLC0415

    _check(rows, large_rows, groups, repeats, spark_master)
    started = datetime.now(UTC)
    job = {
        "rows": rows,
        "groups": groups,
        "repeats": repeats,
        "seed": seed,
        "master": spark_master,
        "large_rows": large_rows,
    }
    errors: list[str] = []
    large: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="veil-bench-spark-") as tmp:
        main = _run_child({**job, "mode": "spark", "folder": tmp}, progress, CHILD)
        if "error" in main:
            errors.append(f"identity/timing process: {main['error']} {main.get('stderr_tail', '')}")
            main = {}
        with contextlib.suppress(OSError):
            (Path(tmp) / "table.parquet").unlink()  # free its disk before the large table
        if large_rows:
            free = shutil.disk_usage(tmp).free
            need = large_rows * 20  # about 17 bytes per row in Parquet, and a margin
            if need > free:
                errors.append(
                    f"large table skipped: ~{need / 2**30:.1f} GB needed, {free / 2**30:.1f} GB free"
                )
            else:
                written = _run_child({**job, "mode": "spark-write", "folder": tmp}, progress, CHILD)
                large = (
                    written
                    if "error" in written
                    else _run_child({**job, "mode": "spark-large", "folder": tmp}, progress, CHILD)
                )
                if "error" in large:
                    errors.append(f"large table: {large['error']} {large.get('stderr_tail', '')}")
                    large = None
                else:
                    large = {**large, **written, "groups": groups}
    identity = list(main.get("identity", []))
    timing = dict(main.get("timing", {}))
    return SparkQueryResult(
        query=QUERY_SQL,
        date=started.isoformat(timespec="seconds"),
        parameters={**job, "spark_master": spark_master, "epsilon": EPSILON},
        table={
            "columns": {
                "person_id": "unique integer",
                "user_id": f"uniform in [0, rows / {UNIT_ROWS}): ~{UNIT_ROWS} rows per user "
                "(privacy unit of the bounding query)",
                "g": f"{groups} labels, declared (known keys)",
                "u": "'u<k>', k ~ Zipf(2) capped at 1e6; undeclared (partition selection)",
                "x": f"uniform in the declared bounds {list(BOUNDS)}",
            },
            "distinct": main.get("distinct"),
            "parquet_mb": main.get("file_mb"),
            "large_columns": ["person_id", "g", "x"],
        },
        machine=_machine(),
        versions={p: _version(p) for p in ("veil", "polars", "pyspark", "numpy", "pyarrow")},
        method=(
            (
                "both engines read the same Parquet file (Polars: pl.scan_parquet, Spark: "
                "spark.read.parquet), written once in a temporary folder and deleted afterwards"
            ),
            (
                "identity: aggregate(plan, frame, salt=seed) on each engine, the Exact "
                "aggregates compared bit for bit (sorted by key), then release(plan, exact, "
                "noise=BenchNoise(seed)) on each and every released cell compared exactly; "
                "BenchNoise is a seeded NumPy stand-in for this comparison only, never used "
                "for a release"
            ),
            (
                "time: PrivateFrame(frame).query(SQL) from the file to the released answer; "
                f"each engine warmed up {WARMUPS} times on the same file, then round-robin; Spark's "
                "session start-up timed apart"
            ),
            (
                "large: written in 10M-row Parquet files by one process; Spark only, one cold "
                "run in another fresh process (fresh JVM): wall time from spark.read.parquet to "
                "the released answer; peak RSS from /proc/<pid>/status VmHWM of the JVM and of "
                "the Python driver (that process did nothing else)"
            ),
        ),
        startup_s=main.get("startup_s"),
        identity=tuple(identity),
        timing=timing,
        large=large,
        errors=tuple(errors),
        goals=_goals(identity, timing, large),
    )


def _child_main() -> None:
    """Entry point of this benchmark's subprocesses (one JSON job in argv, JSON lines out)."""
    from veil.bench._query_child import _send  # noqa: PLC0415

    job = json.loads(sys.argv[1])
    try:
        main = {"spark": _spark_main, "spark-write": _write_main, "spark-large": _large_main}[
            job["mode"]
        ]
        result = main(job)
    except BaseException as exc:
        _send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    _send({"result": result})

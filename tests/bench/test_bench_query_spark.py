"""`veil bench query --engine spark` on a tiny table: Polars and Spark release the same cells.

A benchmark is not a test of speed: no time is asserted. The identity check is
asserted (zero mismatches), and the comparison itself is shown able to fail.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tests._cli import run_cli

from veil.bench._query_spark import (
    BenchNoise,
    _compare_released,
    _exact_equal,
    _schema,
    spark_query_table,
)
from veil.cli._app import main
from veil.dp import PrivateFrame
from veil.dp._execute import aggregate, release
from veil.errors import InvalidInputError
from veil.ledger import Budget

ROWS, LARGE_ROWS, GROUPS = 20_000, 100_000, 10

needs_spark = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
    reason="Spark's local mode needs Java 17+",
)

# One worker runs the module, so the CLI run below is made once (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("bench-query-spark")


@dataclass(frozen=True)
class CliRun:
    """What one `veil bench query --engine spark` run printed and wrote."""

    code: int
    out: str
    err: str
    folder: Path
    report: dict


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """One tiny run through the CLI (identity, times, a 100k-row 'large' table), shared below.

    Each run starts two Spark JVMs (the main part and the large table's fresh process),
    so the module makes one and checks everything on it; it runs on one worker
    (``xdist_group``) so that the run is made once.
    """
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark's local mode needs Java 17+")
    folder = tmp_path_factory.mktemp("bench-spark")
    args = ["--rows", str(ROWS), "--groups", str(GROUPS), "--repeats", "1", "--seed", "3"]
    done = run_cli(
        "bench", "query", "--engine", "spark", *args, "--large-rows", str(LARGE_ROWS), cwd=folder
    )
    written = folder / "bench-query-spark.json"
    report = json.loads(written.read_text(encoding="utf-8")) if written.is_file() else {}
    return CliRun(done.returncode, done.stdout, done.stderr, folder, report)


@pytest.mark.slow
@needs_spark
def test_spark_and_polars_release_identical_cells(run: CliRun):
    assert run.code == 0, run.err
    report = run.report
    assert report["errors"] == []
    identity = report["identity"]
    assert len(identity) == 7  # count, sum, mean, median, known keys, unknown keys, unit
    for row in identity:
        assert row["exact_identical"], row
        assert row["exact_differences"] == []
        assert row["mismatches"] == 0, row
        assert row["cells_compared"] >= 1
        # The driver gets the aggregated rows only, the same number from both engines.
        assert row["rows_collected_spark"] == row["rows_collected_polars"]
    by_sql = {row["sql"]: row for row in identity}
    known = by_sql["SELECT g, COUNT(*), SUM(x), AVG(x), MEDIAN(x) FROM t GROUP BY g"]
    assert known["released_rows"] == GROUPS
    assert known["cells_compared"] == GROUPS * 4
    assert by_sql["SELECT COUNT(*) FROM t"]["rows_counted"] == ROWS
    unknown = by_sql["SELECT u, COUNT(*), SUM(x), AVG(x) FROM t GROUP BY u"]
    distinct_u = report["table"]["distinct"]["u"]
    assert 0 < unknown["released_rows"] < distinct_u  # partition selection dropped rare values
    # Contribution bounding (user_id, 2 groups x 2 rows) dropped rows that pass the WHERE.
    table = spark_query_table(ROWS, GROUPS, 3)
    passing = table.filter(pl.col("x") > 10).height
    unit = next(row for row in identity if row["privacy_unit"] == "user_id")
    assert 0 < unit["rows_counted"] < passing
    goals = report["goals"]
    assert goals["identical"] is True
    assert goals["mismatches"] == 0
    assert goals["cells_compared"] == sum(row["cells_compared"] for row in identity)
    assert goals["driver_gets_groups_only"] is True


@pytest.mark.slow
@needs_spark
def test_times_and_the_large_table_are_reported(run: CliRun):
    assert run.code == 0, run.err
    report = run.report
    assert set(report["timing"]) == {"veil-polars", "veil-spark", "raw-polars", "raw-spark"}
    for engine in report["timing"].values():
        assert len(engine["times_s"]) == 1
        assert engine["median_s"] > 0
    assert report["startup_s"] > 0
    assert report["goals"]["time_ratio"] > 0
    large = report["large"]
    assert large["rows"] == LARGE_ROWS
    assert large["rows_collected"] == GROUPS  # one row per group reached the driver
    assert large["groups_released"] == GROUPS
    assert large["jvm_pid_found"]
    assert large["jvm_peak_rss_mb"] > 0
    assert large["python_peak_rss_mb"] > 0
    assert large["polars_in_memory_estimate_gb"] > 0
    assert "Identity, Polars vs Spark" in run.out
    assert "Polars not run on it" in run.out


@pytest.mark.slow
@needs_spark
def test_the_cli_writes_the_spark_report_to_its_own_file(run: CliRun):
    assert run.code == 0, run.err
    assert "Report written to bench-query-spark.json" in run.out
    assert run.report["benchmark"] == "query-spark"
    assert not (run.folder / "bench-query.json").exists()


def test_bench_noise_is_reproducible_and_the_comparisons_can_fail():
    # Same seed, same draws; another seed, other draws.
    values = np.arange(5, dtype=np.int64)
    assert np.array_equal(
        BenchNoise(1).laplace(values, 2.0, integer=True),
        BenchNoise(1).laplace(values, 2.0, integer=True),
    )
    assert not np.array_equal(
        BenchNoise(1).laplace(values, 50.0, integer=False),
        BenchNoise(2).laplace(values, 50.0, integer=False),
    )
    # On one engine, two noise seeds release different cells: the comparison reports them.
    frame = spark_query_table(2_000, 4, 0)
    private = PrivateFrame(frame, _schema(4, None), budget=Budget(epsilon=1.0))
    plan = private.plan("SELECT g, COUNT(*), SUM(x) FROM t GROUP BY g", epsilon=1.0)
    exact = aggregate(plan, frame, salt=0)
    same = _compare_released(
        release(plan, exact, noise=BenchNoise(0)), release(plan, exact, noise=BenchNoise(0)), ("g",)
    )
    assert same[:2] == (8, 0)
    cells, mismatches, examples = _compare_released(
        release(plan, exact, noise=BenchNoise(0)), release(plan, exact, noise=BenchNoise(1)), ("g",)
    )
    assert cells == 8
    assert mismatches > 0
    assert examples
    # Exact aggregates that differ in one count are told apart.
    other = aggregate(plan, frame.head(1_999), salt=0)
    assert _exact_equal(exact, exact) == (True, [])
    assert _exact_equal(exact, other) == (False, ["groups differ"])


def test_bad_engine_options_are_refused_before_anything_runs(capsys):
    assert main(["bench", "query", "--engine", "flink"]) == InvalidInputError.exit_code
    assert "flink" in capsys.readouterr().err
    code = main(["bench", "query", "--engine", "spark", "--large-rows", "-1"])
    assert code == InvalidInputError.exit_code
    assert main(["bench", "query", "--engine", "spark", "--rows", "0"]) == (
        InvalidInputError.exit_code
    )

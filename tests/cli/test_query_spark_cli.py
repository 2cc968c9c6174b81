"""`veil query --engine spark`: the real CLI on a real workspace, Spark in local mode.

Checks the exit codes of docs/errors.md and the ledger: a refusal before the
charge records no event; a registered Parquet file that changed is refused
before the charge (Spark never reads it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from veil.cli._app import main
from veil.data import Catalog
from veil.ledger import Ledger
from veil.workspace import Workspace

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # CI installs a JRE (make java); skip only where none can be
    pytest.skip("no java on PATH: Spark's local mode needs Java 17+", allow_module_level=True)

# A JVM per worker: the fast tier leaves Spark out, and one worker runs every in-process Spark
# test (`--dist loadgroup`), so the suite starts one JVM for them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

ENGINE_FAILED = 19
INVALID_INPUT = 3


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def events(name: str) -> int:
    workspace = Workspace.locate()
    catalog = Catalog.open(workspace)
    try:
        return len(Ledger(catalog.store, workspace.settings).entries(name))
    finally:
        catalog.store.dispose()


@pytest.fixture
def visits(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A Parquet and a CSV dataset of hospital visits, several rows per person."""
    assert run(capsys, "init")[0] == 0
    rng = np.random.default_rng(3)
    n = 4000
    frame = pl.DataFrame(
        {
            "pid": rng.integers(0, 900, n),
            "dept": rng.choice(["er", "icu", "ward"], n),
            "cost": rng.gamma(2.0, 500.0, n),
            "los": rng.integers(1, 30, n),
        }
    )
    frame.write_parquet("visits.parquet")
    frame.write_csv("visits.csv")
    for name, path in (("visits", "visits.parquet"), ("visitscsv", "visits.csv")):
        code, _, err = run(
            capsys,
            "datasets",
            "add",
            path,
            "--name",
            name,
            "--id",
            "pid",
            "--bounds",
            "cost=0:5000,los=1:30",
            "--categories",
            "dept=er|icu|ward",
            "--max-rows",
            "3",
        )
        assert code == 0, err
        assert run(capsys, "budget", "set", name, "--epsilon", "10")[0] == 0
    return "visits", "visitscsv"


SQL = "SELECT dept, COUNT(*), AVG(cost), MEDIAN(los) FROM t WHERE los >= 2 GROUP BY dept"


@pytest.mark.parametrize("which", [0, 1], ids=["parquet-read-by-spark", "csv-handed-to-spark"])
def test_a_query_on_spark_answers_and_charges_once(capsys, visits, which):
    name = visits[which]
    code, out, err = run(
        capsys, "query", name, "--sql", SQL, "--epsilon", "2", "--engine", "spark", "--json"
    )
    assert code == 0, err
    payload = json.loads(out)
    assert [row["dept"] for row in payload["rows"]] == ["er", "icu", "ward"]
    # Each of the 900 people keeps one department (max_groups 1) and at most 3 rows in it:
    # between 900 and 2,700 rows before the WHERE (which keeps ~96%), against 4,000 unbounded.
    # The count's noise (scale < 10 per group) cannot bridge the margins.
    total = sum(row["count"]["value"] for row in payload["rows"])
    assert 700 < total < 2800
    for row in payload["rows"]:
        assert 0 <= row["mean_cost"]["value"] <= 5000
        assert 1 <= row["quantile_los_0.5"]["value"] <= 30
    assert events(name) == 1
    assert payload["budget"]["spent"]["epsilon"] == pytest.approx(2.0)


def test_an_unknown_engine_is_refused_before_the_charge(capsys, visits):
    code, _, err = run(
        capsys, "query", "visits", "--sql", SQL, "--epsilon", "1", "--engine", "dask"
    )
    assert code == INVALID_INPUT
    assert "unknown query engine" in " ".join(err.split())
    assert events("visits") == 0


def test_a_bad_master_url_is_refused_before_the_charge(capsys, visits):
    code, _, err = run(
        capsys, "query", "visits", "--sql", SQL, "--epsilon", "1",
        "--engine", "spark", "--spark-master", "bogus://nowhere",
    )  # fmt: skip
    assert code == ENGINE_FAILED
    assert "master URL" in " ".join(err.split())
    assert events("visits") == 0


def test_a_parquet_file_changed_after_registration_is_refused_before_spark_reads_it(capsys, visits):
    frame = pl.read_parquet("visits.parquet")
    # A forged file: same columns and types, one person's costs raised to the upper bound.
    forged = frame.with_columns(
        pl.when(pl.col("pid") == 7).then(5000.0).otherwise(pl.col("cost")).alias("cost")
    )
    Path("visits.parquet").unlink()
    forged.write_parquet("visits.parquet")
    code, _, err = run(
        capsys, "query", "visits", "--sql", SQL, "--epsilon", "1", "--engine", "spark"
    )
    assert code == INVALID_INPUT
    assert "changed since it was registered" in " ".join(err.split())
    assert events("visits") == 0

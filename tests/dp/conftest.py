"""Fixtures of the DP query tests: one Spark session per test process (xdist worker)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _java_missing() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return None
    if shutil.which("java"):
        return None
    return "no java executable (JAVA_HOME/bin/java or java on PATH)"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local Spark session (``local[2]``) shared by every test of this process.

    Skipped, with the reason in the test report, only where pyspark is not
    installed or there is no Java; CI has both, so there the Spark tests run.
    """
    if importlib.util.find_spec("pyspark") is None:
        pytest.skip("Spark engine tests SKIPPED: pyspark is not installed (the spark extra)")
    missing = _java_missing()
    if missing is not None:
        pytest.skip(f"Spark engine tests SKIPPED: {missing}")
    from veil.dp._spark import spark_session

    # Python UDFs (the executor-failure test) run in worker processes Spark starts with
    # PYSPARK_PYTHON, else `python3` on PATH, which need not be this interpreter (with pyspark).
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = spark_session("local[2]")
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = previous

"""`veil bench query` runs end to end on a tiny table (a benchmark is not a test: no timing goals)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from veil.bench import QueryResult, _query_child, run_query_benchmark
from veil.bench._query_child import LIBRARIES, build_query_table, group_labels
from veil.cli._app import main
from veil.cli.bench import render
from veil.errors import InvalidInputError

# One worker runs the module, so the tiny run is made once (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("bench-query")


@pytest.fixture(scope="module")
def result() -> QueryResult:
    """One tiny run of every library, shared by the checks below."""
    return run_query_benchmark(rows=20_000, groups=10, repeats=1)


@pytest.fixture(scope="module")
def report(result: QueryResult) -> dict:
    """The JSON report of that run, as ``veil bench query`` writes it."""
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    return report


@pytest.mark.slow
def test_every_library_has_a_row_with_times_or_a_reason(report):
    rows = {r["library"]: r for r in report["results"]}
    assert list(rows) == list(LIBRARIES)
    for name, row in rows.items():
        if name == "diffprivlib" and row["status"] != "ok":
            # Only the optional library may be missing, and the row says why.
            assert row["status"] == "unavailable"
            assert "pip install" in " ".join(row["notes"])
            continue
        assert row["status"] == "ok", row
        assert row["median_s"] > 0
        assert row["min_s"] > 0
        assert all(t > 0 for t in row["times_s"])
        assert row["ratio_to_raw"] > 0
        assert row["memory"]["peak_rss_mb"] > 0
        assert row["memory"]["peak_ratio_to_raw"] > 0
        assert [a["g"] for a in row["answers"]] == group_labels(10)
        assert row["summary"]
    assert rows["raw"]["ratio_to_raw"] == pytest.approx(1.0)
    assert rows["raw"]["private"] is False
    assert all(rows[name]["private"] for name in ("veil", "opendp", "diffprivlib"))
    assert set(report["goals"]) >= {
        "time_within_1_5x_raw",
        "faster_than_other_dp",
        "memory_within_2x_raw",
    }
    assert report["parameters"]["rows"] == 20_000
    assert report["parameters"]["epsilon"] == 1.0
    assert report["machine"]["cpus"] >= 1
    assert report["versions"]["polars"]


@pytest.mark.slow
def test_veil_answers_are_noisy_and_close(report):
    rows = {r["library"]: r for r in report["results"]}
    exact = {a["g"]: a for a in rows["raw"]["answers"]}
    result = rows["veil"]["result"]
    assert result["columns"] == ["g", "count", "sum_x", "mean_x"]
    assert result["epsilon"] == 1.0
    assert any("one person" in note for note in result["notes"])
    assert [row["g"] for row in result["rows"]] == group_labels(10)
    for row in result["rows"]:
        for stat in ("count", "sum_x", "mean_x"):
            cell = row[stat]
            assert cell["noise_scale"] > 0
            assert cell["ci"][0] <= cell["value"] <= cell["ci"][1]
        # ~2,000 people per group: the noise (count scale 3, mean error well under 1) is small.
        assert abs(row["count"]["value"] - exact[row["g"]]["count"]) < 100
        assert abs(row["mean_x"]["value"] - exact[row["g"]]["mean_x"]) < 5
    assert report["table"]["privacy_unit"] is None
    assert "one distinct person" in report["table"]["note"]


@pytest.mark.slow
def test_the_table_names_every_library_and_the_goals(result, capsys):
    render(result)
    printed = capsys.readouterr().out
    for name in LIBRARIES:
        assert name in printed
    assert "x raw" in printed
    assert "goals for veil" in printed
    assert "one distinct person" in printed


@pytest.mark.slow
def test_default_output_is_in_the_working_directory(capsys, tmp_path: Path):
    args = ["--rows", "2000", "--groups", "3", "--repeats", "1", "--libraries", "raw"]
    code = main(["bench", "query", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Report written to bench-query.json" in captured.out
    written = json.loads((tmp_path / "bench-query.json").read_text(encoding="utf-8"))
    assert [r["library"] for r in written["results"]] == ["raw"]
    assert written["goals"]["time_within_1_5x_raw"] is None  # no Veil row to judge


def test_bad_input_is_refused_before_anything_runs(capsys, tmp_path: Path):
    code = main(["bench", "query", "--libraries", "raw,tensorflow", "--json"])
    captured = capsys.readouterr()
    assert code == InvalidInputError.exit_code
    assert json.loads(captured.out)["error"]["code"] == "invalid_input"
    assert "tensorflow" in captured.err
    assert main(["bench", "query", "--rows", "0"]) == InvalidInputError.exit_code
    assert not (tmp_path / "bench-query.json").exists()


def test_a_missing_diffprivlib_is_reported_with_the_install_command(monkeypatch):
    real = _query_child.importlib.util.find_spec
    monkeypatch.setattr(
        _query_child.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "diffprivlib" else real(name, *a),
    )
    loaded, notes = _query_child._load_diffprivlib()
    assert loaded is None
    assert notes == ["not installed: it is only in the benchmark extra (pip install 'veil[bench]')"]


def test_the_table_is_deterministic():
    a = build_query_table(1_000, 7, seed=3)
    assert a.equals(build_query_table(1_000, 7, seed=3))
    assert a["person_id"].n_unique() == 1_000
    assert set(a["g"].unique()) <= set(group_labels(7))
    assert a["x"].min() >= 0
    assert a["x"].max() <= 100
    assert a.schema["g"] == pl.String

"""`veil bench synth` runs end to end on a tiny size, the reference AIM included.

The numbers are the benchmark's, not the test's: the test checks that every
generator ran in its own process and that what the report says of it is
consistent (the measures in range, the goals derived from the rows).
"""

from __future__ import annotations

import json
import math

import pytest

from veil.bench._synth import TINY, TINY_COLUMNS, SynthBenchResult, run_synth_benchmark
from veil.cli._app import main
from veil.errors import InvalidInputError, NotFoundError

pytest.importorskip("mbi")


def _tiny(shared_data, **kwargs):
    settings = {
        "epsilons": (1.0,),
        "rows": TINY["rows"],
        "test_rows": TINY["test_rows"],
        "rounds": TINY["rounds"],
        "iters": TINY["iters"],
        "final_iters": TINY["final_iters"],
        "max_model_mb": TINY["max_model_mb"],
        "columns": TINY_COLUMNS,
    }
    return run_synth_benchmark(shared_data, **(settings | kwargs))


@pytest.mark.slow
def test_tiny_synth_benchmark_runs_veil_and_the_reference_side_by_side(shared_data):
    result = _tiny(shared_data, generators=("veil-aim", "reference-aim", "veil-aim-nonprivate"))
    assert isinstance(result, SynthBenchResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    rows = {(r["generator"], r["epsilon"]): r for r in report["results"]}
    assert set(rows) == {("veil-aim", 1.0), ("reference-aim", 1.0), ("veil-aim-nonprivate", None)}
    cliques = report["data"]["cliques"]
    assert cliques == math.comb(len(TINY_COLUMNS), 3)  # four small columns: every 3-way fits
    for r in rows.values():
        assert r["status"] == "ok", r["notes"]
        assert 0 < r["cpu_s"] <= r["process_cpu_s"]  # the generator call is part of its process
        assert r["peak_rss_mb"] > 50  # a Python process with NumPy and JAX loaded
        assert 0 < r["average_tvd"] < 1
        assert 0 <= r["tstr_accuracy"] <= 1 and 0 <= r["trtr_accuracy"] <= 1
        assert 0 <= r["mia_auc"] <= 1
        assert r["measured_cliques"] >= 1
        assert r["evaluation"]["workload"]["cliques"] == cliques
    # The same real rows and test rows for every generator: one TRTR accuracy.
    assert len({r["trtr_accuracy"] for r in rows.values()}) == 1
    assert report["data"]["train_rows"] == TINY["rows"]
    assert report["parameters"]["rounds"] == TINY["rounds"]
    assert report["parameters"]["final_iters"] == TINY["final_iters"]
    veil = rows["veil-aim", 1.0]
    assert veil["card"]["epsilon"] == 1.0 and veil["card"]["delta"] == 1e-9
    # Measurements counted alike: the one-ways, then a marginal a round. Veil runs its rounds;
    # the reference's annealing may stop sooner, but it measures at least once after the start.
    assert veil["measured_cliques"] == len(TINY_COLUMNS) + TINY["rounds"]
    reference = rows["reference-aim", 1.0]
    assert len(TINY_COLUMNS) < reference["measured_cliques"] <= len(TINY_COLUMNS) + TINY["rounds"]
    assert report["reference"]["commit"]
    goals = report["goals"]
    assert goals["eps10_better_than_eps1"] is None  # epsilon 10 was not run
    assert goals["tvd_within_5pct_of_reference"] == (
        veil["average_tvd"] <= 1.05 * rows["reference-aim", 1.0]["average_tvd"]
    )
    assert goals["cpu_at_most_half_reference"] == (
        veil["cpu_s"] <= 0.5 * rows["reference-aim", 1.0]["cpu_s"]
    )


@pytest.mark.slow
def test_bench_synth_command_writes_the_report_of_mst(shared_data, tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = main(
        [
            "bench", "synth", "--data", str(shared_data), "--tiny", "--epsilons", "1",
            "--generators", "veil-mst", "-o", str(output),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "goals against the reference AIM" in captured.out  # the table and its notes drawn
    report = json.loads(output.read_text(encoding="utf-8"))
    assert [r["generator"] for r in report["results"]] == ["veil-mst"]
    assert report["parameters"]["final_iters"] == TINY["final_iters"]
    # Each generator is stopped after 30 minutes unless told otherwise (the reference AIM
    # does not finish on the whole table): a run with default flags always ends.
    assert report["parameters"]["time_limit_s"] == 1800.0
    assert report["results"][0]["status"] == "ok"


def test_bad_settings_are_refused_before_anything_runs(shared_data, tmp_path):
    with pytest.raises(NotFoundError, match="Adult files are missing"):
        run_synth_benchmark(tmp_path)
    with pytest.raises(InvalidInputError, match="positive number"):
        run_synth_benchmark(shared_data, epsilons=(0.0,))
    with pytest.raises(InvalidInputError, match="unknown generators"):
        run_synth_benchmark(shared_data, generators=("ctgan",))
    with pytest.raises(InvalidInputError, match="income among them"):
        run_synth_benchmark(shared_data, columns=("age", "sex", "race"))
    with pytest.raises(InvalidInputError, match="final_iters must be a positive whole number"):
        run_synth_benchmark(shared_data, final_iters=0)
    with pytest.raises(InvalidInputError, match="time_limit_s must be positive"):
        run_synth_benchmark(shared_data, time_limit_s=0)


def test_a_generator_past_its_time_limit_is_stopped_and_reported(shared_data):
    result = _tiny(shared_data, generators=("reference-aim",), time_limit_s=0.5)
    (row,) = result.to_dict()["results"]
    assert row["status"] == "timed out"
    assert "time limit of 0.5 s" in row["notes"][0]
    assert row["average_tvd"] is None and row["cpu_s"] is None
    assert result.to_dict()["goals"]["tvd_within_5pct_of_reference"] is None

"""`veil bench anonymize` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.bench import AnonymizeResult, run_anonymize_benchmark
from veil.cli._app import main


@pytest.mark.slow
def test_tiny_anonymize_benchmark_reports_every_algorithm(shared_data):
    result = run_anonymize_benchmark(shared_data, ks=(5,), repeats=1, rows=1500, text=False)
    assert isinstance(result, AnonymizeResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    assert "text" not in report
    rows = {r["algorithm"]: r for r in report["results"]}
    assert set(rows) == {"mondrian-strict", "mondrian-relaxed", "full-domain"}
    for r in rows.values():
        assert r["smallest_class"] >= 5
        assert 0 < r["gcp"] < 1
        assert r["max_prosecutor_risk"] <= 0.2
        assert {"seconds", "classes", "discernibility", "suppression", "accuracy"} <= set(r)
    assert rows["full-domain"]["suppression"] <= 0.05
    assert report["table"]["rows"] == 1500


@pytest.mark.slow
def test_bench_command_writes_json_with_the_text_part(shared_data, tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = main(
        ["bench", "anonymize", "--data", str(shared_data), "--tiny", "--k", "5", "-o", str(output)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "GCP: mean NCP" in captured.out and "redact_file" in captured.out  # both parts drawn
    report = json.loads(output.read_text(encoding="utf-8"))
    assert len(report["results"]) == 3
    text = report["text"]
    assert text["quality"]["overlap"]["overall"]["precision"] > 0
    assert text["throughput"]["runs"][0]["seconds"] > 0

"""`veil bench he` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.bench import HeResult, run_he_benchmark
from veil.cli.bench import render

pytestmark = pytest.mark.slow  # CKKS keys and encrypted inference


def test_tiny_he_benchmark_reports_both_layouts(shared_data, capsys):
    result = run_he_benchmark(
        shared_data,
        models=("linear",),
        epochs={"linear": 1},
        single={"linear": 2},
        batch_images=300,
        train_images=1000,
        workers=1,
    )
    assert isinstance(result, HeResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    render(result)
    assert "rotation keys" in capsys.readouterr().out
    (row,) = report["rows"]
    assert row["plan"]["total_coeff_bits"] <= row["plan"]["max_coeff_bits"]
    assert row["single"]["images"] == 2
    assert row["steps"] == ["Affine"]
    assert row["single"]["request_bytes"] < 500_000
    batched = row["batched"]
    assert batched["images"] == 300
    assert batched["agreement"] == 1.0
    assert batched["max_error"] <= batched["error_bound"]
    assert row["public_context_batch_only_bytes"] < row["public_context_bytes"]
    assert set(report["goals"]) >= {"accuracy_met", "single_met", "batched_met", "request_met"}

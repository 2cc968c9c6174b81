"""`veil bench dpsgd` and `veil bench mnist` run end to end on a tiny size (a benchmark is not a test)."""

from __future__ import annotations

import json

import pytest

from veil.bench import DpsgdResult, MnistResult, run_dpsgd_benchmark, run_mnist_benchmark
from veil.cli._app import main

pytestmark = pytest.mark.slow  # trains DP-SGD and MNIST models, even at the tiny size


def test_dpsgd_benchmark_on_a_tiny_size(shared_data):
    result = run_dpsgd_benchmark(
        shared_data,
        models=["mlp"],
        train_size=1024,
        test_size=500,
        timing_epochs=1,
        accuracy_epochs=1,
        accuracy_models=["scatternet"],
        adult_epochs=1,
    )
    assert isinstance(result, DpsgdResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    assert "label" not in report["mnist_eps3"][0]  # only the MNIST comparison labels its rows
    (row,) = report["timing"]
    assert row["model"] == "mlp"
    assert row["veil_ratio"] == row["veil_dp_s_per_epoch"] / row["non_private_s_per_epoch"]
    assert row["opacus_ghost_s_per_epoch"] > 0
    (run,) = report["mnist_eps3"]
    assert run["model"] == "scatternet" and run["epsilon"] <= 3.0
    assert 0.0 <= run["test_accuracy"] <= 1.0 and run["feature_seconds"] > 0
    adult = report["adult"]
    assert adult["dp_eps1"]["epsilon"] <= 1.0 and adult["test_rows"] == 500
    assert adult["train_rows"] == 1024
    assert set(report["goals"]) == {"dp_within_1_3x", "mnist_98_at_eps3", "adult_within_1_5_points"}


def test_mnist_benchmark_on_a_tiny_size(shared_data):
    result = run_mnist_benchmark(
        shared_data, epsilons=(3.0,), epochs=1, model="logreg", train_size=1024, encrypted=False
    )
    assert isinstance(result, MnistResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    labels = [r["label"] for r in report["rows"]]
    assert labels == ["non-private", "DP-SGD eps=3"]
    assert report["rows"][0]["time_ratio"] == 1.0
    assert report["rows"][1]["epsilon"] <= 3.0
    assert report["rows"][1]["single_image_ms"] > 0
    assert report["encrypted_inference"]["status"] == "skipped"  # tests/bench/test_bench_he.py


def test_bench_cli_writes_json(capsys, shared_data, tmp_path):
    output = tmp_path / "d.json"
    code = main(
        [
            "bench",
            "dpsgd",
            "--data",
            str(shared_data),
            "--models",
            "mlp",
            "--train-size",
            "1024",
            "--timing-epochs",
            "1",
            "--no-accuracy",
            "--no-opacus",
            "-o",
            str(output),
        ]
    )
    assert code == 0
    assert "Veil DP-SGD" in capsys.readouterr().out
    report = json.loads(output.read_text())
    assert report["mnist_eps3"] is None and report["timing"][0]["opacus_ratio"] is None
    code = main(
        ["bench", "dpsgd", "--data", str(tmp_path / "nowhere"), "--no-accuracy", "-o", str(output)]
    )
    assert code == 6

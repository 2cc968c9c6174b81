"""`veil bench federated --quick` runs end to end (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.cli._app import main

pytestmark = pytest.mark.slow  # federated rounds with Flower


def test_quick_federated_benchmark_writes_json_and_a_table(
    shared_data, tmp_path, capsys, monkeypatch
):

    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    output = tmp_path / "bench-federated.json"
    rows = ["mlp-iid", "secagg-overhead"]  # dp-fedavg and poisoning: more runs than the time allows
    code = main(
        [
            "bench",
            "federated",
            "--data",
            str(shared_data),
            "--rows",
            ",".join(rows),
            "--quick",
            "-o",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["parameters"]["quick"] is True
    by_name = {r["name"]: r for r in report["rows"]}
    assert list(by_name) == rows
    for name in rows:
        assert name in captured.out
        assert isinstance(by_name[name]["met"], bool) and by_name[name]["goal"]

    mlp = by_name["mlp-iid"]["results"]
    assert mlp["rounds"] == 2 and len(mlp["accuracy_per_round"]) == 2
    assert all(0.0 <= a <= 1.0 for a in mlp["accuracy_per_round"])
    assert mlp["accuracy"] > 0.5  # logistic regression on 2,000 images, 2 rounds
    assert mlp["mean_overhead_seconds"] >= 0 and mlp["seconds_per_round"] > 0

    secagg = by_name["secagg-overhead"]["results"]
    assert [r["clients"] for r in secagg] == [5, 10]
    for r in secagg:
        assert r["ratio"] > 0 and r["shares"] == 5
        assert 0.0 <= r["secagg_accuracy"] <= 1.0 and 0.0 <= r["plain_accuracy"] <= 1.0

"""`veil bench unlearning` runs end to end at --tiny size (the numbers are the benchmark's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.bench import run_unlearning_benchmark
from veil.cli._app import main
from veil.errors import InvalidInputError

pytest.importorskip("torch")


@pytest.mark.slow
def test_tiny_benchmark_writes_json_with_every_goal(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench-unlearning.json"
    code = main(
        [
            "bench",
            "unlearning",
            "--data",
            str(shared_data),
            "--dataset",
            "adult",
            "--tiny",
            "--output",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for title in ("SISA 4 shards x 2 slices vs one model", "Offline LiRA on 20 erased", "Goals"):
        assert title in captured.out
    report = json.loads(out.read_text())
    assert report["benchmark"] == "unlearning"
    (row,) = report["datasets"]
    assert row["dataset"] == "adult"
    assert row["shards"] == 4 and row["slices"] == 2 and row["erased"] == 20
    assert row["rows"] == 1200 and row["test_rows"] == 400
    assert row["unlearn_one_mean_seconds"] > 0 and row["full_training_seconds"] > 0
    assert row["unlearn_ratio"] == pytest.approx(
        row["unlearn_one_mean_seconds"] / row["full_training_seconds"]
    )
    for key in ("auc_before", "auc_unlearned", "auc_retrained"):
        assert 0.0 <= row[key] <= 1.0
    assert 0.0 <= row["single_accuracy"] <= 1.0 and 0.0 <= row["sisa_accuracy"] <= 1.0
    erase = report["erase"]
    assert erase["rows"] == 20_000 and erase["rows_removed"] == 1 and erase["shredded"] is True
    goals = {(g["goal"].split(" ")[0], g["dataset"]) for g in report["goals"]["checks"]}
    assert ("veil", "synthetic") in goals
    assert len(report["goals"]["checks"]) == 5  # four for adult, one for erase
    assert all(isinstance(g["met"], bool) for g in report["goals"]["checks"])


def test_unknown_dataset_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown dataset"):
        run_unlearning_benchmark(data=tmp_path, datasets=("cifar",), tiny=True)

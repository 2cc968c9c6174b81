"""`veil bench audit` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from veil.bench import AuditResult, run_audit_benchmark
from veil.cli._app import main
from veil.errors import InvalidInputError


@pytest.mark.slow
def test_tiny_audit_benchmark_reports_every_attack_and_the_goals(shared_data):
    result = run_audit_benchmark(
        shared_data,
        datasets=("adult",),
        recipes=("overfit", "dp_eps1"),
        pool=300,
        references=2,
        canaries=40,
        tiny=True,
    )
    assert isinstance(result, AuditResult)
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    assert report["rows"][0]["best_attack_at_0.1%"] == result.rows[0].best_attack
    rows = {r["recipe"]: r for r in report["rows"]}
    assert set(rows) == {"overfit", "dp_eps1"}
    assert math.isinf(rows["overfit"]["claimed_epsilon"])  # written "inf" (veil._io)
    assert rows["overfit"]["dp_audit"]["consistent_with_claim"] is True  # nothing claimed
    dp = rows["dp_eps1"]
    assert dp["claimed_epsilon"] <= 1.0 and dp["noise_multiplier"] > 0
    assert dp["dp_audit"]["canaries"] == 40
    assert {a["attack"] for a in dp["attacks"]} >= {
        "lira-online",
        "lira-offline",
        "rmia-online",
        "rmia-offline",
    }
    assert dp["attacks"][0]["tpr_at_0.1%_fpr"] is None  # 150 non-members cannot show 0.1%
    assert set(report["goals"]["adult"]) >= {
        "overfit_tpr_at_0.1%_at_least_10x",
        "dp_eps1_at_chance_low_fpr",
    }


@pytest.mark.slow
def test_the_cli_writes_json_and_refuses_unknown_recipes(shared_data, tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(
        [
            "bench",
            "audit",
            "--data",
            str(shared_data),
            "--datasets",
            "mnist",
            "--recipes",
            "regularised",
            "--pool",
            "200",
            "--references",
            "2",
            "--canaries",
            "0",
            "--tiny",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    written = json.loads(Path(out).read_text())["rows"][0]
    assert written["dataset"] == "mnist"
    assert written["claimed_epsilon"] == "inf"  # a non-private model claims nothing
    assert "Membership inference" in capsys.readouterr().out
    with pytest.raises(InvalidInputError, match="unknown recipe"):
        run_audit_benchmark(shared_data, recipes=("magic",))

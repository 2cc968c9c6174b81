"""`veil bench serve`: its attack pieces on plain data, and the whole benchmark at a tiny size.

The end-to-end run checks what must hold on any machine (exact budget accounting, the
rate limit across workers, the count budget stopping the extractor, well-formed
curves); the timings and attack numbers are the benchmark's, not the test's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.bench._serve_attacks import (
    MarginalSampler,
    Replay,
    answers_as_proba,
    auc,
    augment,
    json_records,
)
from veil.cli._app import main
from veil.errors import InvalidInputError


def test_auc_matches_the_pair_count_with_ties() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4, size=60).astype(float)
    b = rng.integers(0, 4, size=45).astype(float)
    wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    assert auc(a, b) == pytest.approx(wins / (len(a) * len(b)), abs=1e-12)
    assert auc([1.0, 1.0], [0.0]) == 1.0
    assert auc([0.0], [1.0, 2.0]) == 0.0


def test_marginal_samples_keep_each_column_and_break_their_joint(seed: int) -> None:
    # Two perfectly dependent columns: a marginal sampler keeps each one's distribution
    # and makes them independent. With 4,000 draws, P(match) = 0.5 and its standard error
    # 0.0079; the band of 8 standard errors is exceeded with probability < 1e-12.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=500)
    frame = pd.DataFrame({"a": x, "b": np.where(x == 1, "yes", "no"), "income": "<=50K"})
    drawn = MarginalSampler(frame).sample(4000, rng)
    assert list(drawn.columns) == ["a", "b"]
    assert set(drawn["b"]) <= {"yes", "no"}
    match = float(((drawn["a"] == 1) == (drawn["b"] == "yes")).mean())
    assert abs(match - 0.5) < 8 * 0.0079, f"type I error < 1e-12; match rate {match}"


def test_augment_perturbs_copies_row_by_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": [30, 60],
            "hours_per_week": [40, 20],
            "sex": ["Male", "Female"],
            "income": ["a", "b"],
        }
    )
    out = augment(frame, 5, rng)
    assert len(out) == 10
    assert list(out["income"]) == ["a"] * 5 + ["b"] * 5
    assert out["age"].between(30 - 2, 60 + 2).all()
    assert np.abs(out["age"].to_numpy()[:5] - 30).max() <= 2


def test_answers_become_probability_rows() -> None:
    classes = ["<=50K", ">50K"]
    rows = answers_as_proba(
        [
            {"label": ">50K", "probabilities": None},
            {"label": "<=50K", "probabilities": {"<=50K": 0.62, ">50K": 0.38}},
            {"label": "<=50K", "probabilities": {"<=50K": -0.1, ">50K": 0.0}},
            {"label": ">50K", "top": [{"label": ">50K", "probability": 0.7}]},
        ],
        classes,
    )
    expected = np.array([[0, 1], [0.62, 0.38], [0.5, 0.5], [0, 1]], dtype=np.float64)
    np.testing.assert_allclose(rows, expected)


def test_records_are_plain_json() -> None:
    frame = pd.DataFrame({"age": np.array([30, 40]), "w": [np.nan, 1.5], "c": ["x", None]})
    assert json_records(frame) == [
        {"age": 30, "w": None, "c": "x"},
        {"age": 40, "w": 1.5, "c": None},
    ]
    json.dumps(json_records(frame), allow_nan=False)


def test_replay_answers_pool_rows_and_evaluation_from_their_sources() -> None:
    pool = np.eye(3, dtype=np.float32)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    evaluation = np.full((2, 3), 0.5, dtype=np.float32)
    truth = np.log(np.array([[0.3, 0.7], [0.6, 0.4]]))
    replay = Replay(pool, proba, evaluation, truth)
    np.testing.assert_allclose(np.exp(replay.log_proba(pool[[2, 0]])), proba[[2, 0]])
    np.testing.assert_allclose(replay.log_proba(evaluation.copy()), truth)
    with pytest.raises(InvalidInputError):
        replay.log_proba(np.zeros((1, 3), dtype=np.float32))


def test_bench_serve_refuses_unknown_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "serve", "--parts", "overhead,nope", "-o", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert code != 0
    assert "--parts" in captured.err + captured.out
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_serve_quick_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path, postgres_admin_url: str
) -> None:
    redis = pytest.importorskip("redis")
    redis_url = os.environ.get("VEIL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    try:
        redis.Redis.from_url(redis_url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {redis_url}: {exc}")
    output = tmp_path / "bench-serve.json"
    code = main(
        ["bench", "serve", "--quick", "--data", str(shared_data), "--postgres-url",
         postgres_admin_url, "--redis-url", redis_url, "-o", str(output)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err + captured.out
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["benchmark"] == "serve"

    overhead = report["overhead"]
    labels = [run["label"] for run in overhead["runs"]]
    assert labels[0] == "in-process" and labels[2].startswith("POST /v1/models/")
    for run in overhead["runs"]:
        assert run["errors"] == 0, run["statuses"]
        assert run["requests"] == int(overhead["seconds"] * run["rate"])
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert overhead["overhead_p50_ms"] == pytest.approx(
        overhead["runs"][2]["p50_ms"] - overhead["runs"][0]["p50_ms"]
    )
    assert overhead["capacity_rps"] > 0
    assert overhead["capacity_codes"].keys() == {"200"}

    # Exact on any machine: the shared budget and the shared rate limit.
    consistency = report["consistency"]
    assert consistency["admitted_sequential"] > 0
    assert consistency["accepted_concurrent"] == consistency["admitted_sequential"]
    assert consistency["ledger_events"] == consistency["accepted_concurrent"]
    assert consistency["budget_exact"] is True
    assert consistency["rate_offered"] > consistency["rate_allowed"]
    assert consistency["rate_within_1pct"] is True

    extraction = report["extraction"]
    rows = {(r["policy"], r["budget"]): r for r in extraction["rows"]}
    assert {p for p, _ in rows} == {"probabilities", "rounded-2dp", "laplace-0.1", "label"}
    cap = report["parameters"]["cap"]
    for (_, budget), row in rows.items():
        if budget is None:
            assert row["answered"] == max(extraction["budgets"])
            assert row["refusal"] is None
        else:
            assert row["answered"] == cap  # the count budget stopped the attacker there
            assert row["refusal"] == "budget_exceeded"
        assert all(a is None or 0.0 <= a <= 1.0 for a in row["agreement"])

    monitor = report["monitor"]
    params = report["parameters"]
    assert (monitor["benign"], monitor["attackers"]) == (params["benign"], params["attackers"])
    assert 0 <= monitor["attackers_flagged"] <= monitor["attackers"]

    membership = report["membership"]
    assert membership["members"] == params["members"]
    for attack in ("gap", "augmentation"):
        assert 0.0 <= membership[f"{attack}_auc"] <= 1.0

    assert set(report["goals"]) == {
        "overhead",
        "budget",
        "rate",
        "extraction",
        "monitor",
        "membership",
    }
    assert "Goals (issue 24)" in captured.out

"""`veil bench ledger` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.cli._app import main


@pytest.mark.slow
def test_bench_ledger_writes_json_and_a_table(tmp_path, capsys, postgres_admin_url):
    output = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "ledger",
            "--sizes",
            "0,12",
            "--charges",
            "4",
            "--processes",
            "2",
            "--per-process",
            "3",
            "--postgres-url",
            postgres_admin_url,
            "-o",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(output.read_text(encoding="utf-8"))
    rows = {(r["history"], r["backend"]): r for r in report["results"]}
    assert set(rows) == {(0, "sqlite"), (0, "postgresql"), (12, "sqlite"), (12, "postgresql")}
    for row in rows.values():
        # Every charge was checked against a from-scratch recomposition: exactly equal.
        assert row["excess_min"] == 0.0
        assert row["excess_max"] == 0.0
        assert row["verify_ok"] is True
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    # 12 events before, 5 warm-up and 4 timed charges after.
    assert rows[(12, "sqlite")]["epsilon"] > rows[(0, "sqlite")]["epsilon"] > 0
    concurrent = rows[(12, "postgresql")]["concurrent"]
    assert concurrent["processes"] == 2 and concurrent["charges"] == 6
    assert "vs recomposition" in captured.out


@pytest.mark.parametrize(
    "args",
    [["--sizes", "ten"], ["--backends", "oracle"], ["--charges", "0"], ["--processes", "x"]],
)
def test_bench_ledger_refuses_bad_options(tmp_path, capsys, args):
    code = main(["bench", "ledger", *args, "-o", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert not (tmp_path / "b.json").exists()

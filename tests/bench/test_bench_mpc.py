"""`veil bench mpc` runs end to end on a tiny size (the numbers are the benchmark's, not a test's)."""

from __future__ import annotations

import json

import pytest

from veil.cli._app import main

pytestmark = pytest.mark.slow  # parties in separate processes


def test_bench_command_writes_json_and_a_table(tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = main(["bench", "mpc", "--size", "500", "--repeats", "1", "-o", str(output)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["parameters"]["size"] == 500 and len(report["results"]) == 2
    assert "shamir 2-of-3" in captured.out and "numpy" in captured.out
    rows = {r["protocol"]: r for r in report["results"]}
    assert set(rows) == {"additive", "shamir"}
    for r in rows.values():
        assert r["within_resolution"], r
        assert r["max_abs_error"] <= report["parameters"]["tolerance"] + 1e-9
        # every party sends n - 1 input shares and n - 1 opened shares, 8 bytes per value
        assert r["bytes_sent"] >= 3 * 2 * 2 * 500 * 8
        assert r["seconds"] >= r["protocol_seconds"] > 0
    assert rows["shamir"]["threshold"] == 2 and rows["additive"]["threshold"] == 3

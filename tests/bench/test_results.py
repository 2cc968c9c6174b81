"""Benchmark results: to_dict() is plain JSON in field order, and every view draws."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from veil.bench import (
    Column,
    FederatedResult,
    FederatedRow,
    LedgerResult,
    LedgerRow,
    MpcResult,
    MpcRow,
    Note,
    Table,
)
from veil.cli.bench import _render_table, render


def _mpc() -> MpcResult:
    row = MpcRow(
        protocol="shamir",
        threshold=2,
        seconds=1.5,
        protocol_seconds=0.5,
        seconds_all=(1.5,),
        phases={"share": 0.1},
        bytes_sent=48_000,
        bytes_per_value=96.0,
        ratio_to_plaintext=None,
        max_abs_error=1e-6,
        within_resolution=True,
    )
    return MpcResult(
        parameters={"size": 500, "frac_bits": 16, "repeats": 1, "tolerance": 2.3e-5},
        plaintext={"library": "numpy", "seconds": 0.0},
        results=(row,),
        machine={"cpus": 2, "python": "3.11", "numpy": "2", "veil": "0"},
    )


def _ledger(epsilon: float) -> LedgerResult:
    common = {
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "charges_per_s": 500.0,
        "cold_status_s": 0.1,
        "recompose_s": 0.2,
        "verify_s": 0.1,
        "verify_ok": True,
        "epsilon": epsilon,
        "epsilon_reference": epsilon,
        "excess_min": 0.0,
        "excess_max": 0.0,
        "state_points": 10,
        "batch_pld": None,
    }
    run = {"processes": 2, "charges_per_s": 300.0}
    return LedgerResult(
        budget={"epsilon": 100.0, "delta": 1e-6},
        parameters={"charges": 4, "warmup": 5, "processes": [2]},
        goals={
            "p99_ms": {"sqlite": 20.0},
            "concurrent_charges_per_s": 200.0,
            "excess_at_most": 0.005,
        },
        cpus=2,
        results=(
            LedgerRow(history=0, backend="sqlite", goal_p99_ms=20.0, **common),
            LedgerRow(
                history=0,
                backend="postgresql",
                goal_p99_ms=None,
                concurrent_runs=(run,),
                concurrent=run,
                **common,
            ),
        ),
    )


def _federated() -> FederatedResult:
    row = FederatedRow(
        name="mlp-iid",
        config={"clients": 10},
        results={"accuracy": 0.9},
        goal={"accuracy": 0.97},
        met=False,
        summary="90.00% after 2 rounds",
        goal_text=">= 97% within 10 rounds",
    )
    return FederatedResult(
        veil="0",
        parameters={"quick": True},
        rows=(row,),
        notes=("a note",),
        machine={"cpus": 2, "python": "3.11", "torch": "2", "flwr": "1"},
        seconds=3.0,
    )


@pytest.mark.parametrize(
    "make", [_mpc, lambda: _ledger(1.0), _federated], ids=["mpc", "ledger", "federated"]
)
def test_to_dict_round_trips_through_json_and_the_view_draws(make, capsys):
    result = make()
    report = result.to_dict()
    assert json.loads(json.dumps(report)) == report
    assert next(iter(report)) == "benchmark"  # the first key, as the files always had it
    render(result)
    assert capsys.readouterr().out.strip()


def test_optional_keys_are_left_out_rather_than_written_as_null():
    sqlite, postgres = _ledger(1.0).to_dict()["results"]
    assert "concurrent" not in sqlite and "concurrent_runs" not in sqlite
    assert postgres["concurrent"]["processes"] == 2
    assert list(postgres)[-2:] == ["concurrent_runs", "concurrent"]


def test_rows_become_lists_and_values_pass_through_unchanged():
    report = _mpc().to_dict()
    (row,) = report["results"]
    assert row["seconds_all"] == [1.5] and row["ratio_to_plaintext"] is None
    assert report["benchmark"] == "mpc"
    # An infinity stays a float: the JSON writer, not the result, spells it.
    assert math.isinf(_ledger(math.inf).to_dict()["results"][0]["epsilon"])


def test_a_column_formats_values_and_passes_text_and_gaps_through():
    column = Column("s", lambda v: f"{v:.2f}")
    assert column.cell(1.23456) == "1.23"
    assert column.cell(None) == "-"
    assert column.cell("n/a") == "n/a"
    view = _mpc().view()
    assert isinstance(view[0], Table) and all(isinstance(b, Note) for b in view[1:])
    (table,) = [b for b in view if isinstance(b, Table)]
    assert all(len(row) == len(table.columns) for row in table.rows)


def test_a_table_wider_than_the_console_prints_every_value_as_records(capsys, monkeypatch):
    from veil.cli import _output

    columns = tuple(Column(f"measure number {i}", lambda v: f"{v:.3f}") for i in range(12))
    block = Table("wide", (Column("generator", justify="left", no_wrap=True), *columns), ())
    rows = (("veil-aim-nonprivate", *(1000.0 + i / 1000 for i in range(12))),)
    wide = dataclasses.replace(block, rows=rows)
    monkeypatch.setattr(_output.out, "width", 80)
    _render_table(wide)
    printed = capsys.readouterr().out
    assert "…" not in printed  # nothing cut
    for i in range(12):
        assert f"measure number {i}" in printed and f"{1000 + i / 1000:.3f}" in printed
    assert max(len(line) for line in printed.splitlines()) <= 80
    narrow = dataclasses.replace(wide, columns=wide.columns[:3], rows=((rows[0][:3]),))
    _render_table(narrow)
    grid = capsys.readouterr().out
    assert "┃" in grid and "1000.001" in grid and "…" not in grid  # a grid where it fits

"""`veil budget` and `veil query`: the issue's commands, JSON for auditors, refusals and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from veil.cli._app import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def adult(capsys: pytest.CaptureFixture[str], shared_data: Path) -> str:
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys,
        "datasets",
        "add",
        str(shared_data / "adult" / "adult.data"),
        "--format",
        "adult",
        "--name",
        "adult",
        "--bounds",
        "age=17:90,hours_per_week=1:99",
    )
    assert code == 0, err
    return "adult"


def test_nothing_is_released_before_a_budget_is_set(capsys, adult):
    code, out, err = run(
        capsys, "query", adult, "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "0.5", "--json"
    )
    assert code == 8
    assert json.loads(out)["error"]["code"] == "budget_exceeded"
    assert "veil budget set adult" in err


@pytest.mark.slow
def test_budget_set_query_show_and_history(capsys, adult):
    code, out, _ = run(
        capsys,
        "budget",
        "set",
        adult,
        "--epsilon",
        "2",
        "--delta",
        "1e-6",
        "--reason",
        "Q3 release plan",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["budget"] == {"kind": "approx_dp", "epsilon": 2.0, "delta": 1e-6}

    sql = "SELECT sex, COUNT(*) AS n, AVG(age) FROM adult WHERE age >= 30 GROUP BY sex"
    code, out, err = run(
        capsys,
        "query",
        adult,
        "--sql",
        sql,
        "--epsilon",
        "0.5",
        "--purpose",
        "pay-gap report",
        "--json",
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["columns"] == ["sex", "n", "mean_age"]
    assert {r["sex"] for r in answer["rows"]} == {"Female", "Male"}  # declared categories
    for row in answer["rows"]:
        for cell in ("n", "mean_age"):
            lo, hi = row[cell]["ci"]
            assert lo <= row[cell]["value"] <= hi
            assert row[cell]["noise_scale"] > 0
    assert answer["ci_level"] == 0.95
    assert answer["budget"]["spent"]["epsilon"] == pytest.approx(0.5, rel=1e-4)
    assert answer["budget"]["remaining"] == pytest.approx(1.5, rel=1e-4)
    assert answer["charged"]["event_id"] >= 1

    code, out, _ = run(capsys, "budget", "show", adult, "--json")
    status = json.loads(out)
    assert status["events"] == 1
    assert status["cross_check"]["accountant"] == "rdp"
    assert status["cross_check"]["epsilon"] >= status["spent"]["epsilon"]

    code, out, _ = run(capsys, "budget", "history", adult, "--json")
    history = json.loads(out)["history"]
    assert [h["type"] for h in history] == ["budget", "release"]
    assert history[0]["reason"] == "Q3 release plan"
    release = history[1]
    assert release["purpose"] == "pay-gap report"
    assert release["what"].startswith("SELECT sex")
    assert release["actor"]
    names = [m["name"] for m in release["mechanisms"]]
    assert names == ["discrete_laplace", "laplace"]
    assert release["mechanisms"][0]["parameters"]["sensitivity"] == 1
    assert release["mechanisms"][1]["parameters"]["scale"] == pytest.approx(73 / 2 / 0.25)

    code, out, _ = run(capsys, "budget", "history", adult)
    assert code == 0
    assert "pay-gap report" in out


@pytest.mark.slow
def test_a_query_over_budget_is_refused_and_charges_nothing(capsys, adult):
    run(capsys, "budget", "set", adult, "--epsilon", "1")
    code, _, err = run(capsys, "query", adult, "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "5")
    assert code == 8
    assert "nothing was computed or charged" in err
    code, out, _ = run(capsys, "budget", "show", adult, "--json")
    assert json.loads(out)["events"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--sql", "SELECT COUNT(*) FROM t", "--epsilon", "-1"], 3, "epsilon must be positive"),
        (["--sql", "SELECT COUNT(*) FROM t", "--epsilon", "nan"], 3, "epsilon must be finite"),
        (
            ["--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1", "--delta", "1"],
            3,
            "delta must lie",
        ),
        (["--sql", "SELECT * FROM t", "--epsilon", "1"], 3, "outside the SQL subset"),
        (["--sql", "SELECT AVG(capital_gain) FROM t", "--epsilon", "1"], 4, "no declared bounds"),
        (["--sql", "SELECT AVG(agee) FROM t", "--epsilon", "1"], 4, "age"),
        (["--sql", "SELECT COUNT(*) FROM other", "--epsilon", "1"], 3, "unknown table"),
    ],
)
def test_bad_queries_get_clear_errors_and_charge_nothing(capsys, adult, args, code, message):
    run(capsys, "budget", "set", adult, "--epsilon", "10", "--delta", "1e-6")
    got, _, err = run(capsys, "query", adult, *args)
    assert got == code, err
    assert message in err.replace("\n", " ")
    assert "Traceback" not in err
    _, out, _ = run(capsys, "budget", "show", adult, "--json")
    assert json.loads(out)["events"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "0"], "epsilon must be positive"),
        (["--epsilon", "1", "--delta", "2"], "delta must lie"),
        (["--epsilon", "1", "--rho", "1"], "not both"),
        ([], "needs epsilon"),
    ],
)
def test_bad_budgets_are_refused(capsys, adult, args, message):
    code, _, err = run(capsys, "budget", "set", adult, *args)
    assert code == 3
    assert message in err.replace("\n", " ")


def test_unknown_dataset(capsys, adult):
    del adult
    code, _, err = run(capsys, "budget", "show", "nope")
    assert code == 6
    assert "no dataset named 'nope'" in err


def test_rho_budget(capsys, adult):
    code, out, _ = run(capsys, "budget", "set", adult, "--rho", "0.5", "--json")
    assert code == 0
    assert json.loads(out)["budget"] == {"kind": "zcdp", "rho": 0.5}
    code, out, err = run(
        capsys, "query", adult, "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "0.5", "--json"
    )
    assert code == 0, err
    # A pure 0.5-DP release costs rho = 0.5^2 / 2 under zCDP.
    assert json.loads(out)["budget"]["spent"]["rho"] == pytest.approx(0.125)


@pytest.mark.slow
def test_the_documented_command_through_the_real_executable(tmp_path, shared_data):
    veil = Path(sys.executable).with_name("veil")

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(veil), *args],
            cwd=tmp_path,
            env=os.environ | {"COLUMNS": "120"},
            capture_output=True,
            text=True,
            check=False,
        )

    assert call("init").returncode == 0
    assert (
        call(
            "datasets",
            "add",
            str(shared_data / "adult" / "adult.data"),
            "--format",
            "adult",
            "--name",
            "adult",
            "--bounds",
            "age=17:90",
        ).returncode
        == 0
    )
    assert call("budget", "set", "adult", "--epsilon", "1", "--delta", "1e-6").returncode == 0
    done = call(
        "query",
        "adult",
        "--sql",
        "SELECT race, COUNT(*), AVG(age) FROM t GROUP BY race",
        "--epsilon",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    assert "95% intervals" in done.stdout
    assert "Amer-Indian-Eskimo" in done.stdout
    assert "epsilon=0.5" in done.stdout


@pytest.mark.slow
def test_budget_verify_recomposes_and_reports_a_tampered_event(capsys, adult):
    """`veil budget verify` recomposes from scratch; an edited event makes it exit 11."""
    from sqlalchemy import update

    from veil.ledger import Ledger
    from veil.store.tables import PrivacyEventRow

    assert run(capsys, "budget", "set", adult, "--epsilon", "2", "--delta", "1e-6")[0] == 0
    for sql in ("SELECT COUNT(*) FROM t", "SELECT AVG(age) FROM t"):
        code, _, err = run(capsys, "query", adult, "--sql", sql, "--epsilon", "0.25")
        assert code == 0, err
    code, out, err = run(capsys, "budget", "verify", adult, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["chain"] == "intact"
    assert report["events"] == 2
    assert report["spent"] == report["incremental"]
    # Someone edits the first release in the database: the chain no longer links.
    ledger = Ledger.open()
    try:
        with ledger.store.session() as session:
            session.execute(
                update(PrivacyEventRow).where(PrivacyEventRow.seq == 1).values(what="edited")
            )
            first = session.scalar(select_mechanisms())
        with ledger.store.session() as session:
            cheaper = [{**first[0], "parameters": {**first[0]["parameters"], "scale": 1e6}}]
            session.execute(
                update(PrivacyEventRow).where(PrivacyEventRow.seq == 1).values(mechanisms=cheaper)
            )
    finally:
        ledger.store.dispose()
    code, out, _ = run(capsys, "budget", "verify", adult, "--json")
    assert code == 11
    report = json.loads(out)
    assert report["ok"] is False
    assert report["chain"] == "broken"
    assert any("event 1 " in problem for problem in report["problems"])
    code, out, _ = run(capsys, "budget", "verify", adult)
    assert code == 11
    assert "problem" in out


def select_mechanisms():  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from veil.store.tables import PrivacyEventRow

    return select(PrivacyEventRow.mechanisms).where(PrivacyEventRow.seq == 1)

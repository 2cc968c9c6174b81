"""`veil consent`: declare purposes, enable a dataset, import and set consent, and what queries see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.cli._app import main

N = 10


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ws(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A workspace with 'visits' (10 patients, one row each), a budget, under consent (opt-in)."""
    assert run(capsys, "init")[0] == 0
    data = tmp_path / "visits.csv"
    data.write_text("pid,age\n" + "".join(f"p{i},{30 + i}\n" for i in range(N)), encoding="utf-8")
    code, _, err = run(
        capsys, "datasets", "add", str(data), "--name", "visits", "--id", "pid",
        "--bounds", "age=0:120",
    )  # fmt: skip
    assert code == 0, err
    assert run(capsys, "budget", "set", "visits", "--epsilon", "1000")[0] == 0
    code, out, err = run(capsys, "consent", "enable", "visits", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "dataset": "visits", "default": "withdrawn", "previous": None, "changed": True
    }  # fmt: skip
    return tmp_path


def _count(capsys: pytest.CaptureFixture[str], purpose: str) -> tuple[int, dict]:
    code, out, err = run(
        capsys, "query", "visits", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "100",
        "--purpose", purpose, "--json",
    )  # fmt: skip
    return code, json.loads(out) if out.strip() else {"stderr": err}


def test_purposes_are_listed_and_added_by_owners(capsys, ws):
    code, out, _ = run(capsys, "consent", "purposes", "add", "clinical-audit",
                       "--description", "audits of clinical practice")  # fmt: skip
    assert code == 0 and "clinical-audit" in out
    code, out, _ = run(capsys, "consent", "purposes", "--json")
    names = [p["name"] for p in json.loads(out)["purposes"]]
    assert "clinical-audit" in names and "statistics" in names
    code, _, err = run(capsys, "consent", "purposes", "add", "Bad Name", "--description", "x")
    assert code != 0 and "invalid purpose name" in err


def test_import_set_and_show_then_a_query_sees_only_consenting_people(capsys, ws: Path):
    consents = ws / "consents.csv"
    consents.write_text(
        "person,purpose,status,at\n"
        + "".join(f"p{i},statistics,granted,2026-01-01\n" for i in range(6)),
        encoding="utf-8",
    )
    code, out, err = run(capsys, "consent", "import", "visits", str(consents), "--json")
    assert code == 0, err
    assert json.loads(out)["records"] == 6
    code, out = _count(capsys, "statistics: headcount")
    assert code == 0
    charged = out["charged"]
    assert round(out["rows"][0][out["columns"][0]]["value"]) == 6
    code, out, err = run(capsys, "consent", "set", "visits", "--person", "p0",
                         "--purpose", "statistics", "--withdrawn", "--source", "phone")  # fmt: skip
    assert code == 0, err
    code, out = _count(capsys, "statistics")
    assert round(out["rows"][0][out["columns"][0]]["value"]) == 5
    assert charged["event_id"] != out["charged"]["event_id"]
    code, out, _ = run(capsys, "consent", "show", "visits", "--json")
    summary = json.loads(out)
    assert summary["purposes"]["statistics"] == {"granted": 5, "withdrawn": 1}
    code, out, _ = run(capsys, "consent", "show", "visits", "--person", "p0", "--json")
    assert json.loads(out)["purposes"]["statistics"]["status"] == "withdrawn"
    assert json.loads(out)["purposes"]["statistics"]["source"] == "phone"
    # The ledger's events name the consent state each answer was computed under.
    code, out, _ = run(capsys, "budget", "history", "visits", "--json")
    assert code == 0
    assert "through_record" in out and '"rows_excluded": 5' in out
    code, out, err = run(capsys, "trail", "verify")
    assert code == 0, err + out


def test_a_query_whose_purpose_names_no_consent_term_is_refused(capsys, ws):
    code, out, err = run(
        capsys, "query", "visits", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1",
        "--purpose", "ad-hoc analysis",
    )  # fmt: skip
    assert code != 0
    assert "under consent management" in err and "statistics: " in err
    code, out, _ = run(capsys, "budget", "history", "visits", "--json")
    assert "through_record" not in out  # nothing was charged
    # The default purpose names a term ("statistics: ad-hoc analysis"): it runs.
    code, out, err = run(
        capsys, "query", "visits", "--sql", "SELECT COUNT(*) FROM t", "--epsilon", "1",
    )  # fmt: skip
    assert code == 0, err


def test_a_bad_csv_writes_nothing(capsys, ws: Path):
    bad = ws / "bad.csv"
    bad.write_text("person,purpose,status\np1,statistics,granted\np2,marketing,granted\n")
    code, _, err = run(capsys, "consent", "import", "visits", str(bad))
    assert code != 0 and "line 3" in err and "undeclared consent purpose" in err
    code, out, _ = run(capsys, "consent", "show", "visits", "--json")
    assert json.loads(out)["through_record"] == 0


def test_set_needs_exactly_one_status(capsys, ws):
    code, _, err = run(capsys, "consent", "set", "visits", "--person", "p1",
                       "--purpose", "statistics")  # fmt: skip
    assert code != 0 and "--granted" in err


def test_an_analyst_key_may_not_set_or_read_consent(capsys, ws, monkeypatch):
    code, out, err = run(capsys, "keys", "create", "reporter", "--role", "analyst", "--json")
    assert code == 0, err
    monkeypatch.setenv("VEIL_KEY", json.loads(out)["token"])
    for args in (
        ("consent", "set", "visits", "--person", "p1", "--purpose", "statistics", "--granted"),
        ("consent", "enable", "visits", "--default", "granted"),
        ("consent", "show", "visits", "--person", "p1"),
        ("consent", "purposes", "add", "ads", "--description", "advertising"),
    ):
        code, _, err = run(capsys, *args)
        assert code == 9, (args, err)
    code, out, _ = run(capsys, "consent", "purposes", "--json")  # the vocabulary is for everyone
    assert code == 0 and "ads" not in out
    monkeypatch.delenv("VEIL_KEY")
    code, out, _ = run(capsys, "trail", "show", "--who", "svc:reporter", "--json")
    refused = [(e["action"], e["outcome"]) for e in json.loads(out)["entries"]]
    assert refused == [
        ("consent.record", "refused"),
        ("consent.enable", "refused"),
        ("consent.read", "refused"),
        ("consent.purpose", "refused"),
    ]
    code, out, _ = run(capsys, "consent", "show", "visits", "--json")
    assert json.loads(out)["through_record"] == 0 and json.loads(out)["default"] == "withdrawn"

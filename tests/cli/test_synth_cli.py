"""``veil synth`` as a user runs it: a registered dataset, a budget, a release, its card and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.cli._app import main

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


COLUMNS = "age,sex,race,income"


@pytest.fixture
def adult(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> str:
    lines = (shared_data / "adult" / "adult.data").read_text(encoding="utf-8").splitlines()
    small = tmp_path / "adult600.data"
    small.write_text("\n".join(lines[:600]) + "\n", encoding="utf-8")
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys, "datasets", "add", str(small), "--format", "adult", "--name", "adult",
        "--bounds", "age=17:90",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(capsys, "budget", "set", "adult", "--epsilon", "5", "--delta", "1e-6")
    assert code == 0, err
    return "adult"


def _history(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, out, err = run(capsys, "budget", "history", "adult", "--json")
    assert code == 0, err
    data = json.loads(out)
    return [e for e in data["history"] if e["type"] == "release"]


def _spent(capsys: pytest.CaptureFixture[str]) -> float:
    code, out, err = run(capsys, "budget", "show", "adult", "--json")
    assert code == 0, err
    return float(json.loads(out)["spent"]["epsilon"] or 0.0)


@pytest.mark.slow
def test_a_release_with_its_card_report_and_ledger_events(capsys, adult, tmp_path: Path):
    out_csv, report = tmp_path / "synth.csv", tmp_path / "report.html"
    code, out, err = run(
        capsys, "synth", adult, "--epsilon", "1", "--columns", COLUMNS, "--rounds", "2",
        "--workload", "2-way", "-o", str(out_csv), "--report", str(report), "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    card = json.loads((tmp_path / "synth.csv.card.json").read_text(encoding="utf-8"))
    assert card == payload["card"]
    assert card["method"] == "aim" and card["epsilon"] == 1.0 and card["delta"] == 1e-6
    assert card["columns"] == COLUMNS.split(",")
    assert card["run"]["rounds"] == 2  # what ran, not the setting
    header = out_csv.read_text(encoding="utf-8").splitlines()[0]
    assert header == COLUMNS
    assert payload["charged"]["charged"]["epsilon"] <= 1.0
    # The report's real-data numbers are a use without DP, recorded before the release.
    events = _history(capsys)
    assert [e["operation"] for e in events] == ["non_private", "synthetic"], events
    text = json.dumps(events)
    assert "non_private" in text and "exponential" in text and "discrete_gaussian" in text
    assert card["ledger_event"] == payload["charged"]["event_id"]
    html = report.read_text(encoding="utf-8")
    assert "diagnostic" in html.lower() and "<script src" not in html


@pytest.mark.slow
def test_a_workload_file_that_leaves_columns_out_still_measures_them(capsys, adult, tmp_path):
    # Once a KeyError after the charge: the one-way answers came from the workload's cliques only.
    workload = tmp_path / "workload.txt"
    workload.write_text("age,sex\n", encoding="utf-8")
    code, out, err = run(
        capsys, "synth", adult, "--epsilon", "1", "--columns", COLUMNS, "--rounds", "1",
        "--workload", str(workload), "-o", str(tmp_path / "s.parquet"), "--json",
    )  # fmt: skip
    assert code == 0, err
    measured = json.loads(out)["card"]["run"]["measured"]
    columns = COLUMNS.split(",")
    assert measured[: len(columns)] == [[c] for c in columns]  # every one-way first


def test_bad_input_is_refused_before_anything_is_charged(capsys, adult, tmp_path: Path):
    cases = [
        ("synth", adult, "-o", str(tmp_path / "a.csv")),  # no budget for the release
        ("synth", adult, "--epsilon", "1", "-o", str(tmp_path / "a.txt")),  # unknown format
        ("synth", adult, "--epsilon", "1", "--method", "gan", "-o", str(tmp_path / "a.csv")),
        # fnlwgt has no declared bounds in this registration
        (
            "synth",
            adult,
            "--epsilon",
            "1",
            "--columns",
            "fnlwgt,sex",
            "-o",
            str(tmp_path / "a.csv"),
        ),
        ("synth", adult, "--epsilon", "1e-4", "--columns", COLUMNS, "-o", str(tmp_path / "a.csv")),
    ]
    messages = []
    for args in cases:
        code, _, err = run(capsys, *args)
        assert code != 0, args
        messages.append(err)
    assert "fnlwgt" in messages[3] and "Fix:" in messages[3]
    assert "too small" in messages[4]
    assert _spent(capsys) == 0.0
    assert not list(tmp_path.glob("a.*"))

"""`veil demo`: runs on bundled data in its own workspace and writes a self-contained summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from veil.cli._app import main
from veil.cli._demo import Tour, summary_html


@pytest.mark.slow  # the whole tour, twice
def test_demo_runs_to_the_end_twice(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: PLR0915
    # A developer's settings must not leak into the demo: it always uses its own SQLite file.
    monkeypatch.setenv("VEIL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    for _ in range(2):
        assert main(["demo", "--out", "tour", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
    assert [s["title"] for s in result["steps"]] == [
        "Create a workspace",
        "Register a dataset with its privacy schema",
        "Answer a SQL query with differential privacy (charged to the ledger first)",
        "Refuse a query that would exceed the budget (nothing computed or charged)",
        "Train a DP-SGD model on bundled data and write its privacy card",
        "Audit the model: membership, inversion, extraction and a canary DP audit",
        "Scan the patients table, anonymise it to k = 5 (Mondrian), scan it again",
        "Redact a clinical note (Presidio with spaCy's small English model)",
        "Encrypted inference: the doctor's round trip (CKKS) and a Paillier score",
        "A secure average over three hospitals (Shamir 2-of-3, one process each, over TCP)",
        "Federated training over ten clinics: SecAgg+ and DP-FedAvg, epsilon in the ledger",
    ]
    federated = result["steps"][10]
    assert federated["privacy"]["charged"] is True
    # The clinics hold the digits' people: one budget for both models, composed by the ledger.
    assert federated["budget"]["events"] == 2
    assert federated["budget"]["spent"]["epsilon"] >= federated["privacy"]["epsilon"]
    assert federated["budget"]["spent"]["epsilon"] <= (
        federated["privacy"]["epsilon"] + result["steps"][4]["card"]["epsilon"] + 1e-6
    )
    assert federated["rounds"] >= 4
    register = result["steps"][1]
    assert register["rows"] == 442
    assert register["schema"]["quasi_identifiers"] == ["age", "sex"]
    query, refusal = result["steps"][2], result["steps"][3]
    assert {r["sex"] for r in query["answer"]["rows"]} == {"1", "2"}
    assert query["budget"]["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-4)
    assert refusal["refused"] is True
    assert refusal["error"]["code"] == "budget_exceeded"
    assert refusal["budget_after"]["events"] == 1  # the refused query was not charged
    assert [h["type"] for h in refusal["history"]] == ["budget", "release"]
    card = result["steps"][4]["card"]
    assert card["dataset"] == "digits" and card["private"] is True
    assert card["test_dataset"] == "digits-test" and card["examples"] == 1198
    assert card["epsilon"] <= 1.0 and card["sampling"] == "poisson"
    assert card["ledger_event_id"] is not None
    assert "train_accuracy" not in card  # exact accuracy on private batches is never published
    assert result["steps"][4]["budget"]["spent"]["epsilon"] == pytest.approx(card["epsilon"])
    html = (tmp_path / "tour" / "summary.html").read_text(encoding="utf-8")
    assert "privacy card" in html
    assert "A differentially private query" in html
    assert "Refused:" in html
    assert "<h1>Veil demo summary</h1>" in html
    assert "progression" in html
    assert "The model's privacy audit" in html
    audit = result["steps"][5]
    assert {v["attack"] for v in audit["verdicts"]} == {
        "membership",
        "dp",
        "inversion",
        "extraction",
        "utility",
    }
    assert audit["claimed_epsilon"] == pytest.approx(card["epsilon"])
    report = (tmp_path / "tour" / "audit-report.html").read_text(encoding="utf-8")
    assert report.count("data:image/png;base64,") == 3  # ROC, inverted digits, extraction curve
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), (
        "the summary must be self-contained"
    )
    anonymised = result["steps"][6]
    assert anonymised["before"]["k_anonymity"] == 1
    assert anonymised["after"]["k_anonymity"] >= 5
    assert anonymised["before"]["linkage"]["correct"] > 50
    assert anonymised["after"]["linkage"]["correct"] == 0
    assert (tmp_path / "tour" / "diabetes-anonymised.csv").is_file()
    assert "before and after anonymisation" in html
    note = result["steps"][7]
    assert note["reversible"] is True
    assert {"PERSON", "UK_NHS", "CREDIT_CARD", "EMAIL_ADDRESS"} <= set(note["counts"])
    assert "Margaret Okafor" not in note["tagged"] and "<PERSON>" in note["tagged"]
    assert "Margaret Okafor" not in note["surrogate"]
    _check_crypto_steps(result, html)


def _check_crypto_steps(result: dict, html: str) -> None:
    encrypted = result["steps"][8]
    assert encrypted["encrypted_prediction"] == encrypted["plaintext_prediction"]
    assert encrypted["max_error"] <= encrypted["error_bound"]
    assert encrypted["secret_key_in_context"] is False
    assert encrypted["plan"]["total_coeff_bits"] <= encrypted["plan"]["max_coeff_bits"] == 218
    assert encrypted["batch"]["agreement"] == 1.0
    assert encrypted["paillier"]["score"] == pytest.approx(
        encrypted["paillier"]["plaintext_score"], abs=1e-5
    )
    average = result["steps"][9]
    assert average["patients"] == [148, 147, 147]
    assert abs(average["secure_mean"] - average["plaintext_mean"]) <= 3 * average["resolution"]
    assert "Encrypted inference" in html
    assert "Secure average over three hospitals" in html


@pytest.mark.slow
def test_demo_prints_the_schema(capsys, tmp_path: Path):
    assert main(["demo", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "Register a dataset" in out
    assert "quasi-identifier" in out
    assert "Summary written to" in out
    assert "95% intervals" in out
    assert "was refused" in out
    assert "noise multiplier" in out  # the model's privacy card


def test_demo_refuses_a_directory_it_did_not_make(capsys, tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["demo", "--out", str(tmp_path / "mine")]) == 3
    assert "already holds other files" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_the_summary_escapes_what_the_tour_recorded(tmp_path: Path):
    # The template autoescapes: names, notes and messages cannot inject markup into the page.
    column = SimpleNamespace(name="<b>age</b>", kind="numeric", bounds=(0.0, 1.0), categories=None)
    schema = SimpleNamespace(
        columns=[column], privacy_unit=None, quasi_identifiers=["<b>age</b>"], sensitive=[]
    )
    info = SimpleNamespace(
        name="patients",
        n_rows=3,
        source="memory",
        content_sha256="0" * 64,
        schema=schema,
        report={"columns": {}},
    )
    tour = Tour(tmp_path)
    tour.step(
        "Redact a clinical note",
        0.1,
        note="<script>alert(1)</script>",
        tagged="<PERSON> called",
        surrogate="Ann called",
        counts={"PERSON": 1},
        reversible=True,
    )
    page = summary_html(tour, info, references=4, k=5, linked=100)  # type: ignore[arg-type]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;age&lt;/b&gt;" in page and "&lt;PERSON&gt; called" in page
    assert "quasi-identifier" in page and "0 .. 1" in page
    assert "found: 1 PERSON." in page

"""`veil demo`: runs on bundled data in its own workspace and writes a self-contained summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from veil.access.verifier import verify_inclusion_proof
from veil.cli import demo as demo_command
from veil.cli._app import main
from veil.cli._demo import Tour, run_demo, summary_html
from veil.cli._demo._steps import MARKER, _prepare
from veil.workspace import login_name


@pytest.mark.slow  # the whole tour, once: printed for people, then as JSON from the same run
def test_demo_runs_to_the_end(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: PLR0915
    # A developer's settings must not leak into the demo: it always uses its own SQLite file.
    monkeypatch.setenv("VEIL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    runs: list[tuple[Tour, Any]] = []

    def recorded(directory: Path) -> tuple[Tour, Any]:
        runs.append(run_demo(directory))
        return runs[-1]

    monkeypatch.setattr(demo_command, "run_demo", recorded)
    assert main(["demo", "--out", "tour"]) == 0
    out = capsys.readouterr().out
    assert "Register a dataset" in out
    assert "quasi-identifier" in out
    assert "Released as read, not generalised: s1, s2, s3, s4, s5, s6" in " ".join(out.split())
    assert "Summary written to" in out
    assert "95% intervals" in out
    assert "was refused" in out
    assert "Roles and the trail" in out and "may not budget.set" in out
    assert "the standalone verifier accepts" in out
    assert "noise multiplier" in out  # the model's privacy card
    assert "asks to be erased" in out and "no longer opens" in out
    # The same tour as JSON (`--json` prints what the run recorded; running it again would
    # repeat two minutes of CPU): the command's JSON path, on the run above.
    monkeypatch.setattr(demo_command, "run_demo", lambda directory: runs[0])
    assert main(["demo", "--out", "tour", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["summary"] == str(tmp_path / "tour" / "summary.html")
    assert [s["title"] for s in result["steps"]] == [
        "Create a workspace",
        "Register a dataset with its privacy schema",
        "Answer a SQL query with differential privacy (charged to the ledger first)",
        "Refuse a query that would exceed the budget (nothing computed or charged)",
        "An analyst's budget change refused, the trail verified, one inclusion proof checked",
        "Train a DP-SGD model on bundled data and write its privacy card",
        "Audit the model: membership, inversion, extraction and a canary DP audit",
        "Scan the patients table, anonymise it to k = 5 (Mondrian), scan it again",
        "Redact a clinical note (Presidio with spaCy's small English model)",
        "Encrypted inference: the doctor's round trip (CKKS) and a Paillier score",
        "A secure average over three hospitals (Shamir 2-of-3, one process each, over TCP)",
        "Federated training over ten clinics: SecAgg+ and DP-FedAvg, epsilon in the ledger",
        "Forget a patient: consent withdrawn, erased, the model unlearned and tested",
    ]
    steps = {s["title"].split(" ")[0]: s for s in result["steps"]}
    forget = result["steps"][-1]
    erasure, unlearning = forget["erasure"], forget["unlearning"]
    assert (erasure["from_version"], erasure["to_version"], erasure["rows_removed"]) == (1, 2, 1)
    assert erasure["shredded"] is True and "P1017" not in json.dumps(erasure)  # a token only
    assert unlearning["ok"] and len(unlearning["unlearning"]["shards_retrained"]) == 1
    assert unlearning["verification"]["run"] is True
    assert forget["carried"]["erased_people"] == 0
    assert "was destroyed (crypto-shredded)" in forget["backup_after_erasure"]
    assert [v["state"] for v in forget["versions"]] == ["shredded", "current"]
    federated = steps["Federated"]
    assert federated["privacy"]["charged"] is True
    # The clinics hold the digits' people: one budget for both models, composed by the ledger.
    assert federated["budget"]["events"] == 2
    assert federated["budget"]["spent"]["epsilon"] >= federated["privacy"]["epsilon"]
    assert federated["budget"]["spent"]["epsilon"] <= (
        federated["privacy"]["epsilon"] + steps["Train"]["card"]["epsilon"] + 1e-6
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
    card = steps["Train"]["card"]
    assert card["dataset"] == "digits" and card["private"] is True
    assert card["test_dataset"] == "digits-test" and card["examples"] == 1198
    assert card["epsilon"] <= 1.0 and card["sampling"] == "poisson"
    assert card["ledger_event_id"] is not None
    assert "train_accuracy" not in card  # exact accuracy on private batches is never published
    assert steps["Train"]["budget"]["spent"]["epsilon"] == pytest.approx(card["epsilon"])
    html = (tmp_path / "tour" / "summary.html").read_text(encoding="utf-8")
    assert "Consent, erasure and unlearning" in html and "crypto-shredded" in html
    assert "privacy card" in html
    assert "A differentially private query" in html
    assert "Refused:" in html
    assert "<h1>Veil demo summary</h1>" in html
    assert "progression" in html
    assert "The model's privacy audit" in html
    audit = steps["Audit"]
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
    anonymised = steps["Scan"]
    assert anonymised["before"]["k_anonymity"] == 1
    assert anonymised["after"]["k_anonymity"] >= 5
    assert anonymised["before"]["linkage"]["correct"] > 50
    assert anonymised["after"]["linkage"]["correct"] == 0
    assert (tmp_path / "tour" / "diabetes-anonymised.csv").is_file()
    assert "before and after anonymisation" in html
    note = steps["Redact"]
    assert note["reversible"] is True
    assert {"PERSON", "UK_NHS", "CREDIT_CARD", "EMAIL_ADDRESS"} <= set(note["counts"])
    assert "Margaret Okafor" not in note["tagged"] and "<PERSON>" in note["tagged"]
    assert "Margaret Okafor" not in note["surrogate"]
    _check_crypto_steps(steps, html)
    _check_trail_step(result, steps["An"], html, tmp_path / "tour")
    # Run again over its own directory, the tour starts clean: everything it wrote goes.
    _prepare(tmp_path / "tour")
    assert [p.name for p in (tmp_path / "tour").iterdir()] == [MARKER]


def _check_trail_step(result: dict[str, Any], step: dict[str, Any], html: str, tour: Path) -> None:
    """The analyst's key is refused a budget raise; the trail verifies; the proof checks out."""
    account = login_name()
    assert step["key"]["principal"] == "svc:demo-analyst"
    assert step["key"]["scopes"] == [{"role": "analyst", "scope": "diabetes"}]
    assert step["key"]["created_by"] == account  # the account running the demo owns its workspace
    assert step["refused"] is True
    assert step["error"]["code"] == "permission_denied"
    assert step["error"]["details"]["missing"] == "budget.set"
    entry = step["entry"]
    assert (entry["actor"], entry["action"], entry["outcome"]) == (
        "svc:demo-analyst",
        "budget.set",
        "refused",
    )
    assert entry["dataset"] == "diabetes" and entry["details"]["key_id"] == step["key"]["key_id"]
    # The refusal changed nothing: the budget is still the one the owner set.
    refusal = next(s for s in result["steps"] if s["title"].startswith("Refuse"))
    assert refusal["budget_after"]["budget"]["epsilon"] == 3.0
    report = step["verify"]
    assert report["ok"] is True and report["problems"] == []
    assert report["size"] >= entry["seq"] and report["budgets_checked"] >= 1
    assert report["ledger_events_checked"] >= 1  # the query's charge, matched with its entry
    assert report["heads_checked"] >= 1  # the head the proof is under, signed by the trail's key
    proof = step["proof"]
    assert proof["seq"] == entry["seq"] and proof["head_size"] >= entry["seq"]
    assert proof["verified"] is True and proof["tampered_verified"] is False
    # The file is what an auditor checks without Veil, with the key the owner hands over.
    document = json.loads((tour / "trail-proof.json").read_text(encoding="utf-8"))
    assert verify_inclusion_proof(document, bytes.fromhex(proof["public_key"]))
    assert not verify_inclusion_proof(document, bytes(32))
    assert (tour / "trail-proof.json").stat().st_mode & 0o077 == 0
    # The tour acts as the account running it, never as a made-up actor.
    assert {h["actor"] for h in refusal["history"]} == {account}
    # The key's secret is shown nowhere: not in the tour's record, the page or the proof.
    assert "veil_sk_" not in json.dumps(result) and "veil_sk_" not in html
    assert "veil_sk_" not in json.dumps(document)
    assert "Roles and the trail" in html and "Refused: svc:demo-analyst may not budget.set" in html


def _check_crypto_steps(steps: dict[str, Any], html: str) -> None:
    encrypted = steps["Encrypted"]
    assert encrypted["encrypted_prediction"] == encrypted["plaintext_prediction"]
    assert encrypted["max_error"] <= encrypted["error_bound"]
    assert encrypted["secret_key_in_context"] is False
    assert encrypted["plan"]["total_coeff_bits"] <= encrypted["plan"]["max_coeff_bits"] == 218
    assert encrypted["batch"]["agreement"] == 1.0
    assert encrypted["paillier"]["score"] == pytest.approx(
        encrypted["paillier"]["plaintext_score"], abs=1e-5
    )
    average = steps["A"]
    assert average["patients"] == [148, 147, 147]
    assert abs(average["secure_mean"] - average["plaintext_mean"]) <= 3 * average["resolution"]
    assert "Encrypted inference" in html
    assert "Secure average over three hospitals" in html


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

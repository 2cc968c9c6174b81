"""`veil trail`: show, verify (edits and truncation), prove (checked without Veil) and checkpoint."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from veil.access.verifier import verify_inclusion_proof
from veil.cli._app import main
from veil.workspace import login_name


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ws(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A workspace made by `veil init` with a few entries (3 to 6); its SQLite database."""
    from veil.access import Access

    assert run(capsys, "init")[0] == 0
    access = Access.open()  # the library, as `veil access grant` calls it (faster than three runs)
    try:
        for principal, dataset in (("bob", "adult"), ("carol", "adult"), ("dave", "census")):
            access.grant(principal, "analyst", dataset, reason=f"study of {dataset}")
    finally:
        access.store.dispose()
    return tmp_path / ".veil" / "veil.db"


def _entries(capsys: pytest.CaptureFixture[str], *options: str) -> dict:
    code, out, err = run(capsys, "trail", "show", "--json", *options)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_show_lists_the_latest_entries_with_filters(capsys, ws):
    code, out, _ = run(capsys, "trail", "show")
    assert code == 0
    for text in ("trail.start", "access.claim", "access.grant", "study of adult", "allowed"):
        assert text in out
    assert "Showing the latest" not in out

    shown = _entries(capsys)
    assert set(shown) == {"entries", "shown", "limit", "truncated", "filters"}
    assert (shown["shown"], shown["limit"], shown["truncated"]) == (5, 50, False)
    assert [e["seq"] for e in shown["entries"]] == [1, 2, 3, 4, 5]
    assert set(shown["entries"][2]) == {
        "seq", "at", "actor", "action", "outcome", "purpose", "dataset", "links", "details",
        "leaf",
    }  # fmt: skip

    latest = _entries(capsys, "--limit", "2")
    assert [e["seq"] for e in latest["entries"]] == [4, 5]
    assert latest["truncated"] is True
    code, out, _ = run(capsys, "trail", "show", "--limit", "2")
    assert "Showing the latest 2 matching entries" in out

    adult = _entries(capsys, "--dataset", "adult")["entries"]
    assert [e["details"]["principal"] for e in adult] == ["bob", "carol"]
    assert [e["seq"] for e in _entries(capsys, "--action", "access.claim")["entries"]] == [2]
    assert len(_entries(capsys, "--who", login_name())["entries"]) == 5
    assert _entries(capsys, "--who", "mallory")["entries"] == []
    assert len(_entries(capsys, "--since", "1h")["entries"]) == 5
    assert len(_entries(capsys, "--since", "2000-01-01")["entries"]) == 5
    future = _entries(capsys, "--since", "2999-01-01T00:00Z")
    assert future["entries"] == []
    assert future["filters"]["since"] == "2999-01-01T00:00:00+00:00"
    code, out, _ = run(capsys, "trail", "show", "--dataset", "nothing-here")
    assert "No trail entry matches" in out


@pytest.mark.parametrize("since", ["yesterday", "0h", "31/01/2026"])
def test_show_refuses_a_bad_since(capsys, ws, since):
    code, out, err = run(capsys, "trail", "show", "--since", since, "--json")
    assert code == 3
    assert json.loads(out)["error"]["code"] == "invalid_input"
    assert "--since" in err and "Fix: pass for example --since" in err


def test_an_auditor_of_one_dataset_reads_its_entries_only(capsys, ws, monkeypatch):
    code, out, _ = run(
        capsys, "keys", "create", "audit", "--role", "auditor", "--dataset", "adult", "--json"
    )
    monkeypatch.setenv("VEIL_KEY", json.loads(out)["token"])
    assert len(_entries(capsys, "--dataset", "adult")["entries"]) == 3  # two grants, the key
    code, _, err = run(capsys, "trail", "show", "--dataset", "census")
    assert code == 9
    code, _, err = run(capsys, "trail", "show")
    assert code == 9
    assert "trail.read" in err


def test_verify_passes_on_a_clean_trail(capsys, ws):
    code, out, err = run(capsys, "trail", "verify")
    assert code == 0, err
    for text in ("entries checked", "entries/s", "signed heads checked", "ledger events"):
        assert text in out
    assert "The trail is intact: 5 entries." in out
    code, out, _ = run(capsys, "trail", "verify", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["ok"] is True and report["size"] == 5 and report["problems"] == []
    assert report["first_bad"] is None and report["exported"] is None
    assert "error" not in report
    assert report["entries_per_second"] > 0


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE trail_entries SET body = replace(body, 'study of adult', 'nothing') WHERE seq = 4",
        "UPDATE trail_entries SET actor = 'mallory' WHERE seq = 4",
        "DELETE FROM trail_entries WHERE seq = 4",
    ],
    ids=["body", "actor", "delete"],
)
def test_verify_fails_after_a_direct_edit_and_names_the_entry(capsys, ws, edit):
    with sqlite3.connect(ws) as db:
        assert db.execute(edit).rowcount == 1
    code, out, err = run(capsys, "trail", "verify")
    assert code == 11
    assert "entry 4" in out
    assert "error [store_error]: the trail failed verification at entry 4" in err
    code, out, _ = run(capsys, "trail", "verify", "--json")
    report = json.loads(out)  # one JSON object: the report, with the error in it
    assert code == 11
    assert report["ok"] is False and report["first_bad"] == 4
    assert report["problems"][0]["seq"] == 4
    assert report["error"]["code"] == "store_error"


def test_prove_writes_a_proof_the_standalone_verifier_accepts(capsys, ws, tmp_path):
    code, out, err = run(capsys, "trail", "prove", "3", "-o", "proof.json")
    assert code == 0, err
    document = json.loads((tmp_path / "proof.json").read_text(encoding="utf-8"))
    assert (tmp_path / "proof.json").stat().st_mode & 0o777 == 0o600  # a body names who did what
    code, checkpointed, _ = run(capsys, "trail", "checkpoint", "-o", "head.json", "--json")
    public_key = json.loads(checkpointed)["head"]["public_key"]
    assert f"--public-key {public_key}" in out
    assert "verifier.py proof.json" in out
    assert verify_inclusion_proof(document, bytes.fromhex(public_key))
    assert json.loads(document["entry"]["body"])["seq"] == 3
    forged = json.loads(json.dumps(document))
    forged["entry"]["body"] = forged["entry"]["body"].replace("bob", "eve")
    assert not verify_inclusion_proof(forged, bytes.fromhex(public_key))
    assert not verify_inclusion_proof(document, bytes(32))  # another key

    code, out, _ = run(capsys, "trail", "prove", "3", "--json")
    result = json.loads(out)
    assert set(result) == {"seq", "file", "bytes", "public_key", "check", "proof"}
    assert result["file"] is None and result["public_key"] == public_key
    assert verify_inclusion_proof(result["proof"], bytes.fromhex(public_key))
    code, out, err = run(capsys, "trail", "prove", "5")  # the document on stdout, hints on stderr
    assert verify_inclusion_proof(json.loads(out), bytes.fromhex(public_key))
    assert "veil trail prove 5 -o proof.json" in err

    code, _, err = run(capsys, "trail", "prove", "99")
    assert code == 6
    assert "no trail entry 99" in err


def test_checkpoint_writes_the_signed_head(capsys, ws, tmp_path):
    code, out, err = run(capsys, "trail", "checkpoint", "-o", "heads/head.json")
    assert code == 0, err
    head = json.loads((tmp_path / "heads" / "head.json").read_text(encoding="utf-8"))
    assert (tmp_path / "heads" / "head.json").stat().st_mode & 0o777 == 0o644  # no secret in it
    assert head["format"] == "veil-trail-head/v1" and head["size"] == 5
    assert head["root"] in out and head["public_key"] in out
    assert "Keep a copy" in out
    code, out, _ = run(capsys, "trail", "checkpoint", "-o", "again.json", "--json")
    assert json.loads(out) == {"file": "again.json", "head": head}  # the same size: the same head


def test_checkpoint_needs_an_owner(capsys, ws, monkeypatch):
    code, out, _ = run(capsys, "keys", "create", "audit", "--role", "auditor", "--json")
    monkeypatch.setenv("VEIL_KEY", json.loads(out)["token"])
    code, _, err = run(capsys, "trail", "checkpoint", "-o", "head.json")
    assert code == 9
    assert "trail.checkpoint" in err
    assert not Path("head.json").exists()
    assert run(capsys, "trail", "verify")[0] == 0  # an auditor verifies


@pytest.mark.slow
def test_only_the_exported_head_catches_a_clean_truncation(capsys, ws):
    with sqlite3.connect(ws) as db:
        state = db.execute("SELECT size, chain, frontier FROM trail_state WHERE id = 1").fetchone()
    assert state[0] == 5
    assert run(capsys, "access", "grant", "erin", "auditor", "--reason", "audit")[0] == 0
    assert run(capsys, "access", "revoke", "bob", "analyst", "--dataset", "adult")[0] == 0
    code, _, _ = run(capsys, "trail", "checkpoint", "-o", "head.json")
    assert code == 0
    code, out, _ = run(capsys, "trail", "verify", "--head", "head.json")
    assert code == 0
    assert "contained" in out and "verified" in out
    assert "extends the exported head" in out

    # Someone who can write the database removes the last two entries and the heads that
    # cover them, and puts the trail's state back as it was: the trail is a valid prefix.
    with sqlite3.connect(ws) as db:
        db.execute("DELETE FROM trail_entries WHERE seq > 5")
        db.execute("DELETE FROM trail_heads WHERE size > 5")
        db.execute("UPDATE trail_state SET size = ?, chain = ?, frontier = ? WHERE id = 1", state)
    assert run(capsys, "trail", "verify")[0] == 0  # nothing in the database shows it
    code, out, err = run(capsys, "trail", "verify", "--head", "head.json", "--json")
    assert code == 11
    report = json.loads(out)
    assert report["first_bad"] == 6
    assert [p["kind"] for p in report["problems"]] == ["truncated"]
    assert report["exported"]["contained"] is False
    assert report["exported"]["signed_by_trail_key"] is True
    code, out, err = run(capsys, "trail", "verify", "--head", "head.json")
    assert code == 11
    assert "NO: the trail no longer holds it" in out
    assert "entry 6" in err


def test_verify_with_a_head_that_extends_a_checkpoint_reports_the_consistency_proof(capsys, ws):
    assert run(capsys, "trail", "checkpoint", "-o", "head.json")[0] == 0
    for principal in ("frank", "grace", "heidi"):
        assert run(capsys, "access", "grant", principal, "consumer")[0] == 0
    code, out, _ = run(capsys, "trail", "verify", "--head", "head.json", "--json")
    assert code == 0
    exported = json.loads(out)["exported"]
    assert exported["size"] == 5
    assert exported["contained"] and exported["consistency_verified"]
    assert exported["consistency_proof_hashes"] > 0


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 6, "does not exist"),
        ("not json", 3, "not JSON"),
        ('{"size": 3}', 3, "not a Veil trail head"),
        ("[1, 2]", 3, "not a Veil trail head"),
    ],
)
def test_verify_refuses_a_bad_head_file(capsys, ws, tmp_path, content, code, message):  # noqa: PLR0917
    if content is not None:
        (tmp_path / "head.json").write_text(content, encoding="utf-8")
    got, _, err = run(capsys, "trail", "verify", "--head", "head.json")
    assert got == code
    assert message in err


@pytest.mark.slow
@pytest.mark.postgres
def test_the_commands_on_postgresql(capsys, tmp_path, monkeypatch, postgres_url):
    monkeypatch.setenv("VEIL_DATABASE_URL", postgres_url)
    code, out, err = run(capsys, "init", "--json")
    assert code == 0, err
    assert json.loads(out)["backend"] == "postgresql"
    code, out, _ = run(capsys, "keys", "create", "bi", "--role", "analyst", "--json")
    token = json.loads(out)["token"]
    monkeypatch.setenv("VEIL_KEY", token)
    code, _, _ = run(capsys, "access", "grant", "svc:bi", "owner")
    assert code == 9
    monkeypatch.delenv("VEIL_KEY")
    shown = _entries(capsys)["entries"]
    assert [(e["action"], e["outcome"]) for e in shown][-2:] == [
        ("keys.create", "allowed"),
        ("access.grant", "refused"),
    ]
    assert token.split("_", 3)[3] not in json.dumps(shown)  # the secret (it may hold "_")
    assert run(capsys, "trail", "checkpoint", "-o", "head.json")[0] == 0
    code, out, _ = run(capsys, "trail", "prove", "4", "--json")
    proof = json.loads(out)
    assert verify_inclusion_proof(proof["proof"], bytes.fromhex(proof["public_key"]))
    code, out, _ = run(capsys, "trail", "verify", "--head", "head.json", "--json")
    assert code == 0
    assert json.loads(out)["exported"]["contained"] is True

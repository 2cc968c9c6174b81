"""Roles and trail records of vault, budget, db, scan, anonymize and redact on a real workspace.

For each command: the owner (the account that ran `veil init`) can, with
default flags, and what they did is on the trail; a lesser principal (a
service key in VEIL_KEY) is refused with exit code 9, the refusal is on the
trail, and nothing else changed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from veil.access import Access
from veil.cli._app import main
from veil.vault import KeyStore
from veil.workspace import Workspace, login_name

# Each runs several CLI commands on a real workspace (a second or more each on a busy machine).
pytestmark = pytest.mark.slow

RAW = "5f" * 32  # a raw vault key: no key derivation, so the tests stay fast
OTHER = "6a" * 32
ROWS = 60


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "unexpected error" not in captured.err, captured.err
    return code, captured.out, captured.err


@pytest.fixture
def ws(capsys: pytest.CaptureFixture[str]) -> Workspace:
    code, _, err = run(capsys, "init")
    assert code == 0, err
    return Workspace.locate()


def service_key(role: str, dataset: str | None = None) -> str:
    """A token for svc:<role>-key holding ``role`` (made by the owner, as `veil keys create`)."""
    access = Access.open()
    try:
        _, token = access.create_key(f"{role}-key", role, dataset, reason="test")
    finally:
        access.store.dispose()
    return token


def entries(**filters: Any) -> list[dict[str, Any]]:
    access = Access.open()
    try:
        return [e.to_dict() for e in access.trail.entries(**filters)]
    finally:
        access.store.dispose()


def bodies() -> str:
    return " ".join(json.dumps(e) for e in entries())


def refused(actor: str) -> list[tuple[str, str]]:
    return [(e["action"], e["details"]["missing"]) for e in entries(actor=actor)]


# ---------------------------------------------------------------- vault


def test_vault_owner_encrypts_decrypts_rotates_and_each_is_recorded(capsys, ws, monkeypatch):
    Path("notes.csv").write_text("patient,diagnosis\nalice,flu\n", encoding="utf-8")
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    code, out, err = run(capsys, "vault", "encrypt", "notes.csv", "--json")
    assert code == 0, err
    sealed = json.loads(out)
    Path("notes.csv").unlink()
    code, _, err = run(capsys, "vault", "decrypt", "notes.csv.veil")
    assert code == 0, err
    monkeypatch.setenv("NEW_VAULT_KEY", OTHER)
    code, out, err = run(capsys, "vault", "rotate", "--new-key-env", "NEW_VAULT_KEY", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    assert run(capsys, "vault", "status")[0] == 0

    done = [e for e in entries(actor=login_name()) if e["action"].startswith("vault.")]
    assert [(e["action"], e["outcome"]) for e in done] == [
        ("vault.encrypt", "allowed"),
        ("vault.decrypt", "allowed"),
        ("vault.rotate", "allowed"),
    ]
    assert done[0]["links"] == {
        "object_id": sealed["object"]["object_id"],
        "key_id": sealed["key_id"],
    }
    assert done[0]["details"]["name"] == "notes.csv.veil"
    assert done[1]["details"]["output"] == str(Path("notes.csv").absolute())
    assert done[2]["links"] == {"key_id": rotated["key_id"], "old_key_id": sealed["key_id"]}
    assert RAW not in bodies() and OTHER not in bodies()


def test_vault_a_failure_after_the_check_is_recorded_as_failed(capsys, ws, monkeypatch):
    Path("notes.csv").write_text("a\n1\n", encoding="utf-8")
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    assert run(capsys, "vault", "encrypt", "notes.csv")[0] == 0
    monkeypatch.setenv("VEIL_VAULT_KEY", OTHER)  # not the vault's key
    code, _, _ = run(capsys, "vault", "decrypt", "notes.csv.veil", "-o", "back.csv")
    assert code != 0
    assert not Path("back.csv").exists()
    failed = entries(action="vault.decrypt")
    assert [e["outcome"] for e in failed] == ["failed"]
    assert failed[0]["details"]["error"] and OTHER not in bodies()


def test_vault_a_lesser_principal_is_refused_and_nothing_changes(capsys, ws, monkeypatch):
    Path("notes.csv").write_text("a\n1\n", encoding="utf-8")
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW)
    assert run(capsys, "vault", "encrypt", "notes.csv")[0] == 0
    manifest = (ws.home / "vault" / "vault.json").read_bytes()
    Path("other.csv").write_text("b\n2\n", encoding="utf-8")
    monkeypatch.setenv("VEIL_KEY", service_key("analyst"))
    monkeypatch.setenv("NEW_VAULT_KEY", OTHER)
    for args in (
        ("vault", "encrypt", "other.csv"),
        ("vault", "decrypt", "notes.csv.veil", "-o", "back.csv"),
        ("vault", "rotate", "--new-key-env", "NEW_VAULT_KEY"),
        ("vault", "status"),
    ):
        code, out, err = run(capsys, *args, "--json")
        assert code == 9, (args, err)
        assert json.loads(out)["error"]["code"] == "permission_denied"
    assert not Path("other.csv.veil").exists() and not Path("back.csv").exists()
    assert (ws.home / "vault" / "vault.json").read_bytes() == manifest
    monkeypatch.delenv("VEIL_KEY")
    assert refused("svc:analyst-key") == [
        ("vault.encrypt", "keys.use"),
        ("vault.decrypt", "keys.use"),
        ("vault.rotate", "keys.use"),
        ("vault.status", "access.read"),
    ]
    # an auditor may read the vault's status (key ids and object names, never a key)
    monkeypatch.setenv("VEIL_KEY", service_key("auditor"))
    code, out, err = run(capsys, "vault", "status", "--json")
    assert code == 0, err
    assert [o["name"] for o in json.loads(out)["objects"]] == ["notes.csv.veil"]


# ---------------------------------------------------------------- budget


def _register(capsys: pytest.CaptureFixture[str], name: str = "people") -> Path:
    path = Path(f"{name}.csv")
    path.write_text(
        "age,sex,diagnosis\n"
        + "".join(
            f"{20 + i % 40},{'F' if i % 3 else 'M'},{'flu' if i % 2 else 'asthma'}\n"
            for i in range(ROWS)
        ),
        encoding="utf-8",
    )
    code, _, err = run(
        capsys, "datasets", "add", str(path), "--name", name, "--bounds", "age=0:100"
    )
    assert code == 0, err
    return path


def _budget(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
    code, out, err = run(capsys, "budget", "show", name, "--json")
    assert code == 0, err
    return json.loads(out)


def test_budget_owner_sets_and_changes_with_a_reason_a_lesser_principal_is_refused(
    capsys, ws, monkeypatch
):
    _register(capsys)
    assert run(capsys, "budget", "set", "people", "--epsilon", "1")[0] == 0
    code, _, err = run(capsys, "budget", "set", "people", "--epsilon", "2")
    assert code == 3
    text = " ".join(err.split())
    assert "already has a budget: changing it needs --reason" in text
    assert 'veil budget set people --epsilon 2 --reason "' in text
    code, _, err = run(capsys, "budget", "set", "people", "--epsilon", "2", "--reason", "DPO ok")
    assert code == 0, err
    before = _budget(capsys, "people")
    assert before["budget"]["epsilon"] == 2

    monkeypatch.setenv("VEIL_ACTOR", "someone-else")
    code, _, err = run(capsys, "budget", "set", "people", "--epsilon", "9", "--reason", "x")
    assert code == 3
    assert "VEIL_ACTOR no longer chooses who acts" in " ".join(err.split())
    monkeypatch.delenv("VEIL_ACTOR")

    analyst, consumer = service_key("analyst"), service_key("consumer")
    monkeypatch.setenv("VEIL_KEY", analyst)
    code, out, _ = run(
        capsys, "budget", "set", "people", "--epsilon", "9", "--reason", "more", "--json"
    )
    assert code == 9
    assert json.loads(out)["error"]["details"]["missing"] == "budget.set"
    assert _budget(capsys, "people") == before  # an analyst may read the ledger
    monkeypatch.setenv("VEIL_KEY", consumer)
    assert run(capsys, "budget", "show", "people")[0] == 9
    assert run(capsys, "budget", "history", "people")[0] == 9
    monkeypatch.delenv("VEIL_KEY")
    assert refused("svc:analyst-key") == [("budget.set", "budget.set")]
    assert refused("svc:consumer-key") == [("ledger.read", "ledger.read")] * 2
    assert _budget(capsys, "people") == before


# ---------------------------------------------------------------- db


def test_db_upgrade_claims_an_unowned_workspace_and_says_who_owns_it(capsys, workspace):
    assert entries(action="access.claim") == []
    code, out, err = run(capsys, "db", "upgrade", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["owners"] == [login_name()]
    assert result["principal"] == login_name()
    assert result["roles"] == [{"role": "owner", "scope": "*"}]
    assert [e["actor"] for e in entries(action="access.claim")] == [login_name()]
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0
    assert f"owners    {login_name()}" in out and "hold owner here" in out


def test_db_upgrade_by_a_lesser_principal_names_its_role_and_claims_nothing(
    capsys, ws, monkeypatch
):
    monkeypatch.setenv("VEIL_KEY", service_key("analyst"))
    code, out, err = run(capsys, "db", "upgrade", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["owners"] is None  # an analyst may not list the grants
    assert result["principal"] == "svc:analyst-key"
    assert result["roles"] == [{"role": "analyst", "scope": "*"}]
    monkeypatch.delenv("VEIL_KEY")
    assert len(entries(action="access.claim")) == 1


# ---------------------------------------------------------------- scan and anonymize


def _anonymise(capsys, source: str, output: str) -> tuple[int, str, str]:
    return run(capsys, "anonymize", source, "--qi", "age,sex", "--k", "5", "-o", output, "--json")


def test_anonymize_owner_releases_a_registered_dataset_and_it_is_recorded(capsys, ws):
    _register(capsys)
    code, _, err = _anonymise(capsys, "people", "out.csv")
    assert code == 0, err
    released = entries(action="data.anonymise")
    assert len(released) == 1
    entry = released[0]
    assert entry["actor"] == login_name() and entry["dataset"] == "people"
    assert entry["details"]["output"] == str(Path("out.csv").absolute())
    assert entry["details"]["k"] == 5 and entry["details"]["rows_in"] == ROWS
    assert entry["details"]["rows_out"] == len(Path("out.csv").read_text().splitlines()) - 1
    assert entry["links"]["content_sha256"]
    assert entry["details"]["unchanged"] == ["diagnosis"]  # released as read: on the record
    reads = entries(action="dataset.read", dataset="people")
    assert [e["details"]["use"] for e in reads] == ["raw"]  # through the catalogue


def test_anonymize_an_unregistered_file_in_a_workspace_is_recorded_by_path(capsys, ws):
    path = Path("loose.csv")
    path.write_text(
        "age,sex\n" + "".join(f"{20 + i % 7},{'F' if i % 2 else 'M'}\n" for i in range(40)),
        encoding="utf-8",
    )
    code, _, err = _anonymise(capsys, str(path), "loose-out.csv")
    assert code == 0, err
    (entry,) = entries(action="data.anonymise")
    assert entry["dataset"] is None
    assert entry["details"]["source"] == str(path.absolute())
    assert entry["details"]["rows_in"] == 40


def test_anonymize_and_scan_refuse_a_lesser_principal_by_name_and_by_path(capsys, ws, monkeypatch):
    path = _register(capsys)
    monkeypatch.setenv("VEIL_KEY", service_key("analyst"))
    assert _anonymise(capsys, "people", "a.csv")[0] == 9
    assert _anonymise(capsys, str(path), "b.csv")[0] == 9  # the file of a registered dataset
    code, _, err = run(capsys, "scan", str(path), "--qi", "age,sex", "--no-pii")
    assert code == 9, err
    assert "dataset.read_rows" in err
    assert not Path("a.csv").exists() and not Path("b.csv").exists()
    monkeypatch.delenv("VEIL_KEY")
    assert refused("svc:analyst-key") == [
        ("data.anonymise", "dataset.release_rows"),
        ("data.anonymise", "dataset.release_rows"),
        ("dataset.read", "dataset.read_rows"),
    ]
    assert [e for e in entries(action="data.anonymise") if e["outcome"] == "allowed"] == []
    assert [e for e in entries(action="dataset.read") if e["outcome"] == "allowed"] == []
    # the owner's scan of the registered file goes through the catalogue too
    code, _, err = run(capsys, "scan", str(path), "--qi", "age,sex", "--no-pii", "--json")
    assert code == 0, err
    assert [
        e["details"]["use"] for e in entries(action="dataset.read") if e["outcome"] == "allowed"
    ] == ["raw"]


# ---------------------------------------------------------------- redact


def test_redact_records_the_key_name_and_decrypt_needs_keys_use(capsys, ws, monkeypatch):
    pytest.importorskip("presidio_analyzer")
    Path("note.txt").write_text("Alice Martin called from Paris on 3 May.\n", encoding="utf-8")
    code, _, err = run(
        capsys, "redact", "note.txt", "-o", "red.txt", "--operator", "encrypt", "--key", "notes"
    )
    assert code == 0, err
    code, _, err = run(capsys, "redact", "red.txt", "-o", "back.txt", "--decrypt", "--key", "notes")
    assert code == 0, err
    assert Path("back.txt").read_text(encoding="utf-8") == Path("note.txt").read_text(
        encoding="utf-8"
    )
    done = [e for e in entries(actor=login_name()) if e["action"].startswith("text.")]
    assert [(e["action"], e["outcome"]) for e in done] == [
        ("text.redact", "allowed"),
        ("text.decrypt", "allowed"),
    ]
    assert done[0]["details"]["key"] == "notes" and done[0]["details"]["operator"] == "encrypt"
    assert done[0]["details"]["total_entities"] >= 1
    assert done[1]["details"]["output"] == str(Path("back.txt").absolute())
    secret = KeyStore.for_workspace(ws).get("notes", create=False)
    assert secret.hex() not in bodies()
    assert base64.b64encode(secret).decode() not in bodies()

    monkeypatch.setenv("VEIL_KEY", service_key("analyst"))
    code, _, err = run(
        capsys, "redact", "red.txt", "-o", "again.txt", "--decrypt", "--key", "notes"
    )
    assert code == 9, err
    assert not Path("again.txt").exists()
    monkeypatch.delenv("VEIL_KEY")
    assert refused("svc:analyst-key") == [("text.decrypt", "keys.use")]

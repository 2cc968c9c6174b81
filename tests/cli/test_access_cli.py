"""`veil init`, `veil access` and `veil keys`: owners, grants, service keys and their refusals."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from veil.cli._app import main
from veil.workspace import login_name


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def ws(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    """A workspace made by `veil init` in the test's directory; its SQLite database."""
    code, _, err = run(capsys, "init")
    assert code == 0, err
    return tmp_path / ".veil" / "veil.db"


def _new_key(capsys: pytest.CaptureFixture[str], name: str, *options: str) -> tuple[str, str]:
    code, out, err = run(capsys, "keys", "create", name, *options, "--json")
    assert code == 0, err
    created = json.loads(out)
    return created["key"]["key_id"], created["token"]


def _secret(token: str) -> str:
    return token.split("_", 3)[3]  # veil_sk_<id>_<secret>: the secret may hold "_"


def test_init_makes_its_creator_the_owner(capsys, tmp_path):
    code, out, _ = run(capsys, "init", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["owner"] == result["principal"] == login_name()
    assert result["roles"] == [{"role": "owner", "scope": "*"}]
    code, out, _ = run(capsys, "init")  # again: kept, and says who owns it
    assert code == 0
    assert f"owner     {login_name()}" in out
    code, out, _ = run(capsys, "trail", "show", "--action", "access.claim", "--json")
    assert [e["actor"] for e in json.loads(out)["entries"]] == [login_name()]


def test_whoami_names_the_account_and_its_roles(capsys, ws):
    code, out, _ = run(capsys, "access", "whoami")
    assert code == 0
    assert login_name() in out and "operating-system account" in out and "owner" in out
    code, out, _ = run(capsys, "access", "whoami", "--json")
    assert json.loads(out) == {
        "principal": {"name": login_name(), "kind": "person", "key_id": None, "scopes": None},
        "authenticated_by": "operating-system account",
        "roles": [{"role": "owner", "scope": "*"}],
    }


def test_grant_list_and_revoke(capsys, ws):
    code, out, _ = run(
        capsys, "access", "grant", "bob", "analyst", "--dataset", "adult", "--reason", "Q3 study"
    )
    assert code == 0
    assert "Granted analyst on dataset 'adult' to bob." in out
    code, out, _ = run(capsys, "access", "list", "--json")
    assert json.loads(out) == {
        "grants": [
            {"principal": "bob", "role": "analyst", "scope": "adult"},
            {"principal": login_name(), "role": "owner", "scope": "*"},
        ]
    }
    code, out, _ = run(capsys, "access", "list", "--principal", "bob")
    assert code == 0
    assert "bob" in out and "dataset 'adult'" in out and login_name() not in out

    code, out, _ = run(capsys, "access", "revoke", "bob", "analyst", "--dataset", "adult", "--json")
    assert code == 0
    assert json.loads(out) == {"revoked": {"principal": "bob", "role": "analyst", "scope": "adult"}}
    code, out, err = run(capsys, "access", "revoke", "bob", "analyst", "--dataset", "adult")
    assert code == 6
    assert "bob holds no analyst grant on dataset 'adult'" in err

    code, out, _ = run(capsys, "trail", "show", "--who", login_name(), "--json")
    grants = [e for e in json.loads(out)["entries"] if e["action"] == "access.grant"]
    assert grants[0]["purpose"] == "Q3 study"
    assert grants[0]["dataset"] == "adult"


def test_bad_role_and_last_owner_are_refused_with_their_codes(capsys, ws):
    code, out, err = run(capsys, "access", "grant", "bob", "superuser", "--json")
    assert code == 3
    assert json.loads(out)["error"]["code"] == "invalid_input"
    assert "owner, analyst, auditor, consumer" in err
    code, _, err = run(capsys, "access", "revoke", login_name(), "owner")
    assert code == 7
    assert "no owner" in err


def test_keys_create_shows_the_token_once_and_lists_never_show_it(capsys, ws):
    code, out, err = run(
        capsys, "keys", "create", "reporter", "--role", "analyst", "--expires-in", "90d"
    )
    assert code == 0, err
    token = next(line for line in out.splitlines() if line.startswith("veil_sk_"))
    assert out.count(token) == 1
    assert "cannot be shown again" in out
    key_id = token.split("_")[2]

    code, out, _ = run(capsys, "keys", "list", "--json")
    keys = json.loads(out)["keys"]
    assert [(k["key_id"], k["principal"], k["status"]) for k in keys] == [
        (key_id, "svc:reporter", "active")
    ]
    assert keys[0]["scopes"] == [{"role": "analyst", "scope": "*"}]
    assert keys[0]["expires_at"] is not None
    code, text, _ = run(capsys, "keys", "list")
    code, trail, _ = run(capsys, "trail", "show", "--json")
    for output in (out, text, trail):
        assert _secret(token) not in output
    assert key_id in text and "active" in text
    # The key's role is granted to its service.
    code, out, _ = run(capsys, "access", "list", "--principal", "svc:reporter", "--json")
    assert json.loads(out)["grants"] == [
        {"principal": "svc:reporter", "role": "analyst", "scope": "*"}
    ]


def test_keys_create_json_and_bad_lifetimes(capsys, ws):
    code, out, _ = run(
        capsys, "keys", "create", "etl", "--role", "consumer", "--dataset", "adult", "--json"
    )
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"key", "token", "note"}
    assert created["token"].startswith(f"veil_sk_{created['key']['key_id']}_")
    assert created["key"]["scopes"] == [{"role": "consumer", "scope": "adult"}]
    assert created["key"]["expires_at"] is None
    for bad in ("0d", "-3d", "soon", "90"):
        code, _, err = run(
            capsys, "keys", "create", "etl", "--role", "consumer", "--expires-in", bad
        )
        assert code == 3, bad
        assert "--expires-in" in err


@pytest.mark.slow
def test_a_service_key_with_a_lesser_role_is_refused_and_the_refusal_is_recorded(
    capsys, ws, monkeypatch
):
    key_id, token = _new_key(capsys, "reporter", "--role", "analyst")
    monkeypatch.setenv("VEIL_KEY", token)
    code, out, _ = run(capsys, "access", "whoami", "--json")
    assert code == 0
    who = json.loads(out)
    assert who["principal"]["name"] == "svc:reporter"
    assert who["principal"]["key_id"] == key_id
    assert who["authenticated_by"] == f"service key {key_id} (VEIL_KEY)"
    assert who["roles"] == [{"role": "analyst", "scope": "*"}]

    outputs = [out]
    code, out, err = run(capsys, "access", "grant", "svc:reporter", "owner", "--json")
    outputs += [out, err]
    assert code == 9
    assert json.loads(out)["error"]["code"] == "permission_denied"
    assert "veil access grant svc:reporter owner" in err
    code, out, err = run(capsys, "trail", "show")
    outputs += [out, err]
    assert code == 9
    assert "trail.read" in err
    code, out, err = run(capsys, "keys", "create", "more", "--role", "owner")
    outputs += [out, err]
    assert code == 9

    monkeypatch.delenv("VEIL_KEY")
    code, out, _ = run(capsys, "trail", "show", "--who", "svc:reporter", "--json")
    outputs.append(out)
    refused = json.loads(out)["entries"]
    assert [(e["action"], e["outcome"]) for e in refused] == [
        ("access.grant", "refused"),
        ("trail.show", "refused"),
        ("keys.create", "refused"),
    ]
    assert refused[0]["details"]["missing"] == "access.manage"
    assert refused[0]["details"]["key_id"] == key_id
    code, out, _ = run(capsys, "trail", "show")
    outputs.append(out)
    assert "refused" in out
    assert not any(_secret(token) in text for text in outputs)


@pytest.mark.slow
def test_revoked_and_expired_keys_are_refused_without_showing_the_secret(capsys, ws, monkeypatch):
    revoked_id, revoked = _new_key(capsys, "old", "--role", "auditor")
    expired_id, expired = _new_key(capsys, "temp", "--role", "auditor", "--expires-in", "1h")
    code, out, _ = run(capsys, "keys", "revoke", revoked_id, "--reason", "leaked", "--json")
    assert code == 0
    assert json.loads(out)["key"]["status"] == "revoked"
    with sqlite3.connect(ws) as db:  # an hour passes
        db.execute(
            "UPDATE access_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE key_id = ?",
            (expired_id,),
        )
    code, out, _ = run(capsys, "keys", "list", "--json")
    status = {k["key_id"]: k["status"] for k in json.loads(out)["keys"]}
    assert status == {revoked_id: "revoked", expired_id: "expired"}

    forged = revoked[:-4] + ("AAAA" if not revoked.endswith("AAAA") else "BBBB")
    outputs = []
    for token, why in ((revoked, "revoked"), (expired, "expired"), (forged, "no key")):
        monkeypatch.setenv("VEIL_KEY", token)
        code, out, err = run(capsys, "trail", "show", "--json")
        assert code == 9, why
        assert json.loads(out)["error"]["code"] == "permission_denied"
        assert why in err
        outputs += [out, err]
    monkeypatch.delenv("VEIL_KEY")
    code, out, _ = run(capsys, "trail", "show", "--action", "key.use", "--json")
    outputs.append(out)
    uses = json.loads(out)["entries"]
    assert [(e["actor"], e["outcome"]) for e in uses] == [
        (f"key:{revoked_id}", "refused"),
        (f"key:{expired_id}", "refused"),
        (f"key:{revoked_id}", "refused"),
    ]
    for token in (revoked, expired, forged):
        assert not any(_secret(token) in text for text in outputs)


def test_keys_revoke_unknown_id(capsys, ws):
    code, _, err = run(capsys, "keys", "revoke", "0123456789ab")
    assert code == 6
    assert "veil keys list" in err


def test_keys_and_access_list_when_empty(capsys, ws):
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0
    assert "No service key" in out
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert json.loads(out) == {"keys": []}
    code, out, _ = run(capsys, "access", "list", "--principal", "nobody")
    assert code == 0
    assert "No grant matches" in out

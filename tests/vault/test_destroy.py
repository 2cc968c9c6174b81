"""Vault.destroy: crypto-shredding one object's data key, durably, with a tombstone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veil.errors import InvalidInputError, NotFoundError
from veil.vault import MasterKey, Vault
from veil.workspace import Workspace

CHEAP_N = 2**4  # scrypt cost for tests only


def _key(passphrase: str = "a test passphrase") -> MasterKey:  # noqa: S107 - a test secret
    return MasterKey.from_passphrase(passphrase, n=CHEAP_N)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / ".veil")


@pytest.fixture
def vault(ws: Workspace) -> Vault:
    return Vault.open(_key(), ws, create=True)


def _manifest(ws: Workspace) -> dict:
    return json.loads((ws.home / "vault" / "vault.json").read_text(encoding="utf-8"))


def test_a_destroyed_key_never_opens_its_blob_again_and_the_error_names_it(
    vault: Vault, ws: Workspace
):
    blob = vault.seal(b"ages 31, 47, 52", name="v1")
    kept = vault.seal(b"another object", name="v2")
    oid = Vault.object_id(blob)
    assert len(oid) == 32 and oid != Vault.object_id(kept)
    assert oid in _manifest(ws)["objects"]

    assert vault.destroy(oid, reason="erasure of one person") is True

    manifest = _manifest(ws)
    assert oid not in manifest["objects"]  # the wrapped key is gone from the file on disk
    assert manifest["destroyed"][oid]["reason"] == "erasure of one person"
    assert "dek" not in manifest["destroyed"][oid]
    with pytest.raises(NotFoundError, match=f"data key {oid} was destroyed") as caught:
        vault.unseal(blob, name="v1")
    assert "crypto-shredded" in str(caught.value)
    assert caught.value.details["object_id"] == oid
    # A vault opened afresh (another process) refuses it the same way; others still open.
    again = Vault.open(_key(), ws)
    with pytest.raises(NotFoundError, match=oid):
        again.unseal(blob, name="v1")
    assert again.unseal(kept, name="v2") == b"another object"


def test_destroy_is_idempotent_and_refuses_unknown_ids(vault: Vault):
    blob = vault.seal(b"x", name="x")
    oid = Vault.object_id(blob)
    assert vault.destroy(oid) is True
    assert vault.destroy(oid) is False  # a shredding resumed after a crash
    with pytest.raises(NotFoundError, match="no data key"):
        vault.destroy("00" * 16)


def test_a_destroyed_file_key_refuses_decryption_and_writes_nothing(
    vault: Vault, ws: Workspace, tmp_path: Path
):
    source = tmp_path / "plain.csv"
    source.write_text("age\n31\n", encoding="utf-8")
    sealed = vault.encrypt_file(source, tmp_path / "plain.csv.veil")
    vault.destroy(sealed.object_id)
    with pytest.raises(NotFoundError, match="destroyed"):
        vault.decrypt_file(tmp_path / "plain.csv.veil", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    assert sealed.object_id not in {o.object_id for o in vault.status().objects}


def test_rotation_skips_tombstones_and_keeps_them(vault: Vault, ws: Workspace):
    gone = vault.seal(b"gone", name="gone")
    kept = vault.seal(b"kept", name="kept")
    vault.destroy(Vault.object_id(gone))
    status = vault.rotate(_key("a new passphrase"))
    assert status.rotations == 1
    manifest = _manifest(ws)
    assert Vault.object_id(gone) in manifest["destroyed"]
    assert Vault.object_id(gone) not in manifest["objects"]
    rotated = Vault.open(_key("a new passphrase"), ws)
    assert rotated.unseal(kept, name="kept") == b"kept"
    with pytest.raises(NotFoundError, match="destroyed"):
        rotated.unseal(gone, name="gone")


def test_object_id_of_something_that_is_not_a_blob_is_refused():
    with pytest.raises(InvalidInputError, match="not a Veil vault object"):
        Vault.object_id(b"PAR1 not sealed")

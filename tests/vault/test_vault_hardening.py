"""Attacks on the vault from outside: each test performs one and expects a refusal.

* scrypt below the OWASP floor: a new vault must record n >= 2**17; a vault
  written by Veil with n = 2**15 (a real manifest and sealed file from that
  release, below) must still open.
* a sealed file copied over another of the same name in another folder
  (``2025/payroll.csv.veil`` over ``2026/payroll.csv.veil``) must not decrypt.
* a rotation to the same passphrase must be refused and change nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from veil.errors import InvalidInputError
from veil.vault import MasterKey, Vault
from veil.workspace import Workspace

CHEAP_N = 2**4  # scrypt cost for tests only
PASSPHRASE = "correct horse battery staple"  # noqa: S105 - a test passphrase


def _key(passphrase: str = PASSPHRASE, n: int = CHEAP_N) -> MasterKey:
    return MasterKey.from_passphrase(passphrase, n=n)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / ".veil")


@pytest.fixture
def vault(ws: Workspace) -> Vault:
    return Vault.open(_key(), ws, create=True)


def _manifest_path(ws: Workspace) -> Path:
    return ws.home / "vault" / "vault.json"


def _manifest(ws: Workspace) -> dict:
    return json.loads(_manifest_path(ws).read_text(encoding="utf-8"))


def _write_manifest(ws: Workspace, manifest: dict) -> None:
    _manifest_path(ws).write_text(json.dumps(manifest), encoding="utf-8")


# ------------------------------------------------------------------ scrypt cost


@pytest.mark.slow
def test_a_new_vault_records_scrypt_n_of_at_least_2_17(ws: Workspace):
    key = MasterKey.from_passphrase(PASSPHRASE)  # the default cost, as the CLI uses it
    Vault.open(key, ws, create=True)
    kdf = Vault.inspect(ws).kdf
    assert kdf is not None and kdf["name"] == "scrypt"
    assert kdf["n"] >= 2**17, f"scrypt n={kdf['n']} is below the OWASP floor of 2**17"
    assert kdf["n"] * kdf["r"] * 128 >= 128 * 2**20  # 128 MiB per guess
    Vault.open(MasterKey.from_passphrase(PASSPHRASE), ws)  # and it opens again


# A vault written by Veil before its hardening (scrypt n = 2**15, data keys not bound to
# the recorded path): its manifest, one sealed file and one sealed blob, verbatim.
OLD_PASSPHRASE = "an old passphrase from 2025"  # noqa: S105 - a test passphrase
OLD_MANIFEST = json.loads(
    '{"format": "veil-vault", "version": 1, "vault_id": "3021848fcd0b4209803e70eb1d740e65", '
    '"created": "2026-12-05T23:48:20+00:00", "rotated": null, "rotations": 0, '
    '"key": {"id": "9f8da7e451ff36fb", '
    '"check": "9f8da7e451ff36fb05fdb474c5fd92da13254dedce0fd1e4396aae16b387d87d", '
    '"kdf": {"name": "scrypt", "salt": "KJA7MBxeA/knuvLOcRyGCQ==", "n": 32768, "r": 8, "p": 1}}, '
    '"objects": {"19ebbfabac7000b7ab7ae71f375440d6": {"name": "payroll.csv.veil", "kind": "file", '
    '"path": "/tmp/dhelper/run/payroll.csv.veil", "size": 22, '
    '"sealed": "2026-12-05T23:48:20+00:00", '
    '"dek": "RB034cyJWHFovxNLJgSmW0uxZXc+U00/kl1jW+YAjTwKwQ8N2b6LR69SRy9q/00WDN0arV2Zy9Dh1gwA"}, '
    '"ceb0883898896fb172767b63d23391fc": {"name": "he/old-key", "kind": "blob", "path": null, '
    '"size": 13, "sealed": "2026-12-05T23:48:20+00:00", '
    '"dek": "UKubsyE/G2NyEROKvh25JCiA84Iu2/pMErzn7bYoalOAaWQvlN//XepuvUvXlFj9PZZIplY5W+43Stod"}}}'
)
OLD_FILE_ID = "19ebbfabac7000b7ab7ae71f375440d6"
OLD_FILE = base64.b64decode(
    "VkVJTFZMVAEBAAAQAAAwIYSPzQtCCYA+cOsddA5lGeu/q6xwALereucfN1RA1rBotHrYENMAEHBheXJvbGwuY3N2"
    "LnZlaWxSjons16F/v17SfHS0FPcxgrPX9z7e+0VRwtIeT/6b+DoU6VVo0Q=="
)
OLD_BLOB = base64.b64decode(
    "VkVJTFZMVAEBAAAQAAAwIYSPzQtCCYA+cOsddA5lzrCIOJiJb7Fydntj0jOR/ErYUk261McACmhlL29sZC1rZXkG"
    "HOaoILO9aMNRFlYbBhRdI+n7HLVKfXFmSTW13g=="
)
OLD_PLAIN = "name,salary\nalice,100\n"


@pytest.fixture
def old_vault(ws: Workspace, tmp_path: Path) -> Path:
    """The old vault restored into this workspace; returns the sealed file's path."""
    sealed = tmp_path / "payroll.csv.veil"
    sealed.write_bytes(OLD_FILE)
    manifest = json.loads(json.dumps(OLD_MANIFEST))
    # The old format did not authenticate the recorded path: restoring a backup elsewhere
    # rewrites it, as an administrator (or an attacker) always could.
    manifest["objects"][OLD_FILE_ID]["path"] = str(sealed)
    _manifest_path(ws).parent.mkdir(mode=0o700)
    _write_manifest(ws, manifest)
    return sealed


def test_a_vault_written_with_scrypt_n_2_15_still_opens(ws: Workspace, old_vault: Path):
    assert Vault.inspect(ws).kdf == {"name": "scrypt", "n": 2**15, "r": 8, "p": 1}
    vault = Vault.open(MasterKey.from_passphrase(OLD_PASSPHRASE), ws)
    assert vault.unseal(OLD_BLOB, name="he/old-key") == b"an old secret"
    with pytest.warns(UserWarning, match="not bound to its path") as warned:
        vault.decrypt_file(old_vault, old_vault.with_name("payroll.csv"))
    assert warned[0].filename == __file__  # it points at the caller's line
    assert old_vault.with_name("payroll.csv").read_text(encoding="utf-8") == OLD_PLAIN


def test_an_old_object_swapped_between_folders_is_refused_too(ws: Workspace, old_vault: Path):
    vault = Vault.open(MasterKey.from_passphrase(OLD_PASSPHRASE), ws)
    other = old_vault.parent / "2026"
    other.mkdir()
    shutil.copy(old_vault, other / "payroll.csv.veil")
    with pytest.raises(InvalidInputError, match="sealed at another path"):
        vault.decrypt_file(other / "payroll.csv.veil", other / "payroll.csv")
    assert not (other / "payroll.csv").exists()


def test_a_rotation_binds_old_objects_to_their_path(ws: Workspace, old_vault: Path):
    vault = Vault.open(MasterKey.from_passphrase(OLD_PASSPHRASE), ws)
    vault.rotate(_key("a new passphrase after the upgrade"))
    vault.decrypt_file(old_vault, old_vault.with_name("payroll.csv"))  # no warning now
    assert vault.unseal(OLD_BLOB, name="he/old-key") == b"an old secret"
    tampered = _manifest(ws)
    elsewhere = old_vault.parent / "2027" / "payroll.csv.veil"
    tampered["objects"][OLD_FILE_ID]["path"] = str(elsewhere)  # the path check now passes
    _write_manifest(ws, tampered)
    with pytest.raises(InvalidInputError, match="does not authenticate"):
        vault.decrypt_file(old_vault, old_vault.with_name("again.csv"), sealed_path=elsewhere)
    assert not old_vault.with_name("again.csv").exists()


# ------------------------------------------------------------------ path binding


@pytest.fixture
def payrolls(vault: Vault, tmp_path: Path) -> tuple[Path, Path]:
    sealed = []
    for year, rows in (("2025", "alice,100\n"), ("2026", "alice,120\n")):
        folder = tmp_path / year
        folder.mkdir()
        (folder / "payroll.csv").write_text("name,salary\n" + rows, encoding="utf-8")
        vault.encrypt_file(folder / "payroll.csv", folder / "payroll.csv.veil")
        (folder / "payroll.csv").unlink()
        sealed.append(folder / "payroll.csv.veil")
    return sealed[0], sealed[1]


def test_a_sealed_file_copied_over_one_of_the_same_name_in_another_folder_is_refused(
    vault: Vault, payrolls: tuple[Path, Path]
):
    old, new = payrolls
    shutil.copy(old, new)  # the attack: last year's payroll where this year's should be
    with pytest.raises(InvalidInputError, match="sealed at another path") as caught:
        vault.decrypt_file(new, new.with_name("payroll.csv"))
    assert str(old) in str(caught.value) and str(new) in str(caught.value)
    assert not new.with_name("payroll.csv").exists()
    vault.decrypt_file(old, old.with_name("payroll.csv"))  # the original still opens
    # A file moved on purpose opens when its recorded path is named.
    vault.decrypt_file(new, new.with_name("payroll.csv"), sealed_path=old)
    assert new.with_name("payroll.csv").read_text(encoding="utf-8").endswith("alice,100\n")


def test_a_symbolic_link_to_another_folders_sealed_file_is_refused(
    vault: Vault, payrolls: tuple[Path, Path]
):
    old, new = payrolls
    new.unlink()
    new.symlink_to(old)  # resolving the link would find the 2025 object at its own path
    with pytest.raises(InvalidInputError, match="sealed at another path"):
        vault.decrypt_file(new, new.with_name("payroll.csv"))
    assert not new.with_name("payroll.csv").exists()


def test_a_recorded_path_rewritten_in_the_manifest_does_not_authenticate(
    vault: Vault, ws: Workspace, payrolls: tuple[Path, Path]
):
    old, new = payrolls
    shutil.copy(old, new)
    manifest = _manifest(ws)
    for entry in manifest["objects"].values():  # relabel the 2025 object as the 2026 one
        if entry["path"] == str(old):
            entry["path"] = str(new)
    _write_manifest(ws, manifest)
    with pytest.raises(InvalidInputError, match="does not authenticate"):
        vault.decrypt_file(new, new.with_name("payroll.csv"))
    assert not new.with_name("payroll.csv").exists()


def test_a_sealed_file_relabelled_as_a_blob_does_not_authenticate(
    vault: Vault, ws: Workspace, payrolls: tuple[Path, Path]
):
    old, new = payrolls
    manifest = _manifest(ws)
    for entry in manifest["objects"].values():
        if entry["path"] == str(old):
            entry["kind"], entry["path"] = "blob", None
    _write_manifest(ws, manifest)
    with pytest.raises(InvalidInputError, match="does not authenticate"):
        vault.decrypt_file(old, new.with_name("payroll.csv"), name="payroll.csv.veil")
    with pytest.raises(InvalidInputError, match="does not authenticate"):
        vault.unseal(old.read_bytes(), name="payroll.csv.veil")


def test_a_sealed_file_cannot_be_unsealed_as_a_blob(vault: Vault, payrolls: tuple[Path, Path]):
    old, _ = payrolls
    with pytest.raises(InvalidInputError, match="sealed file, not a blob"):
        vault.unseal(old.read_bytes(), name="payroll.csv.veil")


# ------------------------------------------------------------------ rotation


def test_rotating_to_the_same_passphrase_is_refused_and_changes_nothing(
    vault: Vault, ws: Workspace
):
    blob = vault.seal(b"secret", name="k")
    before = _manifest_path(ws).read_bytes()
    for same in (_key(), _key(n=2 * CHEAP_N)):  # the same passphrase at any cost
        with pytest.raises(InvalidInputError, match="same passphrase") as caught:
            vault.rotate(same)
        assert PASSPHRASE not in str(caught.value)
        assert _manifest_path(ws).read_bytes() == before
    assert Vault.open(_key(), ws).unseal(blob, name="k") == b"secret"
    vault.rotate(_key("a different passphrase"))  # a real rotation still works
    assert Vault.inspect(ws).rotations == 1


# ------------------------------------------------------------------ rollback, as docs/vault.md says


def test_an_older_sealed_version_put_back_over_a_resealed_file_is_refused(
    vault: Vault, ws: Workspace, payrolls: tuple[Path, Path]
):
    _, new = payrolls
    first = new.read_bytes()
    new.with_name("payroll.csv").write_text("name,salary\nalice,130\n", encoding="utf-8")
    vault.encrypt_file(new.with_name("payroll.csv"), new, overwrite=True)  # sealed again
    new.with_name("payroll.csv").unlink()
    new.write_bytes(first)  # the attack: last month's version of the same file
    with pytest.raises(InvalidInputError, match="has no data key for"):
        vault.decrypt_file(new, new.with_name("payroll.csv"))
    assert not new.with_name("payroll.csv").exists()


def test_a_manifest_and_file_rolled_back_together_still_open(
    vault: Vault, ws: Workspace, payrolls: tuple[Path, Path]
):
    """Not protected (docs/vault.md): an older, consistent copy of both opens."""
    _, new = payrolls
    first, manifest = new.read_bytes(), _manifest_path(ws).read_bytes()
    new.with_name("payroll.csv").write_text("name,salary\nalice,130\n", encoding="utf-8")
    vault.encrypt_file(new.with_name("payroll.csv"), new, overwrite=True)
    new.with_name("payroll.csv").unlink()
    new.write_bytes(first)
    _manifest_path(ws).write_bytes(manifest)
    vault.decrypt_file(new, new.with_name("payroll.csv"))
    assert new.with_name("payroll.csv").read_text(encoding="utf-8").endswith("alice,120\n")

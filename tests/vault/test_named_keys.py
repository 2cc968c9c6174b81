"""veil.vault's named keys: made once, read back unchanged, owner-only, overridable, agreed under races."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from veil.errors import InvalidInputError, NotFoundError
from veil.vault import KeyStore
from veil.workspace import Workspace


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore.for_workspace(Workspace.create(tmp_path / ".veil"))


def test_a_key_is_made_once_and_read_back(keys: KeyStore, monkeypatch: pytest.MonkeyPatch):
    first = keys.get("pseudonyms")
    assert len(first) == 32 and keys.get("pseudonyms") == first
    assert stat.S_IMODE(keys.path("pseudonyms").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.root.stat().st_mode) == 0o700
    assert keys.names() == ["pseudonyms"]
    assert keys.exists("pseudonyms") and not keys.exists("other")
    with pytest.raises(NotFoundError):
        keys.get("other", create=False)
    assert keys.names() == ["pseudonyms"]  # asking without create= made nothing
    monkeypatch.setenv("VEIL_KEY_OTHER", "ab" * 32)
    assert keys.exists("other")
    assert keys.get("other") == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("VEIL_KEY_OTHER", "not hex")
    with pytest.raises(InvalidInputError, match="256-bit"):
        keys.get("other")
    with pytest.raises(InvalidInputError, match="invalid key name"):
        keys.get("../escape")


def test_an_existing_workspace_key_reads_back_byte_for_byte(tmp_path: Path):
    """The file format is the one workspaces already hold: ``keys/NAME.key``, 64 hex digits."""
    workspace = Workspace.create(tmp_path / ".veil")
    stored = bytes(range(32))
    (workspace.home / "keys").mkdir(mode=0o700)
    (workspace.home / "keys" / "ledger.key").write_text(stored.hex() + "\n", encoding="ascii")
    keys = KeyStore.for_workspace(workspace)
    assert keys.path("ledger") == workspace.home / "keys" / "ledger.key"
    assert keys.get("ledger") == stored
    assert (workspace.home / "keys" / "ledger.key").read_text(encoding="ascii") == (
        stored.hex() + "\n"
    )


def test_the_environment_overrides_a_dashed_name(keys: KeyStore, monkeypatch: pytest.MonkeyPatch):
    keys.get("my-key")
    monkeypatch.setenv("VEIL_KEY_MY_KEY", "cd" * 32)
    assert keys.get("my-key") == bytes.fromhex("cd" * 32)


def test_the_current_workspace_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    workspace = Workspace.create(tmp_path / ".veil")
    monkeypatch.setenv("VEIL_HOME", str(workspace.home))
    assert KeyStore.for_workspace().root == workspace.home / "keys"


def test_making_a_key_leaves_no_temporary_file(keys: KeyStore):
    keys.get("redact")
    assert sorted(p.name for p in keys.root.iterdir()) == ["redact.key"]


def test_processes_asking_at_once_agree_on_one_key(tmp_path: Path):
    root = tmp_path / "keys"
    code = (
        "import sys; from pathlib import Path; from veil.vault import KeyStore; "
        "print(KeyStore(Path(sys.argv[1])).get('ledger').hex())"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    seen = {child.communicate(timeout=120)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert seen == {KeyStore(root).get("ledger").hex()}
    assert [p.name for p in root.iterdir()] == ["ledger.key"]

"""Fixtures of the managed-dataset tests: a workspace, a master key, an owner's catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

RAW_KEY = "5e" * 32  # VEIL_VAULT_KEY for tests: a raw key, so no scrypt per vault opening


@pytest.fixture
def vault_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VEIL_VAULT_KEY", RAW_KEY)
    return RAW_KEY


@pytest.fixture
def managed_home(tmp_path: Path):
    """A workspace directory for the sealed versions and the vault (the store is separate)."""
    from veil.workspace import Workspace

    home = tmp_path / "ws"
    home.mkdir(mode=0o700)
    return Workspace(home)


@pytest.fixture
def managed_owner(store, managed_home, vault_key):
    """Alice's catalogue (she claims the workspace) on SQLite and PostgreSQL."""
    from veil.access import Access, Principal
    from veil.data import Catalog

    del vault_key
    return Catalog(store, access=Access(store, Principal("alice")), workspace=managed_home)

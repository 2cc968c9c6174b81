"""Workspaces with managed datasets, for the erasure, retention and lineage tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.governance._data import VAULT_KEY, add_managed_datasets


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run ``veil ARGS`` in-process: (exit code, stdout, stderr)."""
    from veil.cli._app import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def vault_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("VEIL_VAULT_KEY", VAULT_KEY)
    return VAULT_KEY


@pytest.fixture
def managed(tmp_path: Path, cli, vault_key) -> str:
    """A workspace (./.veil, SQLite) with the managed dataset ``visits`` and the reference ``ref``."""
    add_managed_datasets(tmp_path, cli)
    return "visits"


@pytest.fixture
def catalog_of(managed):
    """The workspace's catalogue, opened as the CLI opens it (closed after the test)."""
    from veil.data import Catalog

    opened: list = []

    def make():
        catalog = Catalog.open()
        opened.append(catalog)
        return catalog

    yield make
    for catalog in opened:
        catalog.store.dispose()

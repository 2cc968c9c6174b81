"""Workspaces with managed datasets, for the erasure, retention and lineage tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.governance._data import VAULT_KEY, visits_rows, write_csv


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
    from veil.data import Catalog

    source = write_csv(tmp_path / "visits.csv", visits_rows())
    reference = write_csv(tmp_path / "ref.csv", visits_rows(5))
    assert cli("init")[0] == 0
    catalog = Catalog.open()
    try:
        catalog.add(
            source,
            name="visits",
            managed=True,
            privacy_unit="pid",
            bounds={"age": (0, 120)},
            categories={"outcome": ["no", "yes"]},
        )
        catalog.add(reference, name="ref", privacy_unit="pid")
    finally:
        catalog.store.dispose()
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

"""Fixtures for tests/access: its `store` (test_access, test_tamper) marks PostgreSQL slow."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """As tests/conftest.py's, with PostgreSQL marked slow (a fresh database: over a second)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'veil.db'}"
    return str(request.getfixturevalue("postgres_url"))

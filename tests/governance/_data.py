"""Test data of tests/governance: a small visits table, dated, several rows per person."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

VAULT_KEY = "11" * 32  # a raw master key, held outside the workspace as decision 1 asks

# Rows of `visits`: 30 people, two visits each, dated a year apart, newest 2026-06-01.
NEWEST = date(2026, 6, 1)


def visits_rows(people: int = 30) -> list[dict[str, object]]:
    rows = []
    for i in range(people):
        for k in range(2):
            rows.append(
                {
                    "pid": f"P-{i:04d}",
                    "visit_date": (NEWEST - timedelta(days=30 * i + 400 * k)).isoformat(),
                    "age": 20 + i % 50,
                    "outcome": "yes" if (i + k) % 3 == 0 else "no",
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def add_managed_datasets(tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> None:
    """``veil init`` here, then the managed ``visits`` and the reference ``ref``."""
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

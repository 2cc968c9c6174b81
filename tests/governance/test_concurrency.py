"""Erasure beside queries, and retention beside retention, on SQLite and on PostgreSQL.

A query running while persons are erased sees one whole version: its rows are
exactly those of the version it names (``frame.attrs["veil.version"]``), never
a mix and never an error. Two retention runs started together write one
version between them: the second waits for the dataset's version lock and then
finds nothing due.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import func, select
from tests.governance._data import add_managed_datasets

from veil.governance import erase, run_retention, set_policy
from veil.store.tables import DatasetVersionRow, ErasureRow

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

ERASED = [f"P-{i:04d}" for i in range(4)]  # erased one by one: version v lacks ERASED[: v - 1]
EVERYONE = {f"P-{i:04d}" for i in range(30)}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def workspace_on(request, tmp_path, cli, vault_key, monkeypatch):
    """A workspace with ``visits``, its database on SQLite or on PostgreSQL."""
    if request.param == "postgresql":
        monkeypatch.setenv("VEIL_DATABASE_URL", request.getfixturevalue("postgres_url"))
    add_managed_datasets(tmp_path, cli)
    return request.param


def _open():
    from veil.data import Catalog

    return Catalog.open()


def test_each_query_sees_one_whole_version_while_people_are_erased(workspace_on):
    seen: list[tuple[int, int, frozenset[str]]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def query() -> None:
        catalog = _open()
        try:
            while not done.is_set():
                frame = catalog.load_frame("visits", use="mechanism", purpose="statistics")
                seen.append((frame.attrs["veil.version"], len(frame), frozenset(frame["pid"])))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            catalog.store.dispose()

    readers = [threading.Thread(target=query) for _ in range(2)]
    for reader in readers:
        reader.start()
    catalog = _open()
    try:
        for person in ERASED:
            erase(catalog, "visits", person, reason="request")
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=120)
        catalog.store.dispose()
    assert not errors, errors
    assert len(seen) >= 2
    for version, rows, people in seen:
        gone = set(ERASED[: version - 1])
        assert people == EVERYONE - gone, f"version {version} is not whole"
        assert rows == 2 * len(people)
    versions = {v for v, _, _ in seen}
    assert versions <= set(range(1, len(ERASED) + 2))


def test_two_retention_runs_at_once_write_one_version(workspace_on):
    first = _open()
    set_policy(first, "visits", older_than_days=365, date_column="visit_date")
    now = datetime(2026, 6, 2, tzinfo=UTC)
    reports = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        catalog = _open()
        try:
            start.wait()
            reports.append(run_retention(catalog, now=now))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            catalog.store.dispose()

    runners = [threading.Thread(target=run) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=120)
    assert not errors, errors
    assert sorted(len(r.changed) for r in reports) == [0, 1]
    with first.store.session() as session:
        assert session.scalar(select(func.count()).select_from(DatasetVersionRow)) == 2
        assert session.scalar(select(func.count()).select_from(ErasureRow)) == 1
    first.store.dispose()


def test_an_erasure_and_a_retention_run_at_once_both_hold(workspace_on):
    """Neither undoes the other: the last version lacks the person and the aged rows."""
    first = _open()
    set_policy(first, "visits", older_than_days=365, date_column="visit_date")
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def act(job) -> None:
        catalog = _open()
        try:
            start.wait()
            job(catalog)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            catalog.store.dispose()

    jobs = [
        lambda c: erase(c, "visits", "P-0005", reason="request"),
        lambda c: run_retention(c, now=datetime(2026, 6, 2, tzinfo=UTC)),
    ]
    threads = [threading.Thread(target=act, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    frame = first.load_frame("visits", purpose="test")
    assert frame.attrs["veil.version"] == 3
    assert "P-0005" not in set(frame["pid"])
    assert (frame["visit_date"].astype("datetime64[ns]") >= pd.Timestamp("2025-06-02")).all()
    assert len(frame) == 12  # people 0-12 keep their recent visit, less P-0005's
    first.store.dispose()

"""The workspace database on SQLite and on the local PostgreSQL (store_url runs both)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from veil.errors import InvalidInputError, StoreError, StoreVersionError
from veil.store import Store, head_revision
from veil.store import _store as store_module
from veil.store.tables import Base, DatasetRow


def _row(name: str = "d", **overrides) -> DatasetRow:
    values = {
        "name": name,
        "format": "csv",
        "source": "/data/d.csv",
        "content_sha256": "0" * 64,
        "size_bytes": 10,
        "n_rows": 1,
        "n_columns": 1,
        "privacy_schema": {"columns": [{"name": "a", "kind": "numeric"}]},
        "load_options": {},
        "registration_report": {"rows": 1},
        "created_by": "pytest",
        "veil_version": "0.1.0",
    }
    values.update(overrides)
    return DatasetRow(**values)


def test_upgrade_brings_an_empty_database_to_head(store_url: str):
    store = Store.open(store_url, upgrade=True)
    assert store.current_revision() == head_revision()
    store.check_version()
    store.dispose()


def test_an_empty_database_is_refused_until_initialised(store_url: str):
    with pytest.raises(StoreVersionError, match="veil init") as caught:
        Store.open(store_url)
    assert caught.value.details == {"current": None, "head": head_revision()}


def test_models_and_migrations_do_not_drift(store: Store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], f"add a migration for: {differences}"


def test_migrations_go_down_and_up_again(store: Store):
    config = store_module._alembic_config()
    with store.engine.connect() as connection, connection.begin():
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert store.current_revision() is None
    store.upgrade()
    assert store.current_revision() == head_revision()


def test_database_from_a_newer_veil_is_refused_and_left_alone(store: Store):
    with store.session() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(StoreVersionError, match="newer Veil"):
        store.check_version()
    with pytest.raises(StoreVersionError, match="newer Veil"):
        store.upgrade()
    assert store.current_revision() == "9999_future"


def test_database_from_an_older_veil_asks_for_upgrade(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    current = head_revision()
    monkeypatch.setattr(store_module, "head_revision", lambda: "9999_next")
    monkeypatch.setattr(store_module, "_known_revisions", lambda: {current, "9999_next"})
    with pytest.raises(StoreVersionError, match="veil db upgrade") as caught:
        store.check_version()
    assert caught.value.details == {"current": current, "head": "9999_next"}


def test_a_transaction_that_raises_writes_nothing(store: Store):
    with pytest.raises(RuntimeError, match="boom"), store.session() as session:  # noqa: PT012
        session.add(_row("half"))
        session.flush()
        raise RuntimeError("boom")
    with store.session() as session:
        assert session.scalars(select(DatasetRow)).all() == []


def test_dataset_names_are_unique_in_the_database(store: Store):
    with store.session() as session:
        session.add(_row("same"))
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(_row("same"))
    with store.session() as session:
        assert len(session.scalars(select(DatasetRow)).all()) == 1


@pytest.mark.slow
def test_timestamps_round_trip_as_utc(store: Store):
    local = datetime(2026, 11, 22, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    with store.session() as session:
        session.add(_row("t", created_at=local))
    with store.session() as session:
        stored = session.scalars(select(DatasetRow.created_at)).one()
    assert stored == local
    assert stored.tzinfo == UTC
    with pytest.raises(Exception, match="timezone-aware"), store.session() as session:
        session.add(_row("naive", created_at=datetime(2026, 1, 1)))  # noqa: DTZ001 - the point


def test_json_columns_keep_nested_values(store: Store):
    schema = {"columns": [{"name": "a", "bounds": [0.5, 1e9], "categories": None}], "x": "é"}
    with store.session() as session:
        session.add(_row("j", privacy_schema=schema))
    with store.session() as session:
        assert session.scalars(select(DatasetRow.privacy_schema)).one() == schema


def test_sqlite_uses_wal_and_full_sync(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}", upgrade=True)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.dispose()


def _count_connects(store: Store) -> list[int]:
    opened = [0]

    def on_connect(*_args: object) -> None:
        opened[0] += 1

    event.listen(store.engine, "connect", on_connect)
    return opened


@pytest.mark.parametrize("pooled", [False, True])
def test_a_pooled_sqlite_store_keeps_its_connection_and_its_pragmas(tmp_path: Path, pooled: bool):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    Store.open(url, upgrade=True).dispose()
    store = Store.open(url, pooled=pooled)
    opened = _count_connects(store)
    try:
        for i in range(20):
            with store.session(lock=i % 2 == 0) as session:
                session.add(_row(f"d{i}"))
        # A command's store opens the file per transaction; the gateway's keeps the
        # connection its version check opened.
        assert opened[0] == (0 if pooled else 20)
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()


def test_a_pooled_sqlite_store_serves_many_threads_one_writer_at_a_time(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    Store.open(url, upgrade=True).dispose()
    store = Store.open(url, pooled=True)
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(25):
                with store.session(lock=True) as session:  # read-check-write under the lock
                    count = len(session.scalars(select(DatasetRow.name)).all())
                    session.add(_row(f"w{w}-{i}", n_rows=count))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not failures, failures
        with store.session() as session:
            counts = sorted(session.scalars(select(DatasetRow.n_rows)).all())
        # Each writer saw every earlier row and none of a later one: no interleaving.
        assert counts == list(range(200))
    finally:
        store.dispose()


def test_sqlite_locking_session_holds_the_write_lock(tmp_path: Path):
    path = tmp_path / "lock.db"
    store = Store.open(f"sqlite:///{path}", upgrade=True)
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with store.session(lock=True):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        release.set()
        thread.join()
    other.execute("BEGIN IMMEDIATE")  # free again once the locking session ended
    other.execute("ROLLBACK")
    other.close()
    store.dispose()


def test_unreachable_postgresql_is_a_clear_store_error():
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot connect") as caught:
        Store.open("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert "VEIL_DATABASE_URL" in str(caught.value)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url at all"])
def test_unsupported_or_malformed_url_is_refused(url: str):
    with pytest.raises(InvalidInputError):
        Store.open(url)


def test_display_url_hides_passwords(postgres_admin_url: str):
    store = Store.open(postgres_admin_url.replace("postgres@", "postgres:s3cret@"), check=False)
    try:
        assert "s3cret" not in store.display_url
        assert store.backend == "postgresql"
    finally:
        store.dispose()

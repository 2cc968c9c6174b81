"""Opening the workspace database, keeping its schema versioned, and transactions.

SQLite (the default) is opened in WAL mode with ``synchronous=FULL`` and a
busy timeout, so that several processes can read while one writes and a
committed transaction survives a crash. PostgreSQL is used when the URL says so
(``postgresql://`` is mapped to the psycopg 3 driver).

Schema versions are Alembic revisions shipped inside the package
(``veil/store/migrations``). A store is used only at the head revision: an
older database asks for ``veil db upgrade``, a newer one (written by a later
Veil) asks for a newer Veil, and neither is ever changed behind the user's back.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from veil.errors import InvalidInputError, StoreError, StoreVersionError, require
from veil.workspace import Workspace, redact_url

__all__ = ["Store"]

_MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A pooled SQLite store (see Store.open): connections kept open, and opened beyond that
# while many threads hold one (SQLite has one writer at a time; readers do not wait).
SQLITE_POOL_SIZE = 4
SQLITE_POOL_OVERFLOW = 12


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@functools.cache
def _revisions() -> tuple[str | None, frozenset[str]]:
    """The head and every revision of the migrations shipped with this Veil.

    Read once a process: finding them executes every migration script (tens of
    milliseconds), and every opening of a store compares against the head.
    """
    script = ScriptDirectory.from_config(_alembic_config())
    return script.get_current_head(), frozenset(rev.revision for rev in script.walk_revisions())


def head_revision() -> str:
    """The schema revision this version of Veil works with."""
    head = _revisions()[0]
    if head is None:  # pragma: no cover - the package always ships migrations
        msg = "no migrations shipped with Veil"
        raise RuntimeError(msg)
    return head


def _known_revisions() -> frozenset[str]:
    return _revisions()[1]


def normalise_url(raw: str) -> URL:
    """Parse a database URL and choose Veil's driver for it.

    ``postgresql://`` and ``postgres://`` get the psycopg 3 driver; SQLite and
    PostgreSQL are the supported backends. An error never shows the password
    (see :func:`veil.workspace.redact_url`), nor chains the parser's exception.
    """
    unparseable = InvalidInputError(
        "the database URL cannot be parsed",
        expected="a URL such as sqlite:///path/veil.db or postgresql://user:password@host:5432/db, "
        "with '@', ':' and '/' in the password percent-encoded (%40, %3A, %2F)",
        got=repr(redact_url(raw)),
        fix="correct VEIL_DATABASE_URL or [store] url in config.toml",
    )
    try:
        url = make_url(raw.replace("postgres://", "postgresql://", 1))
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, an open '['
        raise unparseable from None
    if url.host is not None and "@" in url.host:  # an '@' of the password taken for the host's
        raise unparseable
    backend = url.get_backend_name()
    if backend == "postgresql":
        require("psycopg", extra="postgres", purpose="A PostgreSQL store")
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise InvalidInputError(
        "unsupported database",
        expected="sqlite or postgresql",
        got=backend,
        fix="use a SQLite file (the default) or a PostgreSQL URL",
    )


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver must not open transactions on its own: we emit BEGIN ourselves
    # (see _on_sqlite_begin), so that a writer can ask for BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get("veil_sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """The workspace database.

    Use :meth:`open` (or :meth:`for_workspace`) rather than the constructor.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._locking_sessions = sessionmaker(
            engine.execution_options(veil_sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, url: str, *, upgrade: bool = False, check: bool = True, pooled: bool = False
    ) -> Store:
        """Connect to the database at ``url``.

        Args:
            url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql://...``).
            upgrade: Create or migrate the schema to the head revision first.
                Without it, a database not at head raises :class:`StoreVersionError`.
            check: Check the schema revision (``veil db status`` turns this off
                to report a mismatch instead of raising it).
            pooled: Keep SQLite connections open between transactions (a long-lived
                process: the gateway). By default a SQLite file is opened for each
                transaction and closed after it, so that a command holds nothing open
                and a forked worker inherits no connection; but each opening costs the
                pragmas, and the last close of a WAL database checkpoints it (a write
                and an fsync of the database file). PostgreSQL is always pooled.

        Raises:
            StoreError: The database cannot be reached.
            StoreVersionError: The schema is missing, older or newer than expected.
        """
        parsed = normalise_url(url)
        engine = cls._create_engine(parsed, pooled=pooled)
        store = cls(engine)
        try:
            if upgrade:
                store.upgrade()
            if check:
                store.check_version()
        except BaseException:
            engine.dispose()
            raise
        return store

    @classmethod
    def for_workspace(
        cls, workspace: Workspace | None = None, *, upgrade: bool = False, pooled: bool = False
    ) -> Store:
        """Open the store of ``workspace`` (located from the current directory if omitted)."""
        workspace = workspace or Workspace.locate()
        return cls.open(workspace.settings.database_url, upgrade=upgrade, pooled=pooled)

    @staticmethod
    def _create_engine(url: URL, *, pooled: bool = False) -> Engine:
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                # One shared connection, or every session would see a new empty database.
                engine = create_engine(
                    url, poolclass=StaticPool, connect_args={"check_same_thread": False}
                )
            else:
                database = Path(url.database)
                database.parent.mkdir(parents=True, exist_ok=True)
                # A new database is created owner-only (SQLite gives its -wal and -shm files
                # the same mode); under the usual umask it would be 0644, readable by all.
                if not url.query.get("uri"):  # a file: URI names its path in its own way
                    with contextlib.suppress(FileExistsError):
                        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                if pooled:
                    # Connections move between threads but one thread uses one at a time
                    # (the pool checks it out), which is what check_same_thread guards.
                    engine = create_engine(
                        url,
                        poolclass=QueuePool,
                        pool_size=SQLITE_POOL_SIZE,
                        max_overflow=SQLITE_POOL_OVERFLOW,
                        connect_args={"check_same_thread": False},
                    )
                else:
                    # NullPool: every session gets its own connection, so the file is
                    # never held open between commands and forked workers are safe.
                    engine = create_engine(url, poolclass=NullPool)
            event.listen(engine, "connect", _on_sqlite_connect)
            event.listen(engine, "begin", _on_sqlite_begin)
            return engine
        return create_engine(url, pool_pre_ping=True)

    def dispose(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages and ``veil db status``."""
        return redact_url(self.engine.url.render_as_string(hide_password=False))

    # ---------------------------------------------------------------- versions
    def current_revision(self) -> str | None:
        """The schema revision stored in the database (``None`` if never migrated)."""
        with self._connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def check_version(self) -> None:
        """Raise :class:`StoreVersionError` unless the schema is at the head revision."""
        current = self.current_revision()
        head = head_revision()
        if current == head:
            return
        if current is None:
            with self._connect() as connection:
                has_tables = bool(inspect(connection).get_table_names())
            raise StoreVersionError(
                "the workspace database has no Veil schema",
                expected=f"schema revision {head}",
                got="an empty database" if not has_tables else "tables but no Veil revision",
                fix="run `veil init` (it creates the schema)",
                details={"current": None, "head": head},
            )
        if current in _known_revisions():
            raise StoreVersionError(
                "the workspace database was made by an older Veil",
                expected=f"schema revision {head}",
                got=f"revision {current}",
                fix="back up the database, then run `veil db upgrade`",
                details={"current": current, "head": head},
            )
        raise StoreVersionError(
            "the workspace database was made by a newer Veil",
            expected=f"schema revision {head} or older",
            got=f"unknown revision {current}",
            fix="upgrade Veil (pip install -U veil) before using this workspace",
            details={"current": current, "head": head},
        )

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` in one transaction (PostgreSQL) or step by step."""
        current = self.current_revision()
        if revision == "head" and current == head_revision():
            return  # already there: nothing for alembic to do
        if current is not None and current not in _known_revisions():
            self.check_version()  # raises: a newer Veil wrote this database
        config = _alembic_config()
        with self._connect() as connection, connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    # ------------------------------------------------------------ transactions
    def _scrub(self, text: str) -> str:
        """``text`` (a driver's message) with every password of the URL replaced by ``***``."""
        url = self.engine.url
        secrets = [url.password, url.query.get("password"), url.query.get("sslpassword")]
        for secret in secrets:
            for value in (secret,) if isinstance(secret, str) else (secret or ()):
                if value:
                    text = text.replace(str(value), "***")
        return text

    def _unreachable(self, exc: OperationalError, message: str) -> StoreError:
        # Chained `from None`: the driver's exception may quote the connection string.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return StoreError(
            message,
            expected=f"a database answering at {self.display_url}",
            got=self._scrub(redact_url(reason) if "://" in reason else reason),
            fix="start the database server (or end a process stuck holding its lock), "
            "or check VEIL_DATABASE_URL / config.toml",
        )

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        try:
            connection = self.engine.connect()
        except OperationalError as exc:
            raise self._unreachable(exc, "cannot connect to the workspace database") from None
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def session(self, *, lock: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises.

        Args:
            lock: Take the write lock when the transaction starts (SQLite
                ``BEGIN IMMEDIATE``), so that a read-check-write sequence cannot
                interleave with another writer. On PostgreSQL lock the rows you
                read with ``SELECT ... FOR UPDATE`` (``with_for_update()``).
        """
        factory = self._locking_sessions if lock else self._sessions
        try:
            session = factory()
            session.connection()  # connect and BEGIN now, so failures surface here
        except OperationalError as exc:
            raise self._unreachable(
                exc, "cannot start a transaction on the workspace database"
            ) from None
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

"""Shared fixtures: isolated workspaces, the real data in ../shared/data, and both store backends."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VEIL_TEST_DATA", ROOT.parent / "shared" / "data"))
# The local PostgreSQL (trust auth). Override to test against another server.
POSTGRES_ADMIN_URL = os.environ.get(
    "VEIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Rich reads COLUMNS when a console is made, and the CLI makes its consoles at import. Set it
# before any test module imports the CLI, so that a pytest-xdist worker (no terminal on any of
# its standard streams) wraps messages exactly as a run from a terminal does.
os.environ["COLUMNS"] = "120"
# JAX's persistent compilation cache, shared by both workers and by the processes they start:
# the synthesis benchmark fits each generator in a fresh process, and each compiled the same
# functions again (`veil bench synth --tiny`: 40 s, 33 s with a cold cache, 28 s warm). The
# cache holds compiled code keyed by the computation and JAX's version: no result changes.
# It outlives the run (a second run finds its entries), in the system's temporary folder.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"veil-tests-jax-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# A size limit turns on JAX's file lock: without one, a worker could read an entry the other
# is still writing (a warning, which the suite makes an error).
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2**30))
# Under pytest-xdist, each worker's numerical libraries get their share of the cores, not all
# of them. PyTorch (OpenMP) and OpenBLAS start one thread per core in every process, and their
# idle threads spin while they wait: with two workers on two cores, four threads took turns,
# and the spinning was paid for in CPU time. A README page, the pipeline and attack tests on
# two workers: 117 CPU-s and 58 s with the default threads, 73 CPU-s and 44 s with one each.
# Set before any library is imported (children inherit it: `veil._childenv` passes these
# names on); a developer's own setting wins. Results do not depend on it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _SHARE)


def pytest_configure(config: pytest.Config) -> None:
    """absl's logging handler (dp_accounting imports absl) writes to whatever ``sys.stderr`` was
    when absl was imported, and *closes* that stream when a logging reconfiguration clears the
    handlers (uvicorn's ``dictConfig`` does) unless it is the current ``sys.stderr``. Imported
    under pytest's capture, its stream is a capture file of an earlier test (or the session's),
    and closing it crashed the worker's reporting ("I/O operation on closed file"; seen with a
    Spark test, which first imports the ledger, followed by docs/serve.md in one worker). Bound
    here to the real stderr, which absl never closes."""
    del config
    import sys

    import absl.logging

    absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``xdist_group`` marks group tests under ``--dist loadgroup``.

    pytest-xdist tags each grouped test's id with ``@group`` in a worker hook,
    and the controller sends tests with the same tag to one worker. pytest-xdist
    3.8 writes the tag to ``item._nodeid``, which pytest 9 no longer reads (an
    item's id is ``item._id``): the tags were lost, the tests of one group ran on
    both workers, and each worker built the module's costly fixtures again
    (found with a probe test; the suite's ``--durations`` showed the same
    fixture set up twice). The tags are added here, where pytest 9 reads them.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId  # pytest 9's structured id; absent before

    for item in items:
        names = sorted(
            {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
        )
        tag = f"@{'_'.join(names)}"
        if names and not item.nodeid.endswith(tag):
            item._id = NodeId.parse(f"{item.nodeid}{tag}")  # as pytest-xdist does


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's workspace or database settings."""
    for key in list(os.environ):
        if key.startswith("VEIL_") and key not in ("VEIL_TEST_POSTGRES_URL", "VEIL_TEST_DATA"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("COLUMNS", "120")  # rich tables wide enough to read in assertions
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def seed() -> int:
    """Seed for tests that use randomness; any seed in 0-99 must pass."""
    return 42


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "adult" / "adult.data").is_file():
        pytest.fail(
            f"the real test data is missing: expected ../shared/data beside the checkout "
            f"(looked in {SHARED_DATA}); set VEIL_TEST_DATA to its location"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The local PostgreSQL server, or a skip that says so in the test output."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("select 1")
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL store tests SKIPPED: no server answers at {POSTGRES_ADMIN_URL} "
            f"({str(exc).strip().splitlines()[0]})"
        )
    return POSTGRES_ADMIN_URL


_FROM_TEMPLATE: set[str] = set()
"""PostgreSQL databases created as copies of the migrated template (``_copy_migrated`` skips them)."""


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards.

    Empty, unless the test asks for ``store``: then it is created at once as a copy of
    the database migrated once per process (creating an empty one to replace it cost
    0.15-0.4 s a test, across some 300 PostgreSQL tests).
    """
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"veil_test_{uuid.uuid4().hex[:12]}"
    template = None
    if "store" in request.fixturenames:
        template = request.getfixturevalue("_migrated_postgres")
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        if template is None:
            connection.execute(f'CREATE DATABASE "{name}"')
        else:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            _FROM_TEMPLATE.add(name)
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _FROM_TEMPLATE.discard(name)
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The PostgreSQL runs are the slow tier (as in tests/access/conftest.py): `make test-fast` keeps the
# embedded default, SQLite; `make test` (CI) runs both.
@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'veil.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated to head once per test process, for the fixtures below to copy."""
    from veil.store import Store

    path = tmp_path_factory.mktemp("migrated") / "veil.db"
    Store.open(f"sqlite:///{path}", upgrade=True).dispose()
    assert not path.with_name("veil.db-wal").exists()  # the last close checkpointed the log
    return path


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per test process (a template to copy)."""
    import psycopg
    from sqlalchemy.engine import make_url

    from veil.store import Store

    name = f"veil_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(postgres_admin_url).set(database=name)
        Store.open(url.render_as_string(hide_password=False), upgrade=True).dispose()
        yield name
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _copy_migrated(request: pytest.FixtureRequest, url: str) -> None:
    """Replace the empty database at ``url`` by a copy of one already at head.

    Migrating an empty database costs 0.1-0.6 s a test (more under load, and most of the
    suite's tests open a store); copying one migrated once per process costs a few
    milliseconds. The migrations themselves are tested on empty databases
    (``tests/store``), which use ``store_url`` and migrate it themselves.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        target = Path(str(parsed.database))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(request.getfixturevalue("_migrated_sqlite"), target)  # keeps mode 0600
        return
    if parsed.database in _FROM_TEMPLATE:
        return  # made as a copy of the template already (postgres_url)
    import psycopg

    admin = request.getfixturevalue("postgres_admin_url")
    template = request.getfixturevalue("_migrated_postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{parsed.database}" TEMPLATE "{template}"')


@pytest.fixture
def store(request: pytest.FixtureRequest, store_url: str):
    """A store at the head revision on ``store_url`` (a copy of one migrated once)."""
    from veil.store import Store

    _copy_migrated(request, store_url)
    opened = Store.open(store_url, upgrade=True)
    yield opened
    opened.dispose()


@pytest.fixture
def catalog(store):
    from veil.data import Catalog
    from veil.workspace import Settings, login_name

    return Catalog(store, Settings(store.display_url, None, login_name()))


@pytest.fixture
def workspace(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An initialised workspace in the test's directory (./.veil)."""
    from veil.store import Store
    from veil.workspace import Workspace

    created = Workspace.create(tmp_path / ".veil")
    _copy_migrated(request, f"sqlite:///{created.sqlite_path}")
    Store.for_workspace(created, upgrade=True).dispose()
    return created


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The suite's CPU time: pytest, its xdist workers and every process they waited for.

    This machine is shared and its speed moves (the same suite took 878 s and 1,640 s of wall
    time on one day); CPU time moves much less, so it is what docs/benchmarks.md compares
    between two versions of the suite. Processes left running and killed are not counted.
    """
    if hasattr(config, "workerinput"):  # a worker: the controller reports for all of them
        return
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    terminalreporter.write_line(
        f"suite CPU time: {cpu:,.0f} s (pytest, its workers and their children)"
    )

"""Fixtures for the service: a served workspace, the gateway over real HTTP, a multi-worker server.

``serve_template`` builds one workspace per test session through the CLI (the
sklearn digits dataset with a budget, a small DP logistic regression
``digits-lr``, a service key for each role); ``serve_home`` copies it for one
test, so tests never share budgets, usage or trail. ``gateway`` serves a copy
with uvicorn on a free 127.0.0.1 port in a thread of the test process (real
HTTP and the real lifespan); ``start_gateway`` does the same with a policy of
the test's choosing. ``serve_process`` runs ``veil serve`` as a subprocess
(several workers on PostgreSQL and Redis).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests._cli import environment, run_cli

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

ROLES = ("owner", "analyst", "auditor", "consumer")
# One Redis database per pytest-xdist worker (15, 14, ...): the multi-worker servers flush theirs.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = os.environ.get("VEIL_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - _WORKER % 8}")
MODEL = "digits-lr"
DATASET = "digits"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def veil(*args: str) -> str:
    """Run the CLI in-process; its standard output (fails the test on a non-zero exit)."""
    done = run_cli(*args)
    if done.returncode != 0:
        pytest.fail(f"veil {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}")
    return done.stdout


def build_workspace(home: Path, database_url: str | None = None) -> dict[str, str]:
    """A workspace at ``home`` with digits, its budget, ``digits-lr`` and a key per role."""
    env = {"VEIL_HOME": str(home), "VEIL_DATABASE_URL": database_url, "VEIL_KEY": None}
    with environment(env):
        veil("init")
        veil("datasets", "add", "sklearn:digits", "--name", DATASET)
        veil("budget", "set", DATASET, "--epsilon", "10", "--delta", "1e-4")
        veil(
            "train", "--dataset", DATASET, "--model", "logreg", "--epsilon", "2",
            "--delta", "1e-4", "--epochs", "2", "--batch-size", "100", "--name", MODEL,
        )  # fmt: skip
        keys = {}
        for role in ROLES:
            made = json.loads(veil("keys", "create", f"test-{role}", "--role", role, "--json"))
            keys[role] = made["token"]
    return keys


@dataclass
class Served:
    """A workspace copy ready to serve, with its keys."""

    home: Path
    keys: dict[str, str]


@pytest.fixture(scope="session")
def serve_template(tmp_path_factory: pytest.TempPathFactory) -> Served:
    home = tmp_path_factory.mktemp("serve-template") / ".veil"
    keys = build_workspace(home)
    return Served(home, keys)


@pytest.fixture
def serve_home(serve_template: Served, tmp_path: Path) -> Served:
    home = tmp_path / "ws" / ".veil"
    shutil.copytree(serve_template.home, home)
    return Served(home, dict(serve_template.keys))


@dataclass
class Gateway:
    """A running gateway: its URL, keys and workspace."""

    url: str
    keys: dict[str, str]
    home: Path
    app: Any
    server: Any = None
    thread: threading.Thread | None = None
    clients: list[Any] = field(default_factory=list)

    def client(self, role: str | None = None, *, token: str | None = None) -> Any:
        """An httpx client with ``role``'s key (or ``token``; neither: no key)."""
        token = token or (self.keys[role] if role else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        made = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.clients.append(made)
        return made

    @property
    def state(self) -> Any:
        return self.app.state.veil

    def stop(self) -> None:
        for made in self.clients:
            made.close()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)


def _serve_in_thread(served: Served, policy: Path | None, **options: Any) -> Gateway:
    from veil.serve import ServeConfig, create_app

    port = free_port()
    config = ServeConfig(home=served.home, port=port, policy=policy, **options)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            ws="none",
            proxy_headers=False,  # as veil serve without --forwarded-allow-ips
        )
    )
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the gateway did not start (see the captured log)")
        time.sleep(0.02)
    return Gateway(f"http://127.0.0.1:{port}", served.keys, served.home, app, server, thread)


@pytest.fixture
def start_gateway(serve_home: Served) -> Iterator[Callable[..., Gateway]]:
    """Start the gateway on this test's workspace, with a policy (YAML text) if given."""
    started: list[Gateway] = []

    def start(policy: str | None = None, **options: Any) -> Gateway:
        path = None
        if policy is not None:
            path = serve_home.home.parent / f"policy-{len(started)}.yaml"
            path.write_text(policy, encoding="utf-8")
        gateway = _serve_in_thread(serve_home, path, **options)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """The gateway with the built-in default policy."""
    return start_gateway()


# ---------------------------------------------------------------- subprocess servers
@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis (db 15), or a skip that says so."""
    redis = pytest.importorskip("redis")
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        pytest.skip(f"Redis tests SKIPPED: no server answers at {REDIS_URL} ({exc})")
    return REDIS_URL


@dataclass
class ServeProcess:
    url: str
    keys: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def client(self, role: str) -> Any:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[role]}"}, timeout=60
        )

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def start_process(
    home: Path,
    keys: dict[str, str],
    *,
    workers: int,
    env: Mapping[str, str],
    args: tuple[str, ...] = (),
) -> ServeProcess:
    port = free_port()
    full = {**os.environ, **env, "VEIL_HOME": str(home)}
    full.pop("VEIL_KEY", None)
    log = home.parent / f"serve-{port}.log"
    command = [
        str(Path(sys.executable).parent / "veil"), "serve", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", *args,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=full, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # four workers importing torch on a loaded machine
    while True:
        if process.poll() is not None:
            pytest.fail(f"veil serve exited {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"veil serve did not become ready: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    return ServeProcess(url, keys, home, process, log, dict(env))


def stop_process(served: ServeProcess) -> None:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture(scope="session")
def _serve_pg_template(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Served]]:
    """A workspace on PostgreSQL built once per test process: its database and its home.

    ``gateway_pg`` copies both for each test (``CREATE DATABASE ... TEMPLATE`` and a
    copy of the folder), as ``serve_home`` copies the SQLite one: building it through
    the CLI (a model trained, keys made) took 7-10 s a test.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"veil_serve_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
        home = tmp_path_factory.mktemp("serve-pg-template") / ".veil"
        keys = build_workspace(home, url)
        yield name, Served(home, keys)
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def gateway_pg(
    postgres_admin_url: str,
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
    _serve_pg_template: tuple[str, Served],
) -> Iterator[ServeProcess]:
    """``veil serve --workers 4`` on a copy of the PostgreSQL workspace and the local Redis."""
    import psycopg
    import redis
    from sqlalchemy.engine import make_url

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    template, built = _serve_pg_template
    database = make_url(postgres_url).database
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        # A template may have no other connection while it is copied.
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (template,),
        )
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    home = tmp_path / "pg" / ".veil"
    shutil.copytree(built.home, home)
    served = start_process(
        home,
        dict(built.keys),
        workers=4,
        env={"VEIL_DATABASE_URL": postgres_url, "VEIL_REDIS_URL": redis_url},
    )
    yield served
    stop_process(served)

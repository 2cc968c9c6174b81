"""Outages of what the gateway depends on: refused with 503, never a 500, never unaccounted.

When PostgreSQL (the ledger, the trail, the keys) stops taking connections, or
Redis (rate limits, count budgets) stops answering, a DP query or a prediction
cannot be charged, counted or recorded; the gateway must then refuse it with
503 ``unavailable`` or ``store_error`` (the error body's shape, a request id) rather than fail
with a 500 or answer it without its accounting. ``/readyz`` says not ready,
naming the part that is down, so a load balancer stops sending traffic. When
the part comes back, the same gateway serves again without a restart, and
what it answered is on a trail that verifies.

PostgreSQL is made to refuse with ``ALTER DATABASE ... ALLOW_CONNECTIONS
false`` and its backends terminated (the server stays up: the same as a
database restart or a failover as seen by a client); Redis is a private
``redis-server`` on a free port that the test kills and starts again.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
redis = pytest.importorskip("redis")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve")]

DATASET = "digits"
MODEL = "digits-lr"
QUERY = f"/v1/datasets/{DATASET}/query"
PREDICT = f"/v1/models/{MODEL}/predict"
SQL = "SELECT COUNT(*) AS n FROM t"


def _query(client: Any) -> Any:
    return client.post(QUERY, json={"sql": SQL, "epsilon": 0.01, "purpose": "outage test"})


def _predict(client: Any) -> Any:
    return client.post(PREDICT, json={"inputs": [[0.5] * 64]})


def _unavailable(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = dict(body["error"])
    assert error["code"] in {"unavailable", "store_error"}, error  # both: 503, retry later
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["fix"]
    return error


def _eventually(probe: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


def _ready(client: Any) -> bool:
    return bool(client.get("/readyz").status_code == 200)


# ---------------------------------------------------------------- PostgreSQL
def _allow_connections(database_url: str, *, on: bool) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    admin = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(on).lower()}')
        if not on:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def _events(home: Path) -> set[str]:
    """The ids of the dataset's ledger events, its history verified (as the workspace's owner).

    ``Ledger.open`` seals with the workspace's ledger key, as the service does: a ledger
    opened without it would write a checkpoint the service then reads as tampered with.
    """
    from veil.ledger import Ledger
    from veil.workspace import Workspace

    ledger = Ledger.open(Workspace(home))
    try:
        verified = ledger.verify(DATASET)
        assert verified["ok"], verified["problems"]
        return {e.id for e in ledger.entries(DATASET)}
    finally:
        ledger.store.dispose()


def _during_the_outage(analyst: Any, consumer: Any, anonymous: Any) -> list[str]:
    """Queries refused at once, predictions once the spool is behind a failing database."""
    for _ in range(3):
        error = _unavailable(_query(analyst))
        # The database's address and name are the operator's business, not the caller's.
        assert "5432" not in str(error) and "veil_test_" not in str(error), error
    ready = anonymous.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert ready.json()["checks"]["database"].startswith("down")
    # A prediction needs no database until its entry must reach the trail: answered while
    # the entry waits in the worker's spool (durable on its disk), refused once a flush has
    # failed and the oldest waiting entry is a second old (the spool's FAILING_LAG).
    answered = []
    deadline = time.monotonic() + 40
    while (response := _predict(consumer)).status_code == 200:
        answered.append(response.headers["x-request-id"])
        assert time.monotonic() < deadline, "predictions still answered 40 s into the outage"
        time.sleep(0.5)
    _unavailable(response)
    return answered


@pytest.mark.postgres
def test_postgresql_refusing_connections_is_503_then_the_service_recovers(gateway_pg, monkeypatch):
    import signal

    from veil.access import Outcome, Trail
    from veil.store import Store

    database_url = gateway_pg.env["VEIL_DATABASE_URL"]
    monkeypatch.setenv("VEIL_DATABASE_URL", database_url)
    monkeypatch.delenv("VEIL_KEY", raising=False)
    before = _events(gateway_pg.home)  # the model's training
    analyst, consumer = gateway_pg.client("analyst"), gateway_pg.client("consumer")
    anonymous = httpx.Client(base_url=gateway_pg.url, timeout=60)
    try:
        first = _query(analyst)
        assert first.status_code == 200 and _predict(consumer).status_code == 200
        _allow_connections(database_url, on=False)
        try:
            waited = _during_the_outage(analyst, consumer, anonymous)
        finally:
            _allow_connections(database_url, on=True)
        _eventually(lambda: _ready(anonymous), "ready again")
        again: list[Any] = []
        _eventually(lambda: again.append(_query(analyst)) or again[-1].status_code == 200, "back")
        assert _predict(consumer).status_code == 200
    finally:
        for client in (analyst, consumer, anonymous):
            client.close()
    gateway_pg.process.send_signal(signal.SIGTERM)
    assert gateway_pg.process.wait(timeout=60) in (0, -signal.SIGTERM)  # a clean stop

    # No charge without its answer: the refused queries spent nothing.
    answered = {r.json()["charged"]["event_id"] for r in (first, again[-1])}
    assert _events(gateway_pg.home) - before == answered
    store = Store.open(database_url)
    try:
        trail = Trail(store)
        assert trail.verify().ok
        charges = trail.entries(action="privacy.charge", dataset=DATASET)
        allowed = {e.links["ledger_event"] for e in charges if e.outcome == Outcome.ALLOWED}
        assert allowed - before == answered
        # The predictions answered during the outage reached the trail once it came back.
        recorded = {e.details.get("request_id") for e in trail.entries(action="serve.request")}
        assert set(waited) <= recorded
    finally:
        store.dispose()


# ---------------------------------------------------------------- Redis
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A throwaway redis-server on a free port that the test may kill and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the outage test needs a Redis it may stop")
    port = _free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        client = redis.Redis(port=port, socket_timeout=1)
        try:
            _eventually(lambda: _pings(client), "answering", timeout=10)
        finally:
            client.close()
        return process

    start.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_down_is_503_and_not_ready_then_the_service_recovers(start_gateway, private_redis):
    from veil.access import Trail

    server = private_redis()
    gateway = start_gateway(redis_url=private_redis.url)
    analyst, consumer = gateway.client("analyst"), gateway.client("consumer")
    anonymous = gateway.client()
    assert _query(analyst).status_code == 200
    assert _predict(consumer).status_code == 200
    records_left = _predict(consumer).json()["records_left"]

    server.kill()
    server.wait(timeout=10)
    refused = [_unavailable(_query(analyst)), _unavailable(_predict(consumer))]
    # Even a key's refusal needs the limits (the per-address limit comes first): still 503.
    refused.append(_unavailable(anonymous.get("/v1/models")))
    assert all("redis" in (e["message"] + (e["got"] or "")).lower() for e in refused), refused
    ready = anonymous.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["limits"].startswith("down")
    assert ready.json()["checks"]["database"] == "ok"

    private_redis()  # empty: the count budget is seeded again from the database
    _eventually(lambda: _ready(anonymous), "ready again")
    assert _query(analyst).status_code == 200
    after = _predict(consumer)
    assert after.status_code == 200
    # The records answered before the outage still count: nothing was forgotten or refunded.
    assert after.json()["records_left"] == records_left - 1

    gateway.state.spool.flush()
    entries = Trail(gateway.state.store).entries(action="serve.request")
    statuses = [e.details["status"] for e in entries]
    assert statuses.count(503) == 3
    assert Trail(gateway.state.store).verify().ok

"""Concurrent DP queries against one budget, through ``veil serve --workers 4`` on PostgreSQL.

The issue's goal: 50 clients issuing DP queries at once against one budget
never overspend it, and the number of accepted releases is exactly what the
budget admits. Here the budget is pure epsilon ``K * E + E / 2`` (delta 0) and
every query is a Laplace count costing ``E``: under pure composition exactly
``K`` fit, and the half-query of slack absorbs the accountant's pessimistic
rounding without admitting a ``K + 1``-th. Four worker processes share the
ledger only through PostgreSQL (its row lock serialises the charges), so an
overspend would show as more than ``K`` acceptances, and a lost charge as an
answer whose ledger event is missing.

A second test kills one worker with SIGKILL in the middle of a storm: every
ledger event must still have its ``privacy.charge`` trail entry and the
reverse (they commit in one transaction), every answer its event, and the
other workers must keep answering.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("serve-pg")]

K = 10  # releases the budget admits
E = 0.1  # epsilon per query
CLIENTS = 50
PER_CLIENT = 2
DATASET = "iris"
SQL = "SELECT COUNT(*) AS n FROM t"


def _register(
    home: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, *, epsilon: float
) -> None:
    """As the workspace's owner: register iris and give it a pure budget of ``epsilon``."""
    from veil.data import Catalog
    from veil.ledger import Budget, Ledger
    from veil.workspace import Workspace

    monkeypatch.setenv("VEIL_HOME", str(home))
    monkeypatch.setenv("VEIL_DATABASE_URL", database_url)
    workspace = Workspace(home)
    catalog = Catalog.open(workspace)
    try:
        catalog.add("sklearn:iris", name=DATASET)
    finally:
        catalog.store.dispose()
    ledger = Ledger.open(workspace)
    try:
        ledger.set_budget(DATASET, Budget(epsilon=epsilon, delta=0.0), reason="test")
    finally:
        ledger.store.dispose()


Result = tuple[int | None, dict[str, Any], str | None]  # status, body, request id (None: lost)


def _storm(
    served: Any,
    clients: int,
    per_client: int,
    *,
    after: int | None = None,
    then: Callable[[], None] | None = None,
) -> list[Result]:
    """``clients`` threads, each with its own connection, released at once, ``per_client``
    queries each; ``then()`` runs once ``after`` answers have arrived. A connection broken
    under a request is a result with no status."""
    results: list[Result] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)
    failures: list[BaseException] = []
    triggered = threading.Event()

    def client() -> None:
        try:
            with served.client("analyst") as http:
                start.wait(timeout=60)
                for _ in range(per_client):
                    try:
                        response = http.post(
                            f"/v1/datasets/{DATASET}/query",
                            json={"sql": SQL, "epsilon": E, "purpose": "concurrency test"},
                        )
                    except httpx.TransportError:
                        result: Result = (None, {}, None)
                    else:
                        rid = response.headers["x-request-id"]
                        result = (response.status_code, response.json(), rid)
                    with lock:
                        results.append(result)
                        due = after is not None and len(results) >= after
                    if due and then is not None and not triggered.is_set():
                        triggered.set()
                        then()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    assert len(results) == clients * per_client
    return results


def _workers(served: Any) -> list[int]:
    """uvicorn's worker processes (its supervisor's spawned children, not the resource tracker)."""
    found = []
    for pid in served.worker_pids():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone since pgrep listed it
            continue
        if b"spawn_main" in command:
            found.append(pid)
    return found


def _charges_match_their_entries(store: Any, dataset: str) -> dict[int, Any]:
    """Every ledger event has its allowed ``privacy.charge`` entry and every such entry its
    event (they commit in one transaction); returns the events by id."""
    from veil.access import Access, Outcome, Principal, Trail
    from veil.ledger import Ledger
    from veil.workspace import login_name

    ledger = Ledger(store, access=Access(store, Principal(login_name())))
    events = {e.id: e for e in ledger.entries(dataset)}
    charges = [
        e
        for e in Trail(store).entries(action="privacy.charge", dataset=dataset)
        if e.outcome == Outcome.ALLOWED
    ]
    linked = [int(e.links["ledger_event"]) for e in charges]
    assert sorted(linked) == sorted(events), "a charge without its trail entry, or the reverse"
    assert sorted(e.seq for e in events.values()) == list(range(1, len(events) + 1))
    status = ledger.status(dataset)
    assert status.budget is not None and status.budget.epsilon is not None
    assert status.spent.epsilon is not None and status.spent.epsilon <= status.budget.epsilon
    assert status.events == len(events)
    return events


def test_fifty_clients_on_four_workers_never_overspend_one_budget(
    gateway_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.access import Outcome, Trail
    from veil.store import Store

    database_url = gateway_pg.env["VEIL_DATABASE_URL"]
    _register(gateway_pg.home, database_url, monkeypatch, epsilon=K * E + E / 2)
    assert len(_workers(gateway_pg)) == 4

    results = _storm(gateway_pg, CLIENTS, PER_CLIENT)
    accepted = [(body, rid) for status, body, rid in results if status == 200]
    refused = [(status, body) for status, body, _ in results if status != 200]
    assert len(accepted) == K, [s for s, _ in refused][:10]
    assert {status for status, _ in refused} == {403}
    assert {body["error"]["code"] for _, body in refused} == {"budget_exceeded"}
    # Every refusal says what is left, and it is less than one more query.
    assert all(body["error"]["details"]["remaining"] < E for _, body in refused)

    # The budget admits nothing more: K was exact, not an undercount from lost requests.
    with gateway_pg.client("analyst") as http:
        more = http.post(f"/v1/datasets/{DATASET}/query", json={"sql": SQL, "epsilon": E})
    assert more.status_code == 403 and more.json()["error"]["code"] == "budget_exceeded"

    # A graceful stop flushes every worker's spool into the trail.
    gateway_pg.process.send_signal(signal.SIGTERM)
    assert gateway_pg.process.wait(timeout=60) == 0

    store = Store.open(database_url)
    try:
        events = _charges_match_their_entries(store, DATASET)
        assert len(events) == K
        charged = [body["charged"]["event_id"] for body, _ in accepted]
        assert sorted(charged) == sorted(events), "an answer without its ledger event"
        trail = Trail(store)
        requests = {
            e.details["request_id"]: e
            for e in trail.entries(action="serve.request", dataset=DATASET)
        }
        for body, rid in accepted:
            assert requests[rid].details["ledger_event"] == body["charged"]["event_id"]
        assert sum(e.outcome == Outcome.REFUSED for e in requests.values()) == len(refused) + 1
        assert trail.verify().ok
    finally:
        store.dispose()


def test_a_worker_killed_mid_query_leaves_no_charge_without_its_entry(
    gateway_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.access import Trail
    from veil.store import Store

    database_url = gateway_pg.env["VEIL_DATABASE_URL"]
    _register(gateway_pg.home, database_url, monkeypatch, epsilon=100.0)
    victim = _workers(gateway_pg)[0]

    results = _storm(gateway_pg, 20, 10, after=40, then=lambda: os.kill(victim, signal.SIGKILL))
    answered = [body for status, body, _ in results if status == 200]
    lost = sum(status is None for status, _, _ in results)
    assert {status for status, _, _ in results} <= {200, None}, "only answers or broken links"
    assert answered, "the other workers stopped answering"

    # The other workers (and the one uvicorn starts in the victim's place) keep serving.
    with gateway_pg.client("analyst") as http:
        after = [
            http.post(f"/v1/datasets/{DATASET}/query", json={"sql": SQL, "epsilon": E})
            for _ in range(10)
        ]
    assert [r.status_code for r in after] == [200] * 10
    answered += [r.json() for r in after]
    assert victim not in _workers(gateway_pg)

    gateway_pg.process.send_signal(signal.SIGTERM)
    gateway_pg.process.wait(timeout=60)
    store = Store.open(database_url)
    try:
        events = _charges_match_their_entries(store, DATASET)
        charged = {body["charged"]["event_id"] for body in answered}
        assert charged <= set(events), "an answer without its ledger event"
        # A charge whose answer was lost with the worker is in the ledger (and on the trail).
        assert len(events) - len(charged) <= lost
        assert Trail(store).verify().ok
    finally:
        store.dispose()

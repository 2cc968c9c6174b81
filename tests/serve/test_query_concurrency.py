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
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("serve-pg")]

K = 10  # releases the budget admits
E = 0.1  # epsilon per query
CLIENTS = 50
PER_CLIENT = 2
DATASET = "iris"
SQL = "SELECT COUNT(*) AS n FROM t"


def _register(home: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the workspace's owner: register iris and give it a pure budget of K * E + E / 2."""
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
        ledger.set_budget(DATASET, Budget(epsilon=K * E + E / 2, delta=0.0), reason="test")
    finally:
        ledger.store.dispose()


def _storm(served: Any) -> list[tuple[int, dict[str, Any], str]]:
    """CLIENTS threads, each with its own connection, released at once; PER_CLIENT queries each."""
    results: list[tuple[int, dict[str, Any], str]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)
    failures: list[BaseException] = []

    def client() -> None:
        try:
            with served.client("analyst") as http:
                start.wait(timeout=60)
                for _ in range(PER_CLIENT):
                    response = http.post(
                        f"/v1/datasets/{DATASET}/query",
                        json={"sql": SQL, "epsilon": E, "purpose": "concurrency test"},
                    )
                    with lock:
                        results.append(
                            (
                                response.status_code,
                                response.json(),
                                response.headers["x-request-id"],
                            )
                        )
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    assert len(results) == CLIENTS * PER_CLIENT
    return results


def test_fifty_clients_on_four_workers_never_overspend_one_budget(
    gateway_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.access import Access, Outcome, Principal, Trail
    from veil.ledger import Ledger
    from veil.store import Store
    from veil.workspace import login_name

    database_url = gateway_pg.env["VEIL_DATABASE_URL"]
    _register(gateway_pg.home, database_url, monkeypatch)
    assert len(gateway_pg.worker_pids()) >= 4  # the workers (and multiprocessing's tracker)

    results = _storm(gateway_pg)
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
        owner = Access(store, Principal(login_name()))
        ledger = Ledger(store, access=owner)
        status = ledger.status(DATASET)
        assert status.events == K
        assert status.budget is not None and status.budget.epsilon is not None
        assert status.spent.epsilon is not None
        assert status.spent.epsilon <= status.budget.epsilon
        events = {e.id: e for e in ledger.entries(DATASET)}
        assert sorted(e.seq for e in events.values()) == list(range(1, K + 1))
        charged = [body["charged"]["event_id"] for body, _ in accepted]
        assert sorted(charged) == sorted(events), "an answer without its ledger event"

        trail = Trail(store)
        charges = [e for e in trail.entries(action="privacy.charge") if e.dataset == DATASET]
        allowed = [e for e in charges if e.outcome == Outcome.ALLOWED]
        assert len(allowed) == K  # a refused charge is on the trail too, as refused
        requests = {
            e.details["request_id"]: e
            for e in trail.entries(action="serve.request")
            if e.dataset == DATASET
        }
        for body, rid in accepted:
            assert requests[rid].details["ledger_event"] == body["charged"]["event_id"]
        assert sum(e.outcome == Outcome.REFUSED for e in requests.values()) == len(refused) + 1
        assert trail.verify().ok
    finally:
        store.dispose()

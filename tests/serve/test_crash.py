"""kill -9 of a worker in the middle of DP queries and predictions loses no accounting.

``veil serve --workers 2`` on PostgreSQL and Redis (``served``) takes a
steady stream of DP queries and predictions from several clients; one worker
(of two) is killed with SIGKILL while requests are in flight (no lifespan, no final
flush: its spool file is left behind, still holding entries the flusher had
not moved yet). Then:

* the surviving worker keeps answering (and uvicorn's supervisor may start a
  replacement, which adopts the dead worker's spool at start-up);
* after a graceful stop, the ledger's and the trail's hash chains verify, every
  ledger event has its ``privacy.charge`` trail entry and every allowed
  ``privacy.charge`` entry names a committed ledger event (the charge and its
  entry commit in one transaction, so a kill cannot split them);
* every request a client got an answer for has its ``serve.request`` entry
  (matched by ``X-Request-Id``): the answer left only after its entry was in
  the spool file, and the dead worker's file was adopted. Requests cut off by
  the kill got no answer; they may or may not be on the trail.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.xdist_group("serve-pg")]

DATASET = "digits"
MODEL = "digits-lr"
SQL = "SELECT COUNT(*) AS n FROM t"
EPSILON = 0.01  # 10 epsilon budget minus 2 for training: hundreds of queries fit
QUERY_CLIENTS = 3
PREDICT_CLIENTS = 3
BEFORE_KILL = 30  # answered requests before the kill, so some are in the victim's spool


WORKERS = 2


@pytest.fixture
def served(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    """``veil serve --workers 2`` on a fresh PostgreSQL database and the local Redis."""
    import redis

    # The serve conftest's helpers (pytest imports it as tests.serve.conftest in importlib mode).
    helpers = next(
        module
        for name, module in sys.modules.items()
        if name.endswith("serve.conftest") and hasattr(module, "start_process")
    )
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    home = tmp_path / "pg" / ".veil"
    keys = helpers.build_workspace(home, postgres_url)
    env = {"VEIL_DATABASE_URL": postgres_url, "VEIL_REDIS_URL": redis_url}
    process = helpers.start_process(home, keys, workers=WORKERS, env=env)
    yield process
    helpers.stop_process(process)


class Traffic:
    """Client threads sending queries and predictions until stopped; what came back."""

    def __init__(self, served: Any) -> None:
        self.served = served
        self.lock = threading.Lock()
        self.answered: list[tuple[str, int, str, dict[str, Any]]] = []  # kind, status, id, body
        self.cut_off = 0  # requests with no answer (connection reset by the kill)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=("query", "analyst"), daemon=True)
            for _ in range(QUERY_CLIENTS)
        ] + [
            threading.Thread(target=self._run, args=("predict", "consumer"), daemon=True)
            for _ in range(PREDICT_CLIENTS)
        ]

    def _send(self, http: Any, kind: str) -> Any:
        if kind == "query":
            return http.post(
                f"/v1/datasets/{DATASET}/query",
                json={"sql": SQL, "epsilon": EPSILON, "purpose": "crash test"},
            )
        return http.post(f"/v1/models/{MODEL}/predict", json={"inputs": [[0.5] * 64]})

    def _run(self, kind: str, role: str) -> None:
        while not self.stop.is_set():
            # A fresh connection per request: uvicorn's workers share one listening socket,
            # so new connections spread over the workers (kept-alive ones would stick).
            with self.served.client(role) as http:
                try:
                    response = self._send(http, kind)
                except httpx.TransportError:
                    with self.lock:
                        self.cut_off += 1
                    continue
            body = response.json()
            with self.lock:
                self.answered.append(
                    (kind, response.status_code, response.headers["x-request-id"], body)
                )

    def count(self) -> int:
        with self.lock:
            return len(self.answered)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_for(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"only {self.count()} answers in {timeout} s"
            time.sleep(0.05)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def _workers(served: Any) -> list[int]:
    """The uvicorn workers among the supervisor's children (not multiprocessing's tracker)."""
    return [
        pid
        for pid in served.worker_pids()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _spool_of(pid: int, directory: Path) -> Path:
    """The spool file a worker holds open (its flock is on that descriptor)."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held.append(fd.readlink())
        except FileNotFoundError:  # closed meanwhile
            continue
    files = [p for p in held if p.parent == directory and p.suffix == ".spool"]
    assert len(files) == 1, held
    return files[0]


def _request_ids(spool_file: Path) -> list[str]:
    """The request ids of the whole lines in a spool file (a kill may cut the last one)."""
    ids = []
    for line in spool_file.read_bytes().split(b"\n"):
        try:
            ids.append(json.loads(line)["entry"]["details"]["request_id"])
        except ValueError:  # the cut tail (or the empty string after the last newline)
            continue
    return ids


def _check_ledger(store: Any, home: Path) -> set[str]:
    """Both chains verify and charges and their trail entries match one to one; the events."""
    from veil.access import Outcome, Trail
    from veil.ledger import Ledger
    from veil.workspace import Workspace

    trail = Trail(store)
    assert trail.verify().ok
    ledger = Ledger.open(Workspace(home))  # the workspace's ledger key, as the service
    try:
        verified = ledger.verify(DATASET)
        assert verified["ok"], verified["problems"]
        events = {e.id for e in ledger.entries(DATASET)}
    finally:
        ledger.store.dispose()
    charges = [
        e
        for e in trail.entries(action="privacy.charge", dataset=DATASET)
        if e.outcome == Outcome.ALLOWED
    ]
    charged = [e.links["ledger_event"] for e in charges]
    assert len(charged) == len(set(charged))
    assert set(charged) == events  # each event has its entry; each entry its event
    return events


def test_kill_9_of_a_worker_mid_request_loses_no_charge_and_no_answered_entry(served, monkeypatch):
    from veil.access import Trail
    from veil.store import Store

    workers = _workers(served)
    assert len(workers) == WORKERS, workers
    spool = (served.home / "serve" / "spool").resolve()
    traffic = Traffic(served)
    traffic.start()
    try:
        traffic.wait_for(BEFORE_KILL)
        victim = workers[0]
        victim_file = _spool_of(victim, spool)
        # A second name for its inode: the adopter deletes the file once it has moved it,
        # and this keeps every byte the victim wrote readable for the checks below.
        kept = served.home.parent / "victim-spool.copy"
        os.link(victim_file, kept)
        os.kill(victim, signal.SIGKILL)
        killed_at = traffic.count()
        # The survivor keeps answering: successes after the kill, of both kinds.
        traffic.wait_for(killed_at + 40)
    finally:
        traffic.join()
    left_by_victim = _request_ids(kept)  # all it wrote: the kernel kept every write
    assert left_by_victim

    after = traffic.answered[killed_at:]
    assert {kind for kind, status, _, _ in after if status == 200} == {"query", "predict"}
    statuses = {status for _, status, _, _ in traffic.answered}
    # 429: a consumer's predictions past the per-key rate; nothing else is expected.
    assert statuses <= {200, 429}, statuses

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) in (0, -signal.SIGTERM)  # a clean stop
    # Every file, the dead worker's among them, was adopted, moved and removed.
    assert not victim_file.exists()
    assert list(spool.iterdir()) == []

    monkeypatch.setenv("VEIL_DATABASE_URL", served.env["VEIL_DATABASE_URL"])
    monkeypatch.delenv("VEIL_KEY", raising=False)
    store = Store.open(served.env["VEIL_DATABASE_URL"])
    try:
        events = _check_ledger(store, served.home)
        entries = [
            e for e in Trail(store).entries(action="serve.request") if "request_id" in e.details
        ]
        recorded = {e.details["request_id"]: e for e in entries}
        assert len(recorded) == len(entries)  # none twice, the adopted file's included
        assert set(left_by_victim) <= set(recorded)
        missing = [rid for _, _, rid, _ in traffic.answered if rid not in recorded]
        assert missing == [], f"{len(missing)} answered requests have no trail entry"
        for kind, status, rid, body in traffic.answered:
            assert recorded[rid].details["status"] == status
            if kind == "query" and status == 200:
                assert body["charged"]["event_id"] in events
                assert recorded[rid].details["ledger_event"] == body["charged"]["event_id"]
    finally:
        store.dispose()

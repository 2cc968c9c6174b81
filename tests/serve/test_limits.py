"""The gateway's limits (``veil.serve._limits``) against the real local Redis and in memory.

Moving windows admit exactly N requests and refuse the next with a positive
retry_after; four processes sharing one Redis never take a key's count budget
past its cap (exact) and share one rate limit (exact within a window, within 1 %
over several); a counter Redis lost is seeded from ``ServeUsageRow``; a Redis
that does not answer (a closed port, a private server stopped mid-run) makes
every method raise UnavailableError, and a restarted one resumes from the
durable count. Every test runs on both backends where both apply.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import multiprocessing.context
import runpy
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from veil.errors import BudgetExceededError, InvalidInputError, RateLimitedError, UnavailableError
from veil.serve._limits import Limits, check_rate
from veil.store import Store
from veil.store.tables import ServeUsageRow

redis = pytest.importorskip("redis")

WORKERS = 4


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    yield store
    store.dispose()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    name = f"veiltest:{uuid.uuid4().hex[:12]}"
    yield name
    if "redis_url" in request.fixturenames:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=2)
        keys = list(client.scan_iter(match=f"{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "redis"])
def open_limits(request: pytest.FixtureRequest, prefix: str) -> Iterator[Callable[..., Limits]]:
    """Opens Limits on this test's backend (memory, or Redis db 15 under the test's prefix)."""
    url = None if request.param == "memory" else str(request.getfixturevalue("redis_url"))
    opened: list[Limits] = []

    def make(store: Store, **options: str) -> Limits:
        limits = Limits.open(url, store, prefix=prefix, **options)
        opened.append(limits)
        return limits

    yield make
    for limits in opened:  # the prefix fixture then deletes the test's Redis keys
        limits.close()


def _set_usage(store: Store, key_id: str, model: str, answered: int) -> None:
    with store.session() as session:
        row = session.get(ServeUsageRow, (key_id, model))
        if row is None:
            session.add(ServeUsageRow(key_id=key_id, model=model, answered=answered))
        else:
            row.answered = answered


# ---------------------------------------------------------------- rate limits
@pytest.mark.slow
def test_moving_window_admits_n_refuses_the_next_and_frees_slots_as_they_age(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    rate = "4/2 seconds"
    limits.hit("predict:k1", rate)
    limits.hit("predict:k1", rate)
    first = time.time()
    time.sleep(1.0)
    limits.hit("predict:k1", rate)
    limits.hit("predict:k1", rate)
    second = time.time()
    with pytest.raises(RateLimitedError) as refused:
        limits.hit("predict:k1", rate)
    retry_after = refused.value.details["retry_after"]
    # The window frees when the first two requests are two seconds old, not when a fixed
    # window ends: about one second from now.
    assert 0 < retry_after <= first + 2 - (second - 0.05)
    assert refused.value.details["bucket"] == "predict:k1"
    assert refused.value.details["rate"] == rate
    limits.hit("predict:k2", rate)  # another key's bucket is its own

    time.sleep(retry_after + 0.05)
    limits.hit("predict:k1", rate)  # the first two have left the window ...
    limits.hit("predict:k1", rate)
    with pytest.raises(RateLimitedError):  # ... the two sent a second later have not
        limits.hit("predict:k1", rate)


def test_exactly_n_requests_in_a_window_then_refused(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    for _ in range(25):
        limits.hit("predict:abc", "25/minute")
    for _ in range(3):
        with pytest.raises(RateLimitedError) as refused:
            limits.hit("predict:abc", "25/minute")
        assert 0 < refused.value.details["retry_after"] <= 60
    assert refused.value.code == "rate_limited"


def test_the_ip_limit_is_per_address_and_uses_ip_rate(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store, ip_rate="3/minute")
    assert limits.ip_rate == "3/minute"
    for _ in range(3):
        limits.hit_ip("203.0.113.7")
    with pytest.raises(RateLimitedError) as refused:
        limits.hit_ip("203.0.113.7")
    assert refused.value.details["bucket"] == "ip:203.0.113.7"
    limits.hit_ip("2001:db8::1")  # another address is not held back
    limits.hit("predict:203.0.113.7", "3/minute")  # nor a key's bucket of the same text


# ---------------------------------------------------------------- count budgets
def test_spend_takes_exactly_up_to_the_cap_and_a_refusal_takes_nothing(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    assert limits.spend("k1", "digits-lr", 4, 10) == 6
    with pytest.raises(BudgetExceededError) as refused:
        limits.spend("k1", "digits-lr", 7, 10)
    assert refused.value.details == {
        "key_id": "k1",
        "model": "digits-lr",
        "used": 4,
        "cap": 10,
        "requested": 7,
        "left": 6,
    }
    assert refused.value.code == "budget_exceeded"
    assert limits.spend("k1", "digits-lr", 6, 10) == 0  # the refusal took nothing
    with pytest.raises(BudgetExceededError, match="ask the operator"):
        limits.spend("k1", "digits-lr", 1, 10)
    assert limits.spend("k1", "digits-lr", 0, 10) == 0
    assert limits.spend("k1", "other-model", 10, 10) == 0  # per (key, model)
    assert limits.spend("k2", "digits-lr", 3, 10) == 7


def test_without_a_cap_records_are_still_counted(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    assert limits.spend("k1", "m", 5, None) is None
    with pytest.raises(BudgetExceededError):  # a cap set later counts what came before
        limits.spend("k1", "m", 1, 5)


def test_refund_gives_back_only_what_was_taken(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    limits.spend("k1", "m", 5, 10)
    limits.refund("k1", "m", 3)
    assert limits.spend("k1", "m", 0, 10) == 8
    limits.refund("k1", "m", 100)  # never below zero
    assert limits.spend("k1", "m", 0, 10) == 10
    _set_usage(sqlite_store, "k2", "m", 7)
    limits.refund("k2", "m", 5)  # a counter not seeded yet is not created at zero
    assert limits.spend("k2", "m", 0, 10) == 3


def test_a_new_counter_is_seeded_from_serve_usage(open_limits: Callable[..., Limits], store: Store):
    _set_usage(store, "k1", "digits-lr", 8)
    limits = open_limits(store)
    assert limits.used("k1", "digits-lr") == 8
    assert limits.spend("k1", "digits-lr", 1, 10) == 1
    assert limits.used("k1", "digits-lr") == 9
    with pytest.raises(BudgetExceededError) as refused:
        limits.spend("k1", "digits-lr", 2, 10)
    assert refused.value.details["used"] == 9
    # The counter runs ahead of the durable row (the spool has not flushed): the row
    # catching up does not move it back or forward.
    _set_usage(store, "k1", "digits-lr", 9)
    assert limits.spend("k1", "digits-lr", 1, 10) == 0
    assert limits.spend("k2", "digits-lr", 1, 10) == 9  # no row: starts at zero


def test_memory_counters_hold_the_cap_under_threads(sqlite_store: Store):
    limits = Limits.open(None, sqlite_store)
    _set_usage(sqlite_store, "k1", "m", 100)  # every thread races to seed the counter
    taken = [0] * 8
    start = threading.Barrier(8)

    def worker(index: int) -> None:
        size = 1 + index % 3  # threads taking one record at a time stop only at the cap
        start.wait()
        while True:
            try:
                limits.spend("k1", "m", size, 1000)
            except BudgetExceededError:
                return
            taken[index] += size

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 900
    assert limits.spend("k1", "m", 0, 1000) == 0


# ---------------------------------------------------------------- throttles
def test_a_throttle_applies_while_it_lasts_and_never_loosens_a_rate(
    open_limits: Callable[..., Limits], sqlite_store: Store
):
    limits = open_limits(sqlite_store)
    assert limits.throttled_rate("k1") is None
    assert limits.effective_rate("k1", "20/second") == "20/second"
    limits.throttle("k1", "2/minute", 0.5)
    assert limits.throttled_rate("k1") == "2/minute"
    assert limits.effective_rate("k1", "20/second") == "2/minute"
    assert limits.effective_rate("k2", "20/second") == "20/second"
    limits.throttle("k3", "100/second", 30)
    assert limits.effective_rate("k3", "20/second") == "20/second"
    time.sleep(0.6)
    assert limits.throttled_rate("k1") is None
    assert limits.effective_rate("k1", "20/second") == "20/second"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "rate", ["", "fast", "20", "20/fortnight", "-1/second", "0/second", "20/second;5/minute"]
)
def test_a_rate_that_is_not_one_limit_is_refused(rate: str, sqlite_store: Store):
    with pytest.raises(InvalidInputError, match="is not a rate limit"):
        check_rate(rate)
    limits = Limits.open(None, sqlite_store)
    with pytest.raises(InvalidInputError):
        limits.hit("b", rate)
    with pytest.raises(InvalidInputError):
        limits.throttle("k", rate, 10)
    with pytest.raises(InvalidInputError):
        Limits.open(None, sqlite_store, ip_rate=rate)


def test_check_rate_accepts_the_forms_of_the_serving_policy():
    for rate in ("20/second", "600/minute", "100 per minute", "5/2 seconds", "1000/day"):
        assert check_rate(rate) == rate


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf, True, "10"])
def test_a_throttle_needs_positive_finite_seconds(seconds: object, sqlite_store: Store):
    with pytest.raises(InvalidInputError, match="positive, finite"):
        Limits.open(None, sqlite_store).throttle("k", "1/second", seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "cap"), [(-1, 10), (True, 10), (1.5, 10), (1, -1), (1, 2.0)])
def test_spend_refuses_records_or_caps_that_are_not_counts(
    n: object, cap: object, sqlite_store: Store
):
    limits = Limits.open(None, sqlite_store)
    with pytest.raises(InvalidInputError):
        limits.spend("k", "m", n, cap)  # type: ignore[arg-type]
    assert limits.spend("k", "m", 0, 10) == 10  # nothing was taken


def test_a_redis_url_redis_cannot_read_is_invalid_input(sqlite_store: Store):
    with pytest.raises(InvalidInputError, match="VEIL_REDIS_URL"):
        Limits.open("http://127.0.0.1:6379/0", sqlite_store)


# ---------------------------------------------------------------- Redis down
def test_an_unreachable_redis_is_unavailable_at_open_without_echoing_its_password(
    sqlite_store: Store,
):
    port = free_port()  # nothing listens there
    with pytest.raises(UnavailableError) as refused:
        Limits.open(f"redis://user:s3cret-pass@127.0.0.1:{port}/0", sqlite_store)
    error = refused.value
    assert error.code == "unavailable"
    assert "VEIL_REDIS_URL" in (error.expected or "")
    assert "VEIL_REDIS_URL" in (error.fix or "")
    assert f"127.0.0.1:{port}" in (error.got or "")
    assert "s3cret-pass" not in str(error)
    assert "s3cret-pass" not in json.dumps(error.to_dict())


def test_a_redis_that_accepts_but_never_answers_times_out_as_unavailable(sqlite_store: Store):
    with socket.socket() as silent:  # a hung server: connects, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with pytest.raises(UnavailableError) as refused:
            Limits.open(url, sqlite_store)
    assert "Timeout" in (refused.value.got or "")
    assert refused.value.details == {"backend": "redis", "url": url}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts a throwaway redis-server on one free port (again after a stop), no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the restart test needs a Redis it may stop")
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        client = redis.Redis(port=port, socket_timeout=1)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            pytest.fail(f"redis-server did not answer on port {port}")
        client.close()
        return process

    start.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.slow
def test_a_stopped_redis_refuses_everything_and_a_restarted_one_remembers_answered_records(
    private_redis: Callable[[], subprocess.Popen[bytes]], sqlite_store: Store
):
    server = private_redis()
    limits = Limits.open(private_redis.url, sqlite_store)  # type: ignore[attr-defined]
    assert limits.backend == "redis"
    limits.ping()
    assert limits.spend("k1", "m", 6, 10) == 4
    _set_usage(sqlite_store, "k1", "m", 6)  # what the spool's flush wrote with the answers
    limits.throttle("k1", "1/second", 60)

    server.terminate()
    server.wait(timeout=10)
    calls: list[Callable[[], object]] = [
        limits.ping,
        lambda: limits.hit("predict:k1", "20/second"),
        lambda: limits.hit_ip("127.0.0.1"),
        lambda: limits.spend("k1", "m", 1, 10),
        lambda: limits.refund("k1", "m", 1),
        lambda: limits.throttle("k1", "1/second", 60),
        lambda: limits.throttled_rate("k1"),
        lambda: limits.effective_rate("k1", "20/second"),
    ]
    for call in calls:
        with pytest.raises(UnavailableError, match="VEIL_REDIS_URL"):
            call()

    private_redis()  # empty: Redis forgot the counter and the throttle
    limits.ping()
    assert limits.throttled_rate("k1") is None
    assert limits.spend("k1", "m", 4, 10) == 0  # seeded with the 6 answered, not from zero
    with pytest.raises(BudgetExceededError):
        limits.spend("k1", "m", 1, 10)
    limits.close()


# ---------------------------------------------------------------- several processes
# One worker process: its own store and Limits on the shared Redis; waits for the others,
# then spends one key's budget or hits one bucket until refused (or until STOP), and
# writes what it was granted.
WORKER = """
import json, time
from pathlib import Path
from veil.errors import BudgetExceededError, RateLimitedError
from veil.serve._limits import Limits
from veil.store import Store

store = Store.open(URL)
limits = Limits.open(REDIS, store, prefix=PREFIX)
START.wait(timeout=120)
granted = 0
if MODE == "spend":
    while True:
        try:
            limits.spend("k1", "digits-lr", SIZE, CAP)
        except BudgetExceededError:
            break
        granted += SIZE
else:
    stop = time.time() + SECONDS
    while time.time() < stop:
        try:
            limits.hit("predict:k1", RATE)
        except RateLimitedError:
            continue
        granted += 1
limits.close()
store.dispose()
Path(RESULT).write_text(json.dumps(granted))
"""


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["veil.store", "veil.serve._limits"])
    return context


def _run_workers(
    processes: multiprocessing.context.BaseContext, tmp_path: Path, **globals_: object
) -> list[int]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    start = processes.Barrier(WORKERS + 1)
    workers = [
        processes.Process(
            target=runpy.run_path,
            args=(str(script),),
            kwargs={
                "init_globals": {
                    **globals_,
                    "SIZE": (1, 2, 3, 5)[number],
                    "START": start,
                    "RESULT": str(tmp_path / f"worker{number}.json"),
                },
                "run_name": "__worker__",
            },
        )
        for number in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=120)
        for worker in workers:
            worker.join(timeout=300)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
    assert [worker.exitcode for worker in workers] == [0] * WORKERS
    return [json.loads((tmp_path / f"worker{n}.json").read_text()) for n in range(WORKERS)]


@pytest.mark.slow
def test_four_processes_never_take_a_key_past_its_cap(
    processes: multiprocessing.context.BaseContext,
    redis_url: str,
    prefix: str,
    sqlite_store: Store,
    tmp_path: Path,
):
    _set_usage(sqlite_store, "k1", "digits-lr", 250)  # all four race to seed the counter
    cap = 2000
    granted = _run_workers(
        processes,
        tmp_path,
        MODE="spend",
        URL=str(sqlite_store.engine.url),
        REDIS=redis_url,
        PREFIX=prefix,
        CAP=cap,
    )
    # The worker that takes one record at a time stops only when none is left.
    assert sum(granted) == cap - 250, granted
    limits = Limits.open(redis_url, sqlite_store, prefix=prefix)
    assert limits.spend("k1", "digits-lr", 0, cap) == 0
    limits.close()


@pytest.mark.slow
def test_four_processes_share_one_rate_limit(
    processes: multiprocessing.context.BaseContext,
    redis_url: str,
    prefix: str,
    sqlite_store: Store,
    tmp_path: Path,
):
    url = str(sqlite_store.engine.url)
    # One window longer than the run: exactly the limit, across all four.
    granted = _run_workers(
        processes,
        tmp_path,
        MODE="hit",
        URL=url,
        REDIS=redis_url,
        PREFIX=prefix,
        RATE="300/minute",
        SECONDS=1.0,
    )
    assert sum(granted) == 300, granted
    # Three one-second windows (2.5 s of hammering from a common start): the limit of each.
    # `limits` stamps entries on each client, so arrivals out of stamp order can shift a
    # few requests across a boundary: within 1 %. It fails only if all four workers
    # stall for about half a second at a window's edge.
    granted = _run_workers(
        processes,
        tmp_path,
        MODE="hit",
        URL=url,
        REDIS=redis_url,
        PREFIX=f"{prefix}:b",
        RATE="200/second",
        SECONDS=2.5,
    )
    assert abs(sum(granted) - 600) <= 6, granted

"""The trail spool: each entry reaches the trail exactly once, through crashes and damage.

Real SQLite and the local PostgreSQL (the ``store`` fixture runs every test on
both); a real ``kill -9`` of a subprocess for the crash tests.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from veil.access import Outcome, Trail
from veil.errors import ConflictError, InvalidInputError, UnavailableError
from veil.serve._spool import CORRUPT_ACTION, TrailSpool
from veil.store import Store
from veil.store.tables import ServeSpoolRow, ServeUsageRow

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

SIGNING_KEY = bytes(range(32))


@pytest.fixture
def trail(store: Store) -> Trail:
    return Trail(store, signing_key=SIGNING_KEY)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def request(i: int, actor: str = "key:k1") -> dict[str, object]:
    return {
        "actor": actor,
        "action": "serve.request",
        "outcome": Outcome.ALLOWED,
        "details": {"i": i, "route": "/v1/models/{name}/predict", "status": 200},
    }


def spool_line(i: int, usage: list[object] | None = None) -> bytes:
    """A line as the module docstring documents it."""
    line = {"entry": request(i), "usage": usage, "at": "2026-12-06T14:00:00.000000Z"}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def served(trail: Trail) -> list[int]:
    return [e.details["i"] for e in trail.entries(action="serve.request")]


def usage(store: Store) -> dict[tuple[str, str], int]:
    with store.session() as session:
        rows = session.execute(select(ServeUsageRow)).scalars().all()
        return {(r.key_id, r.model): r.answered for r in rows}


def offsets(store: Store) -> dict[str, int]:
    with store.session() as session:
        return {r.spool_id: r.flushed for r in session.execute(select(ServeSpoolRow)).scalars()}


def quiet(store: Store, trail: Trail, directory: Path, **kwargs: float) -> TrailSpool:
    """A spool whose flusher stays asleep, so the test decides when lines move."""
    return TrailSpool(store, trail, directory, flush_interval=30.0, max_lag=60.0, **kwargs)


def test_entries_and_usage_reach_the_trail_with_the_offset(store, trail, directory):
    with quiet(store, trail, directory) as spool:
        for i in range(5):
            spool.record(request(i), usage=("k1", "digits-lr", 3))
        spool.record(request(5, actor="key:k2"), usage=("k2", "digits-lr", 1))
        spool.record({"actor": "anonymous", "action": "serve.request", "details": {"i": 6}})
        assert spool.pending == 7
        assert spool.lag_seconds > 0
        assert served(trail) == []  # nothing moved before the flush

        assert spool.flush() == 7
        assert spool.pending == 0
        assert spool.lag_seconds == 0.0
        assert served(trail) == list(range(7))
        assert usage(store) == {("k1", "digits-lr"): 15, ("k2", "digits-lr"): 1}
        assert offsets(store) == {spool.spool_id: spool.path.stat().st_size}
        first = trail.entries(action="serve.request")[0]
        assert first.actor == "key:k1"
        assert first.details["route"] == "/v1/models/{name}/predict"
        assert "spooled_at" in first.details
        assert spool.flush() == 0  # nothing left: no second copy

        spool.record(request(7), usage=("k1", "digits-lr", 2))
        assert spool.flush() == 1
        assert usage(store)[("k1", "digits-lr")] == 17
    assert not spool.path.exists()  # wholly flushed, so deleted at close
    assert offsets(store) == {}
    assert served(trail) == list(range(8))
    assert trail.verify().ok


def test_the_flusher_moves_lines_without_being_asked(store, trail, directory):
    with TrailSpool(store, trail, directory, flush_interval=0.02) as spool:
        for i in range(3):
            spool.record(request(i))
        deadline = time.monotonic() + 20
        while spool.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spool.pending == 0, spool.last_error
        assert served(trail) == [0, 1, 2]


def test_threads_recording_at_once_lose_and_repeat_nothing(store, trail, directory):
    threads, each = 8, 150
    with TrailSpool(store, trail, directory, flush_interval=0.01, batch=64) as spool:

        def work(t: int) -> None:
            for j in range(each):
                spool.record(request(t * each + j), usage=(f"k{t % 2}", "m", 1))

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert sorted(served(trail)) == list(range(threads * each))
    assert usage(store) == {("k0", "m"): threads * each // 2, ("k1", "m"): threads * each // 2}
    assert trail.verify().ok


def test_a_line_being_written_waits_for_its_newline(store, trail, directory):
    with quiet(store, trail, directory) as spool:
        spool.record(request(0))
        line = spool.path.read_bytes()
        spool.record(request(1))
        # Another writer mid-line (what a reader sees during a write): half a line, no newline.
        with spool.path.open("ab") as raw:
            raw.write(line[:20])
        assert spool.flush() == 2
        assert offsets(store)[spool.spool_id] == 2 * len(line)
        with spool.path.open("ab") as raw:
            raw.write(line[20:].replace(b'"i":0', b'"i":9'))
        spool.record(request(2))
        assert spool.flush() == 2  # the finished line and the next
    assert served(trail) == [0, 1, 9, 2]
    assert trail.entries(action=CORRUPT_ACTION) == []
    assert trail.verify().ok


def test_a_corrupt_line_is_put_on_the_trail_not_dropped(store, trail, directory):
    with quiet(store, trail, directory) as spool:
        spool.record(request(0), usage=("k1", "m", 4))
        first = spool.path.stat().st_size
        garbage = b'{"entry": {"actor": "key:k1", "act\xff\n'
        with spool.path.open("ab") as raw:
            raw.write(garbage)
        spool.record(request(1), usage=("k1", "m", 5))  # the file's writer appends after it
        second = spool.path.stat().st_size
        with spool.path.open("ab") as raw:  # parses, but is no trail entry
            raw.write(b'{"entry": {"actor": "key:k1", "action": "x", "outcome": "maybe"}}\n')
        spool.record(request(2))
        assert spool.flush() == 5
    assert served(trail) == [0, 1, 2]
    corrupt = trail.entries(action=CORRUPT_ACTION)
    assert [c.details["offset"] for c in corrupt] == [first, second]
    assert corrupt[0].outcome == Outcome.FAILED
    assert corrupt[0].details["bytes"] == len(garbage) - 1
    assert corrupt[0].details["reason"].startswith("not JSON")
    assert corrupt[1].details["reason"].startswith("invalid or unknown fields ['outcome']")
    assert usage(store) == {("k1", "m"): 9}  # a corrupt line adds no usage
    assert trail.verify().ok


@pytest.mark.parametrize("truncate_fails", [False, True])
def test_a_failed_write_refuses_and_leaves_no_glued_line(
    store, trail, directory, monkeypatch, truncate_fails
):
    """A full disk mid-write: the request is refused, and the next line is not glued to half
    of this one (the file is cut back, or else the fragment ends as a corrupt line)."""
    real_write = os.write
    calls: list[int] = []

    def short_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:  # the kernel writes what fits and says how much
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def cannot_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with quiet(store, trail, directory) as spool:
        spool.record(request(0))
        size = spool.path.stat().st_size
        with monkeypatch.context() as patch:
            patch.setattr(os, "write", short_then_full)
            if truncate_fails:
                patch.setattr(os, "ftruncate", cannot_truncate)
            with pytest.raises(UnavailableError, match="cannot write the trail spool"):
                spool.record(request(1))
        assert len(calls) == 2
        assert (spool.path.stat().st_size > size) is truncate_fails
        assert spool.pending == 1
        spool.record(request(2))
        spool.flush()
    assert served(trail) == [0, 2]
    corrupt = trail.entries(action=CORRUPT_ACTION)
    assert len(corrupt) == (1 if truncate_fails else 0)
    if truncate_fails:
        assert corrupt[0].details["offset"] == size
    assert trail.verify().ok


def test_bad_entries_are_refused_before_the_file(store, trail, directory):
    with quiet(store, trail, directory) as spool:
        bad = [
            {"actor": "a", "action": "serve.request", "details": {"x": float("nan")}},
            {"actor": "a", "action": "serve.request", "details": {"x": b"raw"}},
            {"actor": "a", "action": "serve.request", "colour": "red"},
            {"actor": "a" * 257, "action": "serve.request"},
            {"actor": "a", "action": "serve.request", "outcome": "perhaps"},
            {"action": "serve.request"},
        ]
        for entry in bad:
            with pytest.raises(InvalidInputError):
                spool.record(entry)
        with pytest.raises(InvalidInputError):
            spool.record(request(0), usage=("k1", "m", -1))
        with pytest.raises(InvalidInputError):
            spool.record(request(0), usage=("k1\x00", "m", 1))
        assert spool.path.stat().st_size == 0
        assert spool.pending == 0


def test_close_is_idempotent_and_a_closed_spool_refuses(store, trail, directory):
    spool = quiet(store, trail, directory)
    with pytest.raises(UnavailableError):
        spool.record(request(0))  # not started
    spool.start()
    spool.record(request(0))
    spool.close()
    spool.close()
    with pytest.raises(UnavailableError):
        spool.record(request(1))
    with pytest.raises(ConflictError):
        spool.start()
    assert served(trail) == [0]
    assert list(directory.iterdir()) == []


def test_adoption_takes_dead_files_and_skips_locked_ones(store, trail, directory):
    live = quiet(store, trail, directory)
    live.start()
    for i in range(3):
        live.record(request(i))
    # A dead worker's file: written, never flushed, its lock free; its last line torn.
    dead = directory / "0123456789abcdef0123456789abcdef.spool"
    text = b"".join(spool_line(i, usage=["k9", "m", 2]) for i in range(10, 13))
    dead.write_bytes(text + spool_line(13)[:30])

    with quiet(store, trail, directory) as adopter:
        # start() adopted the dead file, not the live one (its flock is held).
        assert served(trail) == [10, 11, 12]
        assert not dead.exists()
        assert live.path.exists()
        assert adopter.adopt() == 0
        assert live.pending == 3
    torn = trail.entries(action=CORRUPT_ACTION)
    assert len(torn) == 1
    assert torn[0].details["offset"] == len(text)
    assert torn[0].details["reason"].startswith("torn")
    assert usage(store) == {("k9", "m"): 6}

    live.close()
    assert sorted(served(trail)) == [0, 1, 2, 10, 11, 12]
    assert list(directory.glob("*.spool")) == []
    assert trail.verify().ok


def test_a_file_locked_by_another_process_is_left_alone(store, trail, directory):
    directory.mkdir()
    other = directory / "feedfacefeedfacefeedfacefeedface.spool"
    other.write_bytes(b"")
    command = [sys.executable, "-c", HOLD_LOCK, str(other)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            with quiet(store, trail, directory) as spool:
                assert spool.adopt() == 0
                assert other.exists()
        finally:
            holder.kill()
    with quiet(store, trail, directory):
        assert not other.exists()  # its holder died: adopted (empty) and removed


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""

# The worker: records 25 lines and is killed. "mid-transaction": it flushes them 10 a
# transaction and stops inside the third, after everything it writes is written (entries
# appended, usage added, offset moved) and before the commit. "flusher-running": its flusher
# runs every 5 ms, so the kill lands wherever the flusher happens to be.
WORKER = """
import contextlib, sys, time
from pathlib import Path
from veil.access import Trail
from veil.serve._spool import TrailSpool
from veil.store import Store

url, directory, n, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = Store.open(url)
interval = 0.005 if mode == "flusher-running" else 30.0
spool = TrailSpool(store, Trail(store), directory, flush_interval=interval, batch=10, max_lag=60)
if mode == "mid-transaction":
    real, locked = store.session, []
    @contextlib.contextmanager
    def session(*, lock=False):
        with real(lock=lock) as opened:
            yield opened
            locked.append(lock)
            if sum(locked) == 3:
                print("appended", flush=True)
                time.sleep(600)
    store.session = session
spool.start()
for i in range(n):
    entry = {"actor": "key:k1", "action": "serve.request", "details": {"i": i}}
    spool.record(entry, usage=("k1", "m", 1))
print("recorded", flush=True)
if mode == "mid-transaction":
    spool.flush()
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mid-transaction", "flusher-running"])
def test_kill_9_then_adoption_adds_every_entry_exactly_once(
    store_url, store, trail, directory, mode
):
    n = 25
    command = [sys.executable, "-c", WORKER, store_url, str(directory), str(n), mode]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None
            wanted = "appended" if mode == "mid-transaction" else "recorded"
            lines = [worker.stdout.readline().strip() for _ in range(1 + (wanted == "appended"))]
            assert lines[-1] == wanted, lines
        finally:
            os.kill(worker.pid, signal.SIGKILL)
    before = served(trail)
    if mode == "mid-transaction":
        assert before == list(range(20))  # two batches committed; the third died with it
    assert len(list(directory.glob("*.spool"))) == 1

    with quiet(store, trail, directory):
        pass  # start() adopts the dead worker's file
    assert sorted(served(trail)) == list(range(n))  # each entry once
    assert usage(store) == {("k1", "m"): n}
    assert list(directory.glob("*.spool")) == []
    assert offsets(store) == {}
    assert trail.verify().ok


def test_workers_adopting_at_once_take_each_dead_file_once(store, trail, directory):
    directory.mkdir()
    for f in range(3):
        lines = (spool_line(100 * f + i, usage=["k1", "m", 1]) for i in range(20))
        (directory / f"{f:032x}.spool").write_bytes(b"".join(lines))
    spools = [quiet(store, trail, directory, batch=7) for _ in range(4)]
    barrier = threading.Barrier(len(spools))

    def adopt(spool: TrailSpool) -> None:
        barrier.wait()
        spool.start()  # adopts whatever it can lock

    threads = [threading.Thread(target=adopt, args=(s,)) for s in spools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for spool in spools:
        spool.close()
    assert sorted(served(trail)) == [100 * f + i for f in range(3) for i in range(20)]
    assert usage(store) == {("k1", "m"): 60}
    assert list(directory.iterdir()) == []
    assert trail.verify().ok


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_outage_delays_entries_and_then_refuses(postgres_url, directory):
    import psycopg
    from sqlalchemy.engine import make_url

    store = Store.open(postgres_url, upgrade=True)
    trail = Trail(store)
    name = make_url(postgres_url).database
    admin = make_url(postgres_url).set(database="postgres").render_as_string(hide_password=False)

    def allow(*, on: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(on).lower()}')
            if not on:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    spool = TrailSpool(store, trail, directory, flush_interval=0.02, max_lag=0.5)
    spool.start()
    try:
        allow(on=False)
        spool.record(request(0))
        spool.record(request(1))
        time.sleep(0.7)
        assert spool.pending == 2
        assert spool.last_error is not None
        with pytest.raises(UnavailableError, match="not taking entries"):
            spool.record(request(2))
        allow(on=True)
        deadline = time.monotonic() + 20
        while spool.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool.pending == 0, spool.last_error
        spool.record(request(3))
    finally:
        allow(on=True)
        spool.close()
        store.dispose()
    check = Store.open(postgres_url)
    try:
        assert served(Trail(check)) == [0, 1, 3]
        assert Trail(check).verify().ok
    finally:
        check.dispose()

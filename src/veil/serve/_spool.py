"""The trail spool: each request's trail entry is durable before its answer leaves.

A trail append is a database commit (about 3 ms on SQLite with
``synchronous=FULL``): the gateway's whole overhead budget at the median. So
:meth:`TrailSpool.record` writes the entry as one JSON line to the worker's own
spool file (one ``os.write`` on an ``O_APPEND`` descriptor: microseconds), and a
flusher thread moves the lines into the trail in batches, about every 50 ms.

**Durability.** Once ``record`` returns, the line is in the kernel's page cache:
it survives ``kill -9`` of the worker (the next worker to start, or a live one
within about five seconds, adopts the file), not a power cut before the flush
(no fsync: a disk flush per request is the cost the spool exists to avoid).

**Exactly once.** ``serve_spools`` keeps how many bytes of each file the trail
holds. A flush reads from there to the last complete line and, in ONE locked
transaction, adds the per-key record counts to ``serve_usage``, moves the
offset and appends the entries (the trail's lock last): a crash anywhere
commits all of it or none, so a replay neither repeats nor loses an entry.

**One flusher per file.** A worker holds an exclusive ``flock`` on its own file
for its whole life; another adopts a file only when it can take that lock (the
kernel drops it when the owner dies), and only if it is still linked then.

**Lines.** ``{"entry": {...}, "usage": [key_id, model, n] | null, "at": ...}``:
``entry`` holds :meth:`Trail.append`'s keyword arguments; ``at``, when the
request was answered, goes into the details as ``spooled_at`` (the trail's own
``at`` is when the entry reached the chain: later, for an adopted file).

**Damage.** A last line without its newline is a write in progress, left for the
next flush; in an adopted file (its writer is dead) it is torn. A torn line, or
one that does not parse or hold a valid entry, is never dropped silently: a
``serve.spool_corrupt`` entry (outcome ``failed``) takes its place, naming the
spool, byte offset, length and SHA-256 of the line (not its text).

**Backpressure.** Once the oldest unflushed line is ``max_lag`` seconds old (the
database is not taking entries), or :data:`FAILING_LAG` seconds old while the
last flush failed (the database is down), ``record`` raises
:class:`~veil.errors.UnavailableError`: the request is refused (503) rather than
answered while its entry piles up on local disk. A database outage thus costs
at most about a second of answers whose entries wait in the spool file (they
reach the trail when it is back).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from veil.access import Outcome, Trail
from veil.errors import ConflictError, InvalidInputError, UnavailableError
from veil.store import Store
from veil.store.tables import ServeSpoolRow, ServeUsageRow

__all__ = ["CORRUPT_ACTION", "TrailSpool"]

log = logging.getLogger("veil.serve.spool")

SUFFIX = ".spool"
CORRUPT_ACTION = "serve.spool_corrupt"
ADOPT_EVERY = 5.0  # seconds between looks for the files of dead workers
FAILING_LAG = 1.0  # seconds a failing database may keep entries waiting before record refuses
BACKOFF_MAX = 5.0  # longest wait between flush retries while the database is down
CLOSE_TRIES = 3
READ_CHUNK = 1 << 20
_SPOOL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # serve_spools.spool_id is 64 characters
_ENTRY_KEYS = frozenset({"actor", "action", "outcome", "purpose", "dataset", "links", "details"})
_OUTCOMES = frozenset(str(o) for o in Outcome)
# The widths of the columns values land in (PostgreSQL enforces them, SQLite does not).
_TEXT = {"actor": 256, "action": 64, "dataset": 128}
_KEY_ID, _MODEL = 64, 128


def _text(value: Any, width: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= width and "\x00" not in value


def _problem(record: Any) -> str | None:
    """Why a spool record cannot go to the trail as it is, or ``None`` when it can."""
    if not (
        isinstance(record, Mapping)
        and isinstance(record.get("entry"), Mapping)
        and set(record) <= {"entry", "usage", "at"}
    ):
        return "not a spool record (an object with 'entry', 'usage' and 'at')"
    entry, usage = record["entry"], record.get("usage")
    wrong = set(entry) - _ENTRY_KEYS
    wrong |= {k for k, width in _TEXT.items() if not _text(entry.get(k, ""), width)}
    wrong -= {"dataset"} if entry.get("dataset") is None else set()
    wrong |= {k for k in ("links", "details") if not isinstance(entry.get(k) or {}, Mapping)}
    wrong |= {"outcome"} if entry.get("outcome", "allowed") not in _OUTCOMES else set()
    wrong |= {"purpose"} if not isinstance(entry.get("purpose", ""), str) else set()
    wrong |= {"at"} if not isinstance(record.get("at", ""), str) else set()
    if usage is not None and not (
        isinstance(usage, list | tuple)
        and len(usage) == 3  # noqa: PLR2004 - (key_id, model, answered)
        and _text(usage[0], _KEY_ID)
        and _text(usage[1], _MODEL)
        and type(usage[2]) is int
        and usage[2] >= 0
    ):
        wrong.add("usage")
    if not wrong:
        return None
    return (
        f"invalid or unknown fields {sorted(wrong)}: actor, action (text) and dataset (text "
        f"or null) of at most {_TEXT} characters, outcome one of {sorted(_OUTCOMES)}, purpose "
        "text, links and details objects, usage [key id, model, records >= 0]"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass
class _Batch:
    """Lines of one spool file parsed for one transaction."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[tuple[str, str], int] = field(default_factory=dict)
    lines: int = 0
    end: int = 0  # the file offset just after the last line taken


class TrailSpool:
    """A worker's spool of trail entries (see the module docstring).

    Args:
        store: The workspace database (the trail's).
        trail: The trail the entries go to.
        directory: Where spool files live; every worker of a service shares it.
        flush_interval: Seconds between flushes.
        batch: Lines moved per transaction; this many waiting wake the flusher early.
        max_lag: ``record`` refuses once the oldest unflushed line is older than this.
    """

    def __init__(
        self,
        store: Store,
        trail: Trail,
        directory: Path,
        *,
        flush_interval: float = 0.05,
        batch: int = 1000,
        max_lag: float = 10.0,
    ) -> None:
        for name, value, above in (
            ("flush_interval", flush_interval, 0),
            ("batch", batch, 0),
            ("max_lag", max_lag, flush_interval),
        ):
            if not value > above:
                raise InvalidInputError(
                    f"invalid spool {name}",
                    expected=f"a number above {above}",
                    got=repr(value),
                    fix="keep the default (flush_interval=0.05, batch=1000, max_lag=10.0)",
                )
        self.store, self.trail, self.directory = store, trail, Path(directory)
        self.flush_interval, self.batch, self.max_lag = flush_interval, batch, max_lag
        self.spool_id = uuid.uuid4().hex
        self.path = self.directory / f"{self.spool_id}{SUFFIX}"
        self.last_error: str | None = None  # the flusher's last failure, None once it recovers
        self._fd: int | None = None
        self._closed = False
        self._size = 0  # bytes written to the own file
        self._marks: deque[tuple[int, float]] = deque()  # (end offset, monotonic time) unflushed
        self._torn = False  # a failed write left a fragment the file could not shed
        self._lock = threading.Lock()  # the own file's writes and marks
        self._flush_lock = threading.Lock()  # one flush or adoption at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create and lock this worker's file, adopt dead workers' files, start the flusher."""
        if self._closed:
            raise ConflictError(
                "this trail spool was closed",
                expected="a spool that is open",
                got=f"spool {self.spool_id}, closed",
                fix="make a new TrailSpool",
            )
        if self._fd is not None:
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        except OSError as exc:  # a file system without flock (some NFS): adoption is unsafe
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise self._unwritable(exc) from None
        self._fd = fd
        try:
            self.adopt()
        except Exception as exc:  # noqa: BLE001 - the flusher retries; start serving meanwhile
            self._failed("adopting dead workers' spools", exc)
        self._thread = threading.Thread(target=self._run, name="veil-trail-spool", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush the last lines (retrying), then delete the file if the trail holds all of it.

        A file that could not be flushed stays, locked no more: the next worker to
        start (or a live one) adopts it. Calling ``close`` again does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True  # record refuses from now on
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._flush_lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                self._close_file(fd)
            finally:
                os.close(fd)  # releases the flock

    def _close_file(self, fd: int) -> None:
        done = False
        for attempt in range(CLOSE_TRIES):
            try:
                done = self._drain(self.spool_id, fd, final=True)[1]
                break
            except Exception as exc:  # noqa: BLE001 - logged; the file stays for adoption
                self._failed(f"the final flush (try {attempt + 1} of {CLOSE_TRIES})", exc)
                time.sleep(0.2 * 2**attempt)
        if not done:
            log.error(
                "trail spool %s kept with %d unflushed lines: the next worker adopts it",
                self.path,
                len(self._marks),
            )
            return
        self._remove(self.path, self.spool_id)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ recording
    def record(
        self, entry: Mapping[str, Any], *, usage: tuple[str, str, int] | None = None
    ) -> None:
        """Spool one trail entry (and the records it answered for a key's count budget).

        Args:
            entry: :meth:`Trail.append`'s keyword arguments (``actor`` and ``action``
                required; JSON values only).
            usage: ``(key_id, model, records answered)``, added to ``serve_usage``
                with the entry.

        Raises:
            InvalidInputError: The entry is not one the trail can hold (a bug of the caller).
            UnavailableError: The spool is closed, its file cannot be written, or the
                trail's database has not taken entries for ``max_lag`` seconds.
        """
        line: dict[str, Any] = {
            "entry": dict(entry),
            "usage": None if usage is None else list(usage),
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        problem = _problem(line)
        if problem is None:
            try:
                text = json.dumps(line, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            raise InvalidInputError(
                "a trail entry the spool cannot hold",
                expected="Trail.append's fields with JSON values (no NaN, no bytes or dates)",
                got=problem,
                fix="pass JSON values only in the entry's details and links",
            )
        data = text.encode() + b"\n"
        with self._lock:
            now = time.monotonic()
            refused = self._refusal(now)
            if refused is not None:
                raise refused
            self._write(data)
            self._marks.append((self._size, now))
            waiting = len(self._marks)
        if waiting >= self.batch:
            self._wake.set()

    def refusal(self) -> UnavailableError | None:
        """Why :meth:`record` would refuse an entry now; ``None`` when it would take it.

        The gateway asks before a request runs, so that a request whose entry
        could not be written is refused before it charges a budget.
        """
        with self._lock:
            return self._refusal(time.monotonic())

    def _refusal(self, now: float) -> UnavailableError | None:
        if self._fd is None or self._closed:
            return UnavailableError(
                "the trail spool is not open",
                expected="a started spool",
                got="closed" if self._closed else "not started",
                fix="the service is starting or stopping: retry shortly",
            )
        lag = now - self._marks[0][1] if self._marks else 0.0
        # A failing database is refused after a second; a slow one after max_lag.
        if lag > self.max_lag or (self.last_error is not None and lag > FAILING_LAG):
            return UnavailableError(
                "the trail is not taking entries",
                expected=f"the trail's database to take entries within {self.max_lag} s",
                got=f"{len(self._marks)} entries waiting for "
                f"{lag:.1f} s ({self.last_error or 'no error yet'})",
                fix="check the database (veil db status); requests are refused until "
                "the backlog moves",
                details={"pending": len(self._marks)},
            )
        return None

    def _write(self, data: bytes) -> None:
        if self._torn:  # a failed write left a fragment: end it, a (corrupt) line of its own
            self._append(b"\n")
            self._torn = False
        self._append(data)

    def _append(self, data: bytes) -> None:
        """Append ``data`` to the own file whole, or leave the file as it was and raise."""
        assert self._fd is not None  # noqa: S101 - record checks
        start, written = self._size, 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._size = os.fstat(self._fd).st_size
                self._torn = self._torn or self._size > start
            raise self._unwritable(exc) from None
        self._size = start + written

    def _unwritable(self, exc: OSError) -> UnavailableError:
        return UnavailableError(
            "cannot write the trail spool",
            expected=f"a writable file in {self.directory}",
            got=f"{type(exc).__name__}: {exc.strerror or exc}",
            fix="free disk space or fix the permissions of the spool directory",
        )

    # ------------------------------------------------------------------ state
    @property
    def pending(self) -> int:
        """Lines of the own file the trail does not hold yet."""
        return len(self._marks)

    @property
    def lag_seconds(self) -> float:
        """Age of the oldest unflushed line (0 when none waits)."""
        with self._lock:
            return time.monotonic() - self._marks[0][1] if self._marks else 0.0

    # ------------------------------------------------------------------ flushing
    def flush(self) -> int:
        """Move the own file's waiting lines into the trail now; returns how many moved.

        Raises whatever the database raises (:class:`~veil.errors.StoreError` when
        it is down); the lines stay and the next flush takes them.
        """
        with self._flush_lock:
            fd = self._fd
            if fd is None or not self._marks:
                return 0
            return self._drain(self.spool_id, fd, final=False)[0]

    def adopt(self) -> int:
        """Flush and delete every other spool file whose lock is free (its worker died).

        Returns the lines moved into the trail.
        """
        moved = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self.path:
                continue
            if not _SPOOL_ID.fullmatch(path.stem):
                log.warning("not a trail spool (its name is not a spool id): %s", path)
                continue
            with self._flush_lock:
                moved += self._adopt(path)
        return moved

    def _adopt(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0  # adopted and removed by another worker since the listing
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live worker's
            if os.fstat(fd).st_nlink == 0:
                return 0  # adopted and removed by another worker while we waited
            moved, done = self._drain(path.stem, fd, final=True)
            if done:
                self._remove(path, path.stem)
                log.info("adopted the trail spool of a dead worker: %s (%d lines)", path, moved)
            return moved
        finally:
            os.close(fd)

    def _drain(self, spool_id: str, fd: int, *, final: bool) -> tuple[int, bool]:
        """Flush ``spool_id`` in transactions of ``batch`` lines.

        Returns the lines taken and whether the trail now holds the whole file.
        """
        moved = 0
        while True:
            took, end, done = self._flush_once(spool_id, fd, final=final)
            moved += took
            if spool_id == self.spool_id:
                self._forget_marks(end)
            if done or took == 0:
                return moved, done

    def _flush_once(self, spool_id: str, fd: int, *, final: bool) -> tuple[int, int, bool]:
        """One transaction: up to ``batch`` lines from the stored offset.

        Returns (lines taken, new offset, whether the file is now wholly in the trail).
        """
        with self.store.session(lock=True) as session:
            stored = session.execute(
                select(ServeSpoolRow.flushed)
                .where(ServeSpoolRow.spool_id == spool_id)
                .with_for_update()
            ).scalar_one_or_none()
            offset = stored or 0
            data, size = _read(fd, offset)
            batch = self._parse(spool_id, data, offset)
            rest = data[batch.end - offset :]
            if final and batch.lines < self.batch and rest and b"\n" not in rest:
                # The writer is gone: a line without its newline will never be finished.
                batch.entries.append(
                    self._corrupt(spool_id, batch.end, rest, "torn: no newline, its writer died")
                )
                batch.lines += 1
                batch.end += len(rest)
            if batch.lines:
                self._add_usage(session, batch.usage)
                self._move(session, spool_id, stored, batch.end)
                self.trail.append_many(session, batch.entries)  # the trail's lock last
        return batch.lines, batch.end, batch.end >= size

    def _parse(self, spool_id: str, data: bytes, offset: int) -> _Batch:
        batch = _Batch(end=offset)
        position = 0
        while batch.lines < self.batch:
            newline = data.find(b"\n", position)
            if newline < 0:
                break
            raw = data[position:newline]
            at = offset + position
            position = newline + 1
            batch.lines += 1
            batch.end = offset + position
            reason: str | None
            try:
                line = json.loads(raw, parse_constant=_no_constant)
            except (ValueError, RecursionError) as exc:
                reason = f"not JSON ({type(exc).__name__})"
            else:
                reason = _problem(line)
            if reason is not None:
                batch.entries.append(self._corrupt(spool_id, at, raw, reason))
                continue
            entry = dict(line["entry"])
            details = dict(entry.get("details") or {})
            if "at" in line:
                details.setdefault("spooled_at", line["at"])
            entry["details"] = details
            batch.entries.append(entry)
            if line.get("usage") is not None:
                key_id, model, answered = line["usage"]
                batch.usage[key_id, model] = batch.usage.get((key_id, model), 0) + answered
        return batch

    @staticmethod
    def _corrupt(spool_id: str, offset: int, raw: bytes, reason: str) -> dict[str, Any]:
        log.error("trail spool %s: damaged line at byte %d (%s)", spool_id, offset, reason)
        return {
            "actor": "veil",
            "action": CORRUPT_ACTION,
            "outcome": Outcome.FAILED,
            "details": {
                "spool": spool_id,
                "offset": offset,
                "bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "reason": reason,
            },
        }

    def _add_usage(self, session: Session, usage: Mapping[tuple[str, str], int]) -> None:
        """``serve_usage += n`` per (key, model): one upsert, rows in key order (no deadlock)."""
        if not usage:
            return
        now = datetime.now(UTC)
        rows = [
            {"key_id": key_id, "model": model, "answered": n, "updated_at": now}
            for (key_id, model), n in sorted(usage.items())
        ]
        dialect = postgresql if self.store.backend == "postgresql" else sqlite
        statement = dialect.insert(ServeUsageRow).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[ServeUsageRow.key_id, ServeUsageRow.model],
            set_={
                "answered": ServeUsageRow.answered + statement.excluded.answered,
                "updated_at": statement.excluded.updated_at,
            },
        )
        session.connection().execute(statement)

    @staticmethod
    def _move(session: Session, spool_id: str, stored: int | None, end: int) -> None:
        """Move the stored offset from ``stored`` to ``end`` (a guarded compare-and-set)."""
        connection = session.connection()
        now = datetime.now(UTC)
        if stored is None:
            connection.execute(
                insert(ServeSpoolRow).values(spool_id=spool_id, flushed=end, updated_at=now)
            )
            return
        moved = connection.execute(
            update(ServeSpoolRow)
            .where(ServeSpoolRow.spool_id == spool_id, ServeSpoolRow.flushed == stored)
            .values(flushed=end, updated_at=now)
        )
        if moved.rowcount != 1:
            raise ConflictError(
                f"trail spool {spool_id} was flushed by another process at the same time",
                expected="one flusher per spool file (its flock)",
                got=f"the stored offset moved away from {stored}",
                fix="keep spool directories on a local file system (flock must work)",
            )

    def _remove(self, path: Path, spool_id: str) -> None:
        """Delete a wholly flushed file, then its offset row (in that order: never replayed)."""
        path.unlink(missing_ok=True)
        try:
            with self.store.session() as session:
                session.execute(delete(ServeSpoolRow).where(ServeSpoolRow.spool_id == spool_id))
        except Exception as exc:  # noqa: BLE001 - a stale row is harmless: its file is gone
            self._failed(f"removing the offset row of spool {spool_id}", exc)

    def _forget_marks(self, end: int) -> None:
        with self._lock:
            while self._marks and self._marks[0][0] <= end:
                self._marks.popleft()

    # ------------------------------------------------------------------ the flusher
    def _run(self) -> None:
        backoff = self.flush_interval
        next_adoption = time.monotonic() + ADOPT_EVERY
        deadline = time.monotonic() + self.flush_interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
                if time.monotonic() >= next_adoption:
                    next_adoption = time.monotonic() + ADOPT_EVERY
                    self.adopt()
            except Exception as exc:  # noqa: BLE001 - logged and retried: lines are never lost
                self._failed("flushing", exc)
                deadline = time.monotonic() + backoff
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.last_error = None
            backoff = self.flush_interval
            deadline = time.monotonic() + self.flush_interval

    def _failed(self, doing: str, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("trail spool %s: %s failed: %s", self.spool_id, doing, self.last_error)


def _read(fd: int, offset: int) -> tuple[bytes, int]:
    """Bytes of the file from ``offset``: at least one whole line when there is one.

    Returns the bytes and the file's size when read.
    """
    size = os.fstat(fd).st_size
    chunk = READ_CHUNK
    while True:
        data = os.pread(fd, max(0, min(chunk, size - offset)), offset)
        if b"\n" in data or offset + len(data) >= size:
            return data, size
        chunk *= 2

"""One writer of a dataset's versions at a time: erasures and retention runs take this lock.

An erasure or a retention run reads the current version, computes the rows to
keep, and writes them as the next version. Two of them interleaved would each
start from the same version, and the second to commit would write back rows
the first removed (an erased person brought back by a retention run started a
moment earlier). Holding this lock from the read to the commit makes them one
after the other; the second then reads the version the first wrote (and a
retention run finds nothing due: cron may start two at once).

How it is held, per backend:

* **PostgreSQL**: a session-level advisory lock on a connection of its own,
  so it spans the several transactions of a version change and is released
  by the server if the process dies (kill -9 included).
* **SQLite**: ``flock`` on a file beside the database. The kernel releases it
  when the process dies; separate opens in one process exclude each other too,
  so two threads are serialised as well. An in-memory database (tests) has one
  process by definition: a process-wide lock serves.

Why not a long ``BEGIN IMMEDIATE`` transaction: it would stop every other
writer of the workspace (trail entries, budget charges) for as long as a large
table takes to rewrite and seal, where this lock stops only writers of the
same dataset's versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text

from veil.errors import ConflictError
from veil.store import Store

__all__ = ["dataset_lock"]

_MEMORY_LOCKS: dict[int, threading.Lock] = {}
_MEMORY_GUARD = threading.Lock()
_POLL_SECONDS = 0.05


def _key(dataset_id: int) -> int:
    """A 63-bit advisory-lock key for the dataset (distinct from the catalogue's digest locks)."""
    digest = hashlib.sha256(f"veil.governance.versions\x1f{dataset_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _busy(name: str, timeout: float) -> ConflictError:
    return ConflictError(
        f"another erasure or retention run is changing '{name}'",
        expected="one writer of a dataset's versions at a time",
        got=f"the lock still held after {timeout:g} s",
        fix=f"wait for it to finish (see `veil trail show --dataset {name}`), then run this again",
    )


@contextlib.contextmanager
def dataset_lock(
    store: Store, dataset_id: int, name: str, *, timeout: float = 300.0
) -> Iterator[None]:
    """Hold the version lock of dataset ``dataset_id`` for the block.

    Raises:
        ConflictError: Another process held it for ``timeout`` seconds.
    """
    if store.backend == "postgresql":
        with _postgres_lock(store, _key(dataset_id), name, timeout):
            yield
        return
    database = store.engine.url.database
    if database in (None, "", ":memory:"):
        with _memory_lock(dataset_id, name, timeout):
            yield
        return
    path = Path(database).with_name(f"{Path(database).name}.dataset-{dataset_id}.lock")
    with _file_lock(path, name, timeout):
        yield


@contextlib.contextmanager
def _postgres_lock(store: Store, key: int, name: str, timeout: float) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    with store.engine.connect() as opened:
        connection = opened.execution_options(isolation_level="AUTOCOMMIT")
        while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                raise _busy(name, timeout)
            time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@contextlib.contextmanager
def _file_lock(path: Path, name: str, timeout: float) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(name, timeout) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _memory_lock(dataset_id: int, name: str, timeout: float) -> Iterator[None]:
    with _MEMORY_GUARD:
        lock = _MEMORY_LOCKS.setdefault(dataset_id, threading.Lock())
    if not lock.acquire(timeout=timeout):
        raise _busy(name, timeout)
    try:
        yield
    finally:
        lock.release()

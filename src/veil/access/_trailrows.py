"""The trail's rows for verification: read and checked here, or in ranges by worker processes.

A trail of :data:`PARALLEL_FROM` entries or more is read and checked in ranges
of at most :data:`RANGE_ROWS` rows by forked worker processes, one per CPU
(:func:`veil._trailscan.scan_range`); a smaller one in this process, through
the driver's own cursor. ``Trail.verify`` joins the checked chunks.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil._trailscan import Chunk, scan, scan_range, select_rows
from veil.access._verify import VERIFY_BATCH
from veil.store import Store
from veil.store.chain import GENESIS
from veil.store.tables import TrailEntryRow

__all__ = ["PARALLEL_FROM", "RANGE_ROWS", "checked_rows"]

PARALLEL_FROM = 200_000  # entries from which verify checks rows in worker processes
RANGE_ROWS = 100_000  # rows a worker checks at a time


def checked_rows(store: Store, session: Session, workers: int | None) -> Iterator[Chunk]:
    """The trail's rows, checked: in ranges by worker processes, or here in one pass."""
    last = session.execute(select(func.max(TrailEntryRow.seq))).scalar() or 0
    target = _scan_target(store)
    if workers is None:
        workers = (os.cpu_count() or 1) if last >= PARALLEL_FROM else 1
    forkable = "fork" in multiprocessing.get_all_start_methods()
    if workers <= 1 or target is None or last == 0 or not forkable:
        yield scan(_rows(store, session), bytes.fromhex(GENESIS))
        return
    # Ranges of at most RANGE_ROWS rows, several per worker, so the parent joins the first
    # while the workers check the next. Rows appended after `last` wait for the next verify.
    size = max(1, min(RANGE_ROWS, -(-last // (workers * 2))))
    starts = list(range(1, last + 1, size))
    ends = [min(lo + size - 1, last) for lo in starts]
    # fork, not spawn: spawn re-runs the caller's main script in each worker (a script
    # without the `if __name__ == "__main__"` guard would start over), and imports Veil
    # again. A forked worker opens its own connection, uses none it inherited, and
    # leaves through os._exit (multiprocessing's), so the parent's stay untouched.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(
            scan_range,
            [target] * len(starts),
            starts,
            ends,
            [bytes.fromhex(GENESIS)] * len(starts),
        )


def _scan_target(store: Store) -> tuple[str, str] | None:
    """Where a worker process finds the rows: a SQLite file or a PostgreSQL conninfo."""
    url = store.engine.url
    if store.backend == "sqlite":
        database = url.database
        if not database or database == ":memory:" or url.query.get("uri"):
            return None
        return "sqlite", str(Path(database).resolve())
    # psycopg's own URL form (the password stays in memory, passed to the worker by pipe)
    return "postgresql", url.set(drivername="postgresql").render_as_string(hide_password=False)


def _rows(store: Store, session: Session) -> Iterator[Sequence[Any]]:
    query = select_rows(store.backend) + " ORDER BY seq"
    connection = session.connection()
    if store.backend == "sqlite":
        # The driver's own cursor: plain tuples, no result-row objects (verify's speed).
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(query)
            while batch := cursor.fetchmany(VERIFY_BATCH):
                yield from batch
        finally:
            cursor.close()
        return
    result = connection.execution_options(
        stream_results=True, yield_per=VERIFY_BATCH
    ).exec_driver_sql(query)
    while batch := result.fetchmany(VERIFY_BATCH):
        yield from batch

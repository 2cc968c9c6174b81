"""The per-row checks of ``veil trail verify``, with no dependency beyond the standard library.

For each row of ``trail_entries`` in order: the RFC 6962 leaf hash of its body
against the stored ``leaf``, the hash chain against the stored ``chain``, and
the indexed columns against the canonical body (as text, without parsing it).
:func:`scan` does it for rows already read; :func:`scan_range` reads one range
of rows itself, in a worker process.

Why a floor-0 module and not part of :mod:`veil.access`: a long trail is
verified by several processes, each taking a range of rows (the checks cost
microseconds a row in Python, and a million rows is the size the trail is
built for). The workers are forked, and a worker needs only what this module
and the database driver give it: it opens its own connection and touches no
object of Veil's it inherited, so it cannot disturb the parent's connections.
The Merkle tree, the signed heads and the ledger's cross-check stay in
:mod:`veil.access`, in the parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["LINKED", "Chunk", "scan", "scan_range", "select_rows"]

# Entries whose bodies the parent reads in full (their links join the ledger to the trail).
LINKED = frozenset({"trail.start", "privacy.charge", "privacy.non_private", "budget.set"})
HASH_SIZE = 32
# PostgreSQL hands ``at`` over as text in SQLite's layout: building a datetime per row
# and formatting it back would cost more than the rest of the row's checks.
_AT = {
    "sqlite": "at",
    "postgresql": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
}


def select_rows(backend: str) -> str:
    """The SELECT of the columns :func:`scan` takes, in its order (no WHERE, no ORDER)."""
    return (
        f"SELECT seq, body, leaf, chain, {_AT[backend]}, actor, action, dataset, outcome "
        "FROM trail_entries"
    )


_BATCH = 20_000
_PLAIN = re.compile(r"[A-Za-z0-9 _.:@/+*~-]*")
_AT_LENGTH = len("2026-01-01T00:00:00.000000Z")
_OUTCOME_KEY = ',"outcome":"'
_CACHE_MAX = 100_000
_QUOTED: dict[str, str] = {}
_PREFIXES: dict[tuple[str, str], str] = {}  # (action, actor) -> the body's first characters
_NAMED: dict[str | None, str] = {}  # dataset -> its part of the body


@dataclass
class Chunk:
    """What one range of rows showed.

    Attributes:
        first_seq: The first row's number (``None`` when the range held no row).
        last_seq: The last row's number.
        count: How many rows.
        leaves: Their leaf hashes, 32 bytes each, in order.
        chain: The chain value after the last row (the stored one after a break).
        problems: ``(kind, message, seq)`` for each row that failed a check.
        linked: ``(seq, body)`` of the rows whose action is in :data:`LINKED`.
    """

    first_seq: int | None = None
    last_seq: int = 0
    count: int = 0
    leaves: bytes = b""
    chain: bytes = b""
    problems: list[tuple[str, str, int]] = field(default_factory=list)
    linked: list[tuple[int, str]] = field(default_factory=list)


def _cached(cache: dict[Any, str], key: Any, value: str) -> str:
    if len(cache) < _CACHE_MAX:
        cache[key] = value
    return value


def _quoted(text: str) -> str:
    """``text`` as canonical JSON writes it (actors, actions and datasets repeat: cached)."""
    quoted = _QUOTED.get(text)
    if quoted is None:
        plain = _PLAIN.fullmatch(text)
        quoted = _cached(
            _QUOTED, text, f'"{text}"' if plain else json.dumps(text, ensure_ascii=True)
        )
    return quoted


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agrees(  # noqa: PLR0917 - the row's columns, in order
    body: str, seq: int, at: Any, actor: str, action: str, dataset: str | None, outcome: str
) -> bool:
    """Whether the indexed columns say what the canonical body says (no JSON parse).

    The body's keys are sorted: ``action``, ``actor``, ``at``, ``dataset``,
    ``details``, ``links``, ``outcome``, ``purpose``, ``seq``, ``v``. The
    ``outcome`` compared is the last one in the text: any nested one sits in
    ``details`` or ``links``, before it, and the ``purpose`` after it is a
    string, in which a quote is always escaped.
    """
    prefix = _PREFIXES.get((action, actor))
    if prefix is None:
        text = '{"action":' + _quoted(action) + ',"actor":' + _quoted(actor) + ',"at":"'
        prefix = _cached(_PREFIXES, (action, actor), text)
    start = len(prefix)
    stamp = body[start : start + _AT_LENGTH]
    if isinstance(at, str):  # SQLite: "2026-01-01 00:00:00.000000"
        same_time = at[:10] == stamp[:10] and at[11:26] == stamp[11:26]
    else:  # PostgreSQL: an aware datetime (SQLite may hold anything after an edit)
        same_time = isinstance(at, datetime) and _stamp(at) == stamp
    named = _NAMED.get(dataset)
    if named is None:
        text = '","dataset":' + ("null" if dataset is None else _quoted(dataset)) + ',"details":'
        named = _cached(_NAMED, dataset, text)
    last = body.rfind(_OUTCOME_KEY)
    return (
        same_time
        and body.startswith(prefix)
        and body.startswith(named, start + _AT_LENGTH)
        and last >= 0
        and body.startswith(outcome + '","purpose":', last + len(_OUTCOME_KEY))
        and body.endswith(f',"seq":{seq},"v":1}}')
    )


def scan(rows: Iterable[Sequence[Any]], chain: bytes) -> Chunk:
    """Check ``rows`` (in ``seq`` order) whose predecessor's chain value is ``chain``."""
    chunk = Chunk()
    leaves: list[bytes] = []
    problems = chunk.problems
    sha256 = hashlib.sha256
    expected: int | None = None
    for seq, body, leaf_hex, chain_hex, at, actor, action, dataset, outcome in rows:
        if expected is None:
            chunk.first_seq = seq
        elif seq != expected:
            problems.append(
                ("gap", f"entry {expected} is missing: the next row is {seq}", expected)
            )
        leaf = sha256(b"\x00" + body.encode("utf-8")).digest()
        if leaf.hex() != leaf_hex:
            problems.append(("edited", f"entry {seq}'s body does not hash to its leaf", seq))
        chain = sha256(chain + leaf).digest()
        if chain.hex() != chain_hex:
            problems.append(("chain", f"entry {seq} does not link to the entries before it", seq))
            with contextlib.suppress(TypeError, ValueError):
                chain = bytes.fromhex(chain_hex)  # report each break once, not every row
        if not agrees(body, seq, at, actor, action, dataset, outcome):
            problems.append(("columns", f"entry {seq}'s columns disagree with its body", seq))
        if action in LINKED:
            chunk.linked.append((seq, body))
        leaves.append(leaf)
        expected = seq + 1
    chunk.count = len(leaves)
    chunk.last_seq = 0 if expected is None else expected - 1
    chunk.leaves = b"".join(leaves)
    chunk.chain = chain
    return chunk


def scan_range(target: tuple[str, str], lo: int, hi: int, genesis: bytes) -> Chunk:
    """Read rows ``lo`` to ``hi`` of the trail at ``target`` and :func:`scan` them.

    Args:
        target: ``("sqlite", path)`` or ``("postgresql", conninfo)``.
        lo, hi: The range of ``seq`` (inclusive).
        genesis: The chain value before the first entry.
    """
    backend, where = target
    if backend == "sqlite":
        import sqlite3  # noqa: PLC0415 - only the backend in use

        connection: Any = sqlite3.connect(f"file:{where}?mode=ro", uri=True)
        mark = "?"
    else:
        import psycopg  # noqa: PLC0415

        connection = psycopg.connect(where)
        mark = "%s"
    try:
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT chain FROM trail_entries WHERE seq < {mark} ORDER BY seq DESC LIMIT 1",
            (lo,),
        )
        before = cursor.fetchone()
        chain = bytes.fromhex(before[0]) if before else genesis
        cursor.execute(
            f"{select_rows(backend)} WHERE seq BETWEEN {mark} AND {mark} ORDER BY seq",
            (lo, hi),
        )

        def rows() -> Iterable[Sequence[Any]]:
            while batch := cursor.fetchmany(_BATCH):
                yield from batch

        return scan(rows(), chain)
    finally:
        connection.close()

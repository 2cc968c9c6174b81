"""Kept subtree roots of the trail's Merkle tree: inclusion proofs in ``O(log n)`` reads.

An RFC 6962 tree over an append-only log has *aligned perfect subtrees*: the
``2**level`` leaves from ``index * 2**level`` on. Once the log has grown past
one, its root never changes. The trail keeps the roots of those of
``2**NODE_LEVEL`` leaves or more in ``trail_nodes`` (``level``, ``idx``,
``hash``): an append that completes one writes it in its own transaction
(:meth:`veil.access._merkle.Frontier.append_merged` names them), and a trail
written before the table existed has its nodes computed the first time a proof
needs them, in chunks of :data:`CHUNK_BLOCKS` subtrees, and kept.

Every range an RFC 6962 proof needs (PATH and PROOF split ``D[lo:hi]`` at the
largest power of two below its size, so ``lo`` is a multiple of the smallest
power of two at or above ``hi - lo``) is a row of aligned perfect subtrees, the
binary digits of its size, largest first: the large ones are kept nodes, the
small ones (together fewer than ``2**NODE_LEVEL`` leaves at the range's end)
are hashed from the leaves. A proof against a tree of a million entries reads
about twenty nodes and at most two runs of ``2**NODE_LEVEL`` leaves.

Nothing here is trusted by verification: ``Trail.verify`` recomputes the tree
from the entries, and a proof built from a wrong node fails the verifier's
check against the signed head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from veil.access._merkle import _mth
from veil.access.verifier import HASH_SIZE as HASH
from veil.access.verifier import node_hash
from veil.errors import StoreError
from veil.store.tables import TrailEntryRow, TrailNodeRow

__all__ = ["CHUNK_BLOCKS", "NODE_LEVEL", "NodeCheck", "TreeReader", "insert_nodes", "node_rows"]

NODE_LEVEL = 10  # kept subtrees hold 2**NODE_LEVEL leaves or more
CHUNK_BLOCKS = 64  # a backfill reads at most this many subtrees' leaves at a time

_NODES: Table = TrailNodeRow.__table__  # type: ignore[assignment]


def node_rows(merged: Sequence[bytes], size: int, level: int) -> list[dict[str, Any]]:
    """Rows for the subtrees an append to ``size`` leaves completed (lowest level first)."""
    return [
        {"level": level + k, "idx": (size >> (level + k)) - 1, "hash": node.hex()}
        for k, node in enumerate(merged)
    ]


def insert_nodes(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert node rows, leaving any already kept (a node's hash never changes)."""
    if not rows:
        return
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(_NODES).on_conflict_do_nothing(), list(rows))


def _blocks(lo: int, hi: int, level: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``D[lo:hi]`` as kept subtrees ``(level, idx)``, largest first, and the leaf tail left."""
    blocks: list[tuple[int, int]] = []
    position = lo
    size = hi - lo
    for bit in range(size.bit_length() - 1, level - 1, -1):
        if size >> bit & 1:
            blocks.append((bit, position >> bit))
            position += 1 << bit
    return blocks, (position, hi)


class TreeReader:
    """Merkle Tree Hashes of leaf ranges of the trail, from kept nodes and a few leaves.

    Args:
        connection: A connection in a transaction that reads the trail.
        size: The tree size the ranges lie in (at most the trail's size).
        level: The lowest kept level (:data:`NODE_LEVEL`; tests use a small one).
        write: Where to keep nodes computed here (``None``: not kept). Called with
            the rows; the trail opens a write transaction of its own for them.
    """

    def __init__(
        self,
        connection: Connection,
        size: int,
        *,
        level: int = NODE_LEVEL,
        write: Any = None,
    ) -> None:
        self.connection, self.size, self.level, self.write = connection, size, level, write
        self.computed = 0  # nodes computed here (a backfill), for tests and measurements

    def hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH(D[lo:hi]) of each range (each one of a proof's ranges; see the module)."""
        split = [_blocks(lo, hi, self.level) for lo, hi in ranges]
        wanted = {block for blocks, _ in split for block in blocks}
        nodes = self._nodes(wanted)
        missing = wanted - nodes.keys()
        if missing:
            nodes.update(self._backfill(missing))
        tails = [tail for _, tail in split if tail[0] < tail[1]]
        leaves = self._tail_leaves(tails)
        out = []
        for blocks, (lo, hi) in split:
            parts = [nodes[b] for b in blocks]
            if lo < hi:
                parts.append(_mth([leaves[i] for i in range(lo, hi)]))
            root = parts[-1]
            for part in reversed(parts[:-1]):
                root = node_hash(part, root)
            out.append(root)
        return out

    # ----------------------------------------------------------------- reading
    def _nodes(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        keys = list(keys)
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(keys), 200):
            part = keys[start : start + 200]
            query = select(TrailNodeRow.level, TrailNodeRow.idx, TrailNodeRow.hash).where(
                tuple_(TrailNodeRow.level, TrailNodeRow.idx).in_(part)
            )
            for level, idx, value in self.connection.execute(query):
                found[(level, idx)] = bytes.fromhex(value)
        return found

    def _leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaf hashes ``lo..hi-1`` (0-based), all of them or an error."""
        rows = self.connection.execute(
            select(TrailEntryRow.leaf)
            .where(TrailEntryRow.seq > lo, TrailEntryRow.seq <= hi)
            .order_by(TrailEntryRow.seq)
        ).scalars()
        leaves = [bytes.fromhex(h) for h in rows]
        if len(leaves) != hi - lo:
            raise StoreError(
                f"the trail is missing entries between {lo + 1} and {hi}",
                expected=f"{hi - lo} entries",
                got=f"{len(leaves)}",
                fix="run `veil trail verify` and restore the trail from a backup",
            )
        return leaves

    def _tail_leaves(self, tails: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        """The leaves of the ranges' tails (they lie in at most two runs), by index."""
        leaves: dict[int, bytes] = {}
        runs: list[list[int]] = []
        for lo, hi in sorted(tails):
            if runs and lo <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], hi)
            else:
                runs.append([lo, hi])
        for lo, hi in runs:
            leaves.update(enumerate(self._leaves(lo, hi), start=lo))
        return leaves

    # ---------------------------------------------------------------- backfill
    def _backfill(self, missing: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Compute the missing nodes (and the kept ones below them that are missing too)."""
        made: dict[tuple[int, int], bytes] = {}
        for level, idx in sorted(missing):
            if (level, idx) not in made:
                made.update(self._subtree(level, idx))
        if self.write is not None and made:
            self.write([{"level": lv, "idx": i, "hash": h.hex()} for (lv, i), h in made.items()])
        self.computed += len(made)
        return made

    def _subtree(self, top: int, index: int) -> dict[tuple[int, int], bytes]:
        """Every node of the subtree ``(top, index)`` down to the kept level, missing ones made."""
        low = self.level
        have: dict[tuple[int, int], bytes] = {}
        for level in range(low, top):
            first = index << (top - level)
            last = ((index + 1) << (top - level)) - 1
            query = select(TrailNodeRow.idx, TrailNodeRow.hash).where(
                TrailNodeRow.level == level, TrailNodeRow.idx.between(first, last)
            )
            for idx, value in self.connection.execute(query):
                have[(level, idx)] = bytes.fromhex(value)
        made: dict[tuple[int, int], bytes] = {}
        first = index << (top - low)
        count = 1 << (top - low)
        width = 1 << low
        missing = [i for i in range(first, first + count) if (low, i) not in have]
        # Runs of consecutive missing subtrees, CHUNK_BLOCKS at most per read.
        run: list[int] = []
        following: list[int | None] = [*missing, None]
        for step in following:
            if step is not None and (not run or (step == run[-1] + 1 and len(run) < CHUNK_BLOCKS)):
                run.append(step)
                continue
            if run:
                leaves = self._leaves(run[0] * width, (run[-1] + 1) * width)
                for k, i in enumerate(run):
                    made[(low, i)] = _mth(leaves[k * width : (k + 1) * width])
            run = [] if step is None else [step]
        known = {**have, **made}
        for level in range(low + 1, top + 1):
            first = index << (top - level)
            for i in range(first, first + (1 << (top - level))):
                if (level, i) not in known:
                    known[(level, i)] = made[(level, i)] = node_hash(
                        known[(level - 1, 2 * i)], known[(level - 1, 2 * i + 1)]
                    )
        return made


class NodeCheck:
    """Recompute the kept subtree roots from the rows ``verify`` streams, and compare.

    Wraps ``verify``'s checked chunks (each holds its rows' leaf hashes in order):
    every aligned run of ``2**level`` leaves from the first entry on is hashed as
    it passes (a few kilobytes held), the levels above are built from those, and
    :meth:`problems` names each kept node that disagrees with the entries. A gap
    in the rows ends the check there (``verify`` reports the gap itself).
    """

    def __init__(self, level: int = NODE_LEVEL) -> None:
        self.level = level
        self._width = 1 << level
        self._pending = b""  # leaf hashes of the block being filled
        self._next = 1  # the seq the next chunk must start at
        self._roots: list[bytes] = []  # level-`level` roots, in order
        self.stopped = False

    def wrap(self, chunks: Iterable[Any]) -> Iterable[Any]:
        for chunk in chunks:
            self._take(chunk)
            yield chunk

    def _take(self, chunk: Any) -> None:
        if self.stopped or chunk.first_seq is None:
            return
        if chunk.first_seq != self._next:
            self.stopped = True
            return
        self._next = chunk.last_seq + 1
        data = self._pending + chunk.leaves
        block = self._width * HASH
        full = len(data) - len(data) % block
        for start in range(0, full, block):
            piece = data[start : start + block]
            self._roots.append(_mth([piece[i : i + HASH] for i in range(0, block, HASH)]))
        self._pending = data[full:]

    def computed(self) -> dict[tuple[int, int], bytes]:
        """Every complete aligned subtree's root at the kept levels, from the rows seen."""
        found: dict[tuple[int, int], bytes] = {}
        level, row = self.level, self._roots
        while row:
            found.update(((level, i), h) for i, h in enumerate(row))
            row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
            level += 1
        return found

    def problems(self, connection: Connection) -> list[tuple[str, str, int]]:
        """``(kind, message, first seq)`` for each kept node the entries do not give."""
        computed = self.computed()
        out = []
        query = select(TrailNodeRow.level, TrailNodeRow.idx, TrailNodeRow.hash).where(
            TrailNodeRow.level >= self.level
        )
        for level, idx, value in connection.execute(
            query.order_by(TrailNodeRow.level, TrailNodeRow.idx)
        ):
            expected = computed.get((level, idx))
            if expected is None:
                if self.stopped:
                    continue  # past a gap: not checked
                message = "a kept Merkle node covers entries the trail does not hold"
            elif expected.hex() == value:
                continue
            else:
                message = "a kept Merkle node disagrees with the entries it covers"
            first, last = idx << level, ((idx + 1) << level)
            out.append(("node", f"{message} (entries {first + 1} to {last})", first + 1))
        return out

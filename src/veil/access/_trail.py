"""The trail: an append-only log of every access and change, as an RFC 6962 Merkle tree.

Each entry is a canonical JSON **body** (who, when, what, on which dataset,
why, the outcome, and links to ledger events, models and dataset versions).
Three layers of evidence cover it:

1. **A hash chain** (``chain = SHA-256(previous chain || leaf)``) stored with
   every row, so that ``verify`` names the first entry that was edited,
   inserted, deleted or moved by someone who did not recompute the rest.
2. **A Merkle tree** over the leaf hashes (RFC 6962 §2.1), kept as its
   frontier in ``trail_state``: the root of any prefix is a *tree head*; an
   inclusion proof for entry one million of a million is 20 hashes, and a
   consistency proof shows that a later tree extends an earlier one.
3. **Signed tree heads** (Ed25519 under the workspace's ``trail`` key, written
   every :data:`HEAD_EVERY` entries and at each ``veil trail checkpoint``).
   Someone who rewrites the whole trail self-consistently must sign new heads,
   which needs the key; the head the owner exported and keeps elsewhere
   detects even that, and truncation.

**The ledger joins the chain.** Every privacy charge and budget change is
appended in the ledger's own transaction, with the event's id and ledger chain
value as links; ``verify`` matches them both ways, so a deleted or edited
charge, or a budget raised in the database, is found. The first entry
(``trail.start``) pins the ledger as it stood when the trail began (a
workspace upgraded from before the trail keeps its older charges covered by
the ledger's own chain up to that pin).

**Concurrency.** An append locks the single ``trail_state`` row (``SELECT ...
FOR UPDATE`` on PostgreSQL; SQLite's write lock, so appends must run in a
``store.session(lock=True)``), and commits with the action it records: an
action that commits has its entry, one that rolls back has none. The trail
lock is always the last one a transaction takes, so it cannot deadlock with
the ledger's per-dataset budget locks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from veil.access._append import Cursor, ledger_pin
from veil.access._entries import (
    PROOF_FORMAT,
    Outcome,
    TrailEntry,
    TreeHead,
    head_of,
    timestamp,
)
from veil.access._merkle import Frontier, _path_ranges, _proof_ranges, consistency_proof
from veil.access._nodes import NODE_LEVEL, NodeCheck, TreeReader, insert_nodes
from veil.access._search import Filters, newer, page
from veil.access._trailrows import checked_rows
from veil.access._verify import (
    TrailProblem,
    TrailReport,
    Walk,
    check_head,
    check_ledger,
)
from veil.access.verifier import head_message, verify_consistency
from veil.errors import InvalidInputError, NotFoundError
from veil.progress import ProgressCallback
from veil.store import Store
from veil.store.tables import (
    TrailEntryRow,
    TrailHeadRow,
    TrailStateRow,
)

__all__ = [
    "HEAD_EVERY",
    "Outcome",
    "Trail",
    "TrailEntry",
    "TrailProblem",
    "TrailReport",
    "TreeHead",
]

HEAD_EVERY = 1024  # a signed head every this many entries (when the trail has its key)


# Built once: an append runs them with every action (SQLAlchemy's statement building
# and cache keys cost more than SQLite's work).
_READ_END = (
    select(TrailStateRow.size, TrailStateRow.chain, TrailStateRow.frontier)
    .where(TrailStateRow.id == 1)
    .with_for_update()
)
_INSERT_ENTRY = insert(TrailEntryRow)
_MOVE_END = (
    update(TrailStateRow)
    .where(TrailStateRow.id == 1)
    .values(size=bindparam("size"), chain=bindparam("chain"), frontier=bindparam("frontier"))
)


class Trail:
    """The workspace's trail.

    ``node_level``: kept Merkle subtrees (``trail_nodes``) hold ``2**node_level``
    entries or more (:mod:`veil.access._nodes`; tests set a small one).

    Args:
        store: The workspace database.
        signing_key: 32-byte Ed25519 seed (the workspace's ``trail`` key).
            Without it no head is signed: the chain and the tree still detect
            naive edits, but not a self-consistent rewrite.
    """

    node_level = NODE_LEVEL

    def __init__(self, store: Store, *, signing_key: bytes | None = None) -> None:
        self.store = store
        self._signer = None
        self.public_key: str | None = None
        if signing_key is not None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
                Ed25519PrivateKey,
            )
            from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
                Encoding,
                PublicFormat,
            )

            self._signer = Ed25519PrivateKey.from_private_bytes(signing_key)
            self.public_key = (
                self._signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
            )

    # ------------------------------------------------------------------ writing
    def _locked_state(self, session: Session) -> Any:
        """The trail's end (size, chain, frontier), its row locked until the transaction ends.

        Core statements on the session's connection, not the ORM's execute: an append
        is on the path of every action (the ORM's layers cost more than SQLite's work).
        """
        if session.new or session.dirty or session.deleted:
            session.flush()  # the action's own rows first, as an ORM execute would
        connection = session.connection()
        if self.store.backend == "sqlite":
            mode = connection.get_execution_options().get("veil_sqlite_begin")
            if mode != "IMMEDIATE":
                msg = "a trail append needs the write lock: use store.session(lock=True)"
                raise RuntimeError(msg)
        return connection.execute(_READ_END).one()

    def append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        outcome: Outcome = Outcome.ALLOWED,
        purpose: str = "",
        dataset: str | None = None,
        links: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> TrailEntry:
        """Append an entry in ``session`` (a locked transaction: it commits with the action)."""
        entry = {
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "purpose": purpose,
            "dataset": dataset,
            "links": links or {},
            "details": details or {},
        }
        return self.append_many(session, [entry])[-1]

    def append_many(
        self, session: Session, entries: Sequence[Mapping[str, Any]]
    ) -> list[TrailEntry]:
        """Append several entries in order, in ``session``, with one insert.

        Each mapping has the keyword arguments of :meth:`append` (``actor`` and
        ``action`` required). For batch imports and benchmarks; an action
        records itself with :meth:`append`.
        """
        state = self._locked_state(session)
        cursor = Cursor(
            state.size,
            state.chain,
            Frontier.from_json(state.size, state.frontier),
            self.node_level,
        )
        rows: list[dict[str, Any]] = []
        made: list[TrailEntry] = []
        heads: list[TreeHead] = []
        if state.size == 0 and (not entries or entries[0].get("action") != "trail.start"):
            start = {
                "actor": entries[0]["actor"] if entries else "veil",
                "action": "trail.start",
                "details": {"ledger": ledger_pin(session)},
            }
            entries = [start, *entries]
        for fields in entries:
            row, entry = cursor.add(fields)
            rows.append(row)
            made.append(entry)
            if self._signer is not None and cursor.size % HEAD_EVERY == 0:
                heads.append(self._sign(cursor.size, cursor.frontier.root()))
        connection = session.connection()
        if len(rows) == 1:
            connection.execute(_INSERT_ENTRY, rows[0])
        elif rows:
            connection.execute(_INSERT_ENTRY, rows)
        connection.execute(
            _MOVE_END,
            {"size": cursor.size, "chain": cursor.chain, "frontier": cursor.frontier.to_json()},
        )
        insert_nodes(connection, cursor.nodes)
        for head in heads:
            self._store_head(session, head)
        return made

    def record(self, **entry: Any) -> TrailEntry:
        """Append an entry in a transaction of its own (for reads and refusals)."""
        with self.store.session(lock=True) as session:
            return self.append(session, **entry)

    def _sign(self, size: int, root: bytes) -> TreeHead:
        assert self._signer is not None  # noqa: S101 - callers check
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        signature = self._signer.sign(head_message(size, root, timestamp))
        return TreeHead(size, root.hex(), timestamp, self.public_key, signature.hex())

    @staticmethod
    def _store_head(session: Session, head: TreeHead) -> None:
        exists = session.get(TrailHeadRow, head.size)
        if exists is None:
            session.add(
                TrailHeadRow(
                    size=head.size,
                    root=head.root,
                    timestamp=head.timestamp,
                    public_key=head.public_key or "",
                    signature=head.signature or "",
                )
            )
            session.flush()

    def checkpoint(self) -> TreeHead:
        """Sign the current head and keep it in the database; export it to keep it elsewhere."""
        if self._signer is None:
            raise InvalidInputError(
                "this trail has no signing key",
                expected="a trail opened from a workspace (it has a 'trail' key)",
                got="a Trail built on a bare store",
                fix="use Trail.open(workspace) or `veil trail checkpoint`",
            )
        with self.store.session(lock=True) as session:
            state = self._locked_state(session)
            frontier = Frontier.from_json(state.size, state.frontier)
            head = self._sign(state.size, frontier.root())
            self._store_head(session, head)
            stored = session.get(TrailHeadRow, head.size)
            assert stored is not None  # noqa: S101 - just written or already there
            return head_of(stored)

    # ------------------------------------------------------------------ reading
    def head(self) -> TreeHead:
        """The current (unsigned) head: size and Merkle root."""
        with self.store.session() as session:
            state = session.get(TrailStateRow, 1)
            assert state is not None  # noqa: S101 - created by the migration
            frontier = Frontier.from_json(state.size, state.frontier)
            return TreeHead(state.size, frontier.root().hex(), timestamp(datetime.now(UTC)))

    def heads(self) -> list[TreeHead]:
        """The signed heads kept in the database, smallest first."""
        with self.store.session() as session:
            rows = session.scalars(select(TrailHeadRow).order_by(TrailHeadRow.size)).all()
            return [head_of(r) for r in rows]

    def entries(
        self,
        *,
        dataset: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[TrailEntry]:
        """Entries matching every filter given, oldest first (the last ``limit`` if given)."""
        query = select(TrailEntryRow.body, TrailEntryRow.leaf)
        if dataset is not None:
            query = query.where(TrailEntryRow.dataset == dataset)
        if actor is not None:
            query = query.where(TrailEntryRow.actor == actor)
        if since is not None:
            query = query.where(TrailEntryRow.at >= since)
        if action is not None:
            query = query.where(TrailEntryRow.action == action)
        if limit is not None:
            query = query.order_by(TrailEntryRow.seq.desc()).limit(limit)
        else:
            query = query.order_by(TrailEntryRow.seq)
        with self.store.session() as session:
            rows = session.execute(query).all()
        entries = [TrailEntry.from_body(body, leaf) for body, leaf in rows]
        return sorted(entries, key=lambda e: e.seq)

    def page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        dataset: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[list[TrailEntry], int | None]:
        """One page of entries matching every filter, newest first, and the next page's cursor.

        Keyset paging on ``seq`` over indexes (:mod:`veil.access._search`): as
        fast at a million entries as at a hundred. ``action`` ending in ``.`` or
        ``*`` is a prefix (``"serve."`` matches ``serve.request``); ``since`` is
        inclusive, ``until`` exclusive.

        Returns:
            ``(entries, next_before)``: pass ``before=next_before`` for the next
            (older) page; ``None`` when there is none.
        """
        filters = Filters(
            actor=actor, action=action, dataset=dataset, outcome=outcome, since=since, until=until
        )
        with self.store.session() as session:
            return page(session.connection(), filters, before=before, limit=limit)

    def newer(
        self, *, after: int, limit: int = 50, **filters: Any
    ) -> tuple[list[TrailEntry], bool]:
        """The page of matching entries just after ``after`` (newest first), and whether more follow.

        ``filters`` as :meth:`page`'s; for a "newer" link back from an older page.
        """
        checked = Filters(**filters)
        with self.store.session() as session:
            return newer(session.connection(), checked, after=after, limit=limit)

    def signed_head(self) -> TreeHead | None:
        """The largest signed head kept in the database (None before the first)."""
        with self.store.session() as session:
            row = session.scalars(
                select(TrailHeadRow).order_by(TrailHeadRow.size.desc()).limit(1)
            ).first()
            return None if row is None else head_of(row)

    def size(self) -> int:
        """The number of entries (the trail's state; one row read)."""
        with self.store.session() as session:
            return self._size(session)

    def entry(self, seq: int) -> TrailEntry:
        with self.store.session() as session:
            row = session.get(TrailEntryRow, seq)
            if row is None:
                raise _no_entry(seq, self._size(session))
            return TrailEntry.from_body(row.body, row.leaf)

    @staticmethod
    def _size(session: Session) -> int:
        state = session.get(TrailStateRow, 1)
        return 0 if state is None else state.size

    def prove(self, seq: int, *, head: TreeHead | None = None) -> dict[str, Any]:
        """An inclusion proof document for entry ``seq`` (``veil-trail-proof/v1``).

        Against ``head`` if given, else the smallest signed head that covers the
        entry (one is signed now when none does and the trail has its key).
        :func:`veil.access.verifier.verify_inclusion_proof` checks it without Veil.
        """
        with self.store.session() as session:
            size = self._size(session)
            row = session.get(TrailEntryRow, seq)
            if row is None:
                raise _no_entry(seq, size)
            if head is None:
                stored = session.scalars(
                    select(TrailHeadRow).where(TrailHeadRow.size >= seq).order_by(TrailHeadRow.size)
                ).first()
                head = None if stored is None else head_of(stored)
            body = row.body
        if head is None:
            head = self.checkpoint() if self._signer is not None else self.head()
        if head.size < seq:
            raise InvalidInputError(
                f"trail entry {seq} is not covered by the head",
                expected=f"a head of size {seq} or more",
                got=f"a head of size {head.size}",
                fix="checkpoint the trail again (`veil trail checkpoint`) and prove against it",
            )
        path = self._range_hashes(_path_ranges(seq - 1, 0, head.size), head.size)
        return {
            "format": PROOF_FORMAT,
            "entry": {"index": seq - 1, "body": body},
            "proof": [h.hex() for h in path],
            "head": head.to_dict(),
        }

    def consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """An RFC 6962 consistency proof between the first ``old_size`` and ``new_size`` entries."""
        with self.store.session() as session:
            size = self._size(session)
            new_size = size if new_size is None else new_size
            if not 0 <= old_size <= new_size <= size:
                raise InvalidInputError(
                    "no such pair of trail sizes",
                    expected=f"0 <= old size <= new size <= {size}",
                    got=f"old size {old_size}, new size {new_size}",
                    fix="use sizes from heads of this trail",
                )
        if old_size in {0, new_size}:
            return []
        return self._range_hashes(_proof_ranges(old_size, 0, new_size), new_size)

    def _range_hashes(self, ranges: Sequence[tuple[int, int]], size: int) -> list[bytes]:
        """MTH of each of a proof's leaf ranges in the tree of ``size`` entries.

        From the kept subtree roots and at most two short runs of leaves
        (:mod:`veil.access._nodes`); roots missing from ``trail_nodes`` (a trail
        older than the table) are computed from the entries and kept.
        """
        with self.store.session() as session:
            current = self._size(session)
            if size > current:
                raise InvalidInputError(
                    "the head is larger than the trail",
                    expected=f"a head of at most {current} entries",
                    got=f"a head of size {size}",
                    fix="prove against a head of this trail (`veil trail checkpoint`)",
                )
            computed: list[dict[str, Any]] = []
            reader = TreeReader(
                session.connection(), size, level=self.node_level, write=computed.extend
            )
            hashes = reader.hashes(ranges)
        if computed:  # kept in a short write transaction of their own, after the read
            with self.store.session(lock=True) as session:
                insert_nodes(session.connection(), computed)
        return hashes

    # ------------------------------------------------------------- verification
    def verify(
        self,
        *,
        head: TreeHead | Mapping[str, Any] | None = None,
        public_key: str | None = None,
        progress: ProgressCallback | None = None,
        workers: int | None = None,
    ) -> TrailReport:
        """Check every entry, every signed head, the exported ``head``, and the ledger.

        The kept Merkle subtree roots (``trail_nodes``, which proofs are built
        from) are recomputed from the entries and compared, never trusted: one
        that disagrees is a ``node`` problem.

        A trail of ``PARALLEL_FROM`` entries or more (:mod:`veil.access._trailrows`)
        is read and checked in ranges by worker processes, one per CPU (the parent
        joins the ranges, builds the Merkle tree and checks the heads and the
        ledger); a smaller one in this process.

        Args:
            head: A head exported earlier (``veil trail checkpoint -o``): the trail
                must still contain it (same root at its size), which detects
                truncation and a wholesale rewrite.
            public_key: The key the heads must be signed with (hex); defaults to
                this trail's key, else each head's own.
            progress: Receives progress events.
            workers: Processes that check rows (``None``: one per CPU for a long
                trail, else this process alone; 1: this process alone).
        """
        started = time.perf_counter()
        exported = (
            None
            if head is None
            else (head if isinstance(head, TreeHead) else TreeHead.from_dict(head))
        )
        trusted = public_key or self.public_key
        problems: list[TrailProblem] = []
        with self.store.session() as session:
            state = session.get(TrailStateRow, 1)
            assert state is not None  # noqa: S101 - created by the migration
            stored_heads = [
                head_of(r)
                for r in session.scalars(select(TrailHeadRow).order_by(TrailHeadRow.size)).all()
            ]
            sizes = {h.size for h in stored_heads}
            if exported is not None:
                sizes.add(exported.size)
            walk = Walk(problems, keep_leaves=exported is not None)
            nodes = NodeCheck(self.node_level)  # the kept subtree roots, recomputed here
            chunks = nodes.wrap(checked_rows(self.store, session, workers))
            roots = walk.run(chunks, sorted(s for s in sizes if s > 0), progress)
            problems.extend(
                TrailProblem(k, m, seq=q) for k, m, q in nodes.problems(session.connection())
            )
            size = walk.size
            frontier_root = walk.frontier.root()
            state_agrees = state.size == size and state.chain == walk.chain
            if not state_agrees:
                problems.append(
                    TrailProblem(
                        "truncated" if state.size > size else "state",
                        f"the trail's state says {state.size} entries ending in chain "
                        f"{state.chain[:12]}..., the rows hold {size} ending in {walk.chain[:12]}...",
                        seq=min(state.size, size) + 1,
                    )
                )
            stored_frontier = Frontier.from_json(state.size, state.frontier).root()
            if state.size == size and stored_frontier != frontier_root:
                problems.append(TrailProblem("state", "the stored Merkle frontier disagrees"))
            for signed in stored_heads:
                problems.extend(check_head(signed, roots, size, trusted, "signed head"))
            ledger_events, budgets = check_ledger(session, walk)
        proof: list[bytes] = []
        if exported is not None:
            problems.extend(check_head(exported, roots, size, trusted, "exported head"))
            # (Rows past the trail's state are reported above; a proof is made only up to it.)
            contained = exported.root == roots.get(exported.size, b"").hex()
            if state_agrees and 0 < exported.size <= size and contained:
                proof = consistency_proof(walk.leaf_hashes(), exported.size, size)
                if not verify_consistency(
                    exported.size, size, bytes.fromhex(exported.root), frontier_root, proof
                ):
                    problems.append(
                        TrailProblem("consistency", "the consistency proof does not verify")
                    )
        problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
        warnings = []
        if self._signer is not None:
            # Every process with the key signs at each multiple of HEAD_EVERY; one without it
            # (a Python caller's keyless Access) does not, so a gap is a warning, not proof.
            have = {h.size for h in stored_heads}
            missing = [n for n in range(HEAD_EVERY, size + 1, HEAD_EVERY) if n not in have]
            if missing:
                sample = ", ".join(f"{n:,}" for n in missing[:3])
                warnings.append(
                    f"{len(missing):,} signed head(s) that a keyed writer would have made are "
                    f"missing (sizes {sample}{', ...' if missing[3:] else ''}): deleted, or "
                    "those entries were written without the trail's key; verify against an "
                    "exported head (--head) to be sure"
                )
        return TrailReport(
            size=size,
            root=frontier_root.hex(),
            problems=tuple(problems),
            heads_checked=len(stored_heads) + (exported is not None),
            ledger_events_checked=ledger_events,
            budgets_checked=budgets,
            seconds=time.perf_counter() - started,
            exported_head=None if exported is None else exported.to_dict(),
            consistency_proof=tuple(h.hex() for h in proof),
            warnings=tuple(warnings),
        )


def _no_entry(seq: int, size: int) -> NotFoundError:
    return NotFoundError(
        f"no trail entry {seq}",
        expected=f"an entry number from 1 to {size}" if size else "a trail with entries",
        got=str(seq),
        fix="list entries with `veil trail show`",
    )

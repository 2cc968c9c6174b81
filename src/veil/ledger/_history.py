"""Each dataset's composed history: held in memory, sealed in a checkpoint, composed on.

A charge must compose the new release onto everything the dataset has
released, and must not slow down as that history grows. So the composed
history is kept, not recomposed: in this process's memory (a :class:`Known`,
valid while the dataset's last event is the one it was composed up to) and in
a sealed checkpoint row (``ledger_checkpoints``), rewritten every
:data:`CHECKPOINT_EVERY` events. :meth:`Histories.composed` composes only the
events it has not seen, each linked to the one before by the event chain
(:mod:`veil.store.chain`). A checkpoint that fails its seal or does not match
the chain is ignored and rebuilt from the events; one sealed under the
workspace key that the events no longer match means they were rewritten, and
:class:`LedgerIntegrityError` refuses every charge until someone restores them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.errors import StoreError
from veil.ledger._codec import FORMAT, LeafKey, check_seal, decode_leaves, seal
from veil.ledger._composition import Composition
from veil.ledger._events import Mechanism, PrivacyEvent
from veil.progress import ProgressCallback, emit
from veil.store.chain import GENESIS, link
from veil.store.tables import DatasetRow, LedgerCheckpointRow, PrivacyEventRow, utcnow

__all__ = ["CHECKPOINT_EVERY", "Histories", "Known", "LedgerIntegrityError", "dp_event_of"]

log = logging.getLogger(__name__)

# A checkpoint row is rewritten every this many events (writing it costs more than composing
# one event: ~100 KB at 100,000 events); the events after it are composed when a process
# without them in memory charges.
CHECKPOINT_EVERY = 256


class LedgerIntegrityError(StoreError):
    """The ledger's events do not link up: one was edited, inserted or deleted."""


@dataclass(frozen=True)
class Known:
    """A composed history held in memory: valid while event ``seq`` still has link ``chain``."""

    seq: int
    chain: str
    state: Composition
    checkpoint_seq: int
    repaired: str | None = None


def dp_event_of(mechanisms: Sequence[dict[str, Any]]) -> Any:
    return PrivacyEvent(
        what="", mechanisms=tuple(Mechanism.from_dict(m) for m in mechanisms)
    ).dp_event


class Histories:
    """The composed histories this process holds, and the checkpoint rows they are sealed in.

    Args:
        key: Seals the checkpoints (HMAC-SHA256); ``None`` seals with a plain SHA-256.
    """

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self._known: dict[int, Known] = {}
        self._lock = threading.Lock()

    def held(self, dataset_id: int) -> Known | None:
        """The history this process holds for the dataset, current or not."""
        with self._lock:
            return self._known.get(dataset_id)

    def remember(self, updates: Mapping[int, Known]) -> None:
        """Hold these histories (call only once the transaction that wrote them committed)."""
        with self._lock:
            self._known.update(updates)

    def intervals(self) -> set[float]:
        """The PLD grids of the histories held (a new event is warmed on each)."""
        with self._lock:
            return {known.state.interval for known in self._known.values()}

    @staticmethod
    def checkpoint_due(before: Known, seq: int) -> bool:
        """Whether a charge that brings the history from ``before`` to ``seq`` rewrites the row."""
        return seq - before.checkpoint_seq >= CHECKPOINT_EVERY or bool(before.repaired)

    def composed(self, session: Session, ds: DatasetRow) -> Known:
        """The dataset's composed history up to its last event (call inside the lock to charge)."""
        last = session.execute(
            select(PrivacyEventRow.seq, PrivacyEventRow.chain)
            .where(PrivacyEventRow.dataset_id == ds.id)
            .order_by(PrivacyEventRow.seq.desc())
            .limit(1)
        ).first()
        last_seq, last_chain = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
        with self._lock:
            cached = self._known.get(ds.id)
        if cached is not None and cached.seq == last_seq and cached.chain == last_chain:
            return cached
        base, repaired = self._base(session, ds, cached, last_seq)
        known = self._compose_tail(session, ds, base, last_seq, last_chain)
        if repaired:
            log.warning("ledger checkpoint of '%s' %s; rebuilt from the events", ds.name, repaired)
            known = Known(known.seq, known.chain, known.state, known.checkpoint_seq, repaired)
        with self._lock:
            self._known[ds.id] = known
        return known

    def _base(
        self, session: Session, ds: DatasetRow, cached: Known | None, last_seq: int
    ) -> tuple[Known, str | None]:
        """The latest trustworthy composed prefix: memory, else the checkpoint, else nothing."""
        if (
            cached is not None
            and cached.seq <= last_seq
            and self._chain_at(session, ds.id, cached.seq) == cached.chain
        ):
            return cached, None
        checkpoint = self.read_checkpoint(session, ds)
        if isinstance(checkpoint, Known):
            if (
                checkpoint.seq <= last_seq
                and self._chain_at(session, ds.id, checkpoint.seq) == checkpoint.chain
            ):
                return checkpoint, None
            if self.key:
                # Sealed under the key, so it is genuine: the events were rewritten or deleted
                # under it. Rebuilding from them would lower the spend.
                raise LedgerIntegrityError(
                    f"the ledger of '{ds.name}' is damaged: its sealed checkpoint (event "
                    f"{checkpoint.seq}) does not match the events (the last is {last_seq}); "
                    "nothing was charged",
                    expected=f"event {checkpoint.seq} with chain {checkpoint.chain[:16]}...",
                    got="events edited, deleted or renumbered under the checkpoint",
                    fix=f"run `veil budget verify {ds.name}` and restore the workspace database "
                    "from a backup; report it to the data owner",
                )
            checkpoint = "does not match the events' chain"
        empty = Known(0, GENESIS, Composition(), 0)
        if checkpoint is None:
            # Before CHECKPOINT_EVERY events there is none yet; after, one should be there.
            return empty, "is missing" if last_seq >= CHECKPOINT_EVERY else None
        return empty, checkpoint

    def _chain_at(self, session: Session, dataset_id: int, seq: int) -> str | None:
        if seq == 0:
            return GENESIS
        return session.scalar(
            select(PrivacyEventRow.chain).where(
                PrivacyEventRow.dataset_id == dataset_id, PrivacyEventRow.seq == seq
            )
        )

    def _compose_tail(
        self, session: Session, ds: DatasetRow, base: Known, last_seq: int, last_chain: str
    ) -> Known:
        rows = session.execute(
            select(
                PrivacyEventRow.seq,
                PrivacyEventRow.mechanisms,
                PrivacyEventRow.chain,
                PrivacyEventRow.leaves,
            )
            .where(
                PrivacyEventRow.dataset_id == ds.id,
                PrivacyEventRow.seq > base.seq,
                # READ COMMITTED (PostgreSQL) sees charges committed since the first read.
                PrivacyEventRow.seq <= last_seq,
            )
            .order_by(PrivacyEventRow.seq)
        ).all()
        state, chain, seq = base.state, base.chain, base.seq
        for row_seq, mechanisms, stored, leaves in rows:
            expected = link(chain, row_seq, mechanisms, leaves)
            if row_seq != seq + 1 or stored != expected:
                raise LedgerIntegrityError(
                    f"the ledger of '{ds.name}' is damaged: event {row_seq} does not link to the "
                    "one before (an event was edited, inserted or deleted); nothing was charged",
                    expected=f"event {seq + 1} with chain {expected[:16]}...",
                    got=f"event {row_seq} with chain {str(stored)[:16]}...",
                    fix=f"run `veil budget verify {ds.name}` and restore the workspace database "
                    "from a backup; report it to the data owner",
                )
            event = dp_event_of(mechanisms)
            built: dict[LeafKey, Any] | None = None
            if leaves:
                try:  # covered by the link just checked: composed as stored, not built again
                    built = decode_leaves(leaves, event)
                except (ValueError, KeyError, IndexError, TypeError):
                    built = None  # unreadable: build them from the mechanisms
            state = state.add(event, stored=built)
            chain, seq = stored, row_seq
        if seq != last_seq or chain != last_chain:
            raise LedgerIntegrityError(
                f"the ledger of '{ds.name}' is damaged: its last event does not link to the rest",
                expected=f"event {last_seq} at the end of the chain",
                got=f"the chain ends at event {seq}",
                fix=f"run `veil budget verify {ds.name}`",
            )
        return Known(seq, chain, state, base.checkpoint_seq)

    def read_checkpoint(self, session: Session, ds: DatasetRow) -> Known | str | None:
        """The stored checkpoint, a reason it cannot be trusted, or ``None`` when there is none."""
        row = session.get(LedgerCheckpointRow, ds.id)
        if row is None:
            return None
        if row.format != FORMAT:
            return f"has format {row.format} (this version writes {FORMAT})"
        if not check_seal(row.state, self.key, row.seal, str(ds.id), str(row.seq), row.chain):
            return "fails its seal (edited, or sealed under another key)"
        try:
            state = Composition.from_bytes(row.state)
        except (ValueError, KeyError, TypeError) as exc:
            return f"cannot be read ({exc})"
        return Known(row.seq, row.chain, state, row.seq)

    def write_checkpoint(
        self, session: Session, ds: DatasetRow, seq: int, chain: str, state: Composition
    ) -> None:
        data = state.to_bytes()
        row = session.get(LedgerCheckpointRow, ds.id)
        if row is None:
            row = LedgerCheckpointRow(dataset_id=ds.id)
            session.add(row)
        row.seq, row.chain, row.format, row.state = seq, chain, FORMAT, data
        row.seal = seal(data, self.key, str(ds.id), str(seq), chain)
        row.updated_at = utcnow()

    def recompose(
        self, session: Session, ds: DatasetRow, progress: ProgressCallback | None = None
    ) -> tuple[int, str, Composition, list[str]]:
        """The whole history composed from scratch, built from the mechanisms (not the stored
        leaves): the number of events, the last link, the state, and the chain's problems."""
        rows = session.execute(
            select(
                PrivacyEventRow.seq,
                PrivacyEventRow.mechanisms,
                PrivacyEventRow.chain,
                PrivacyEventRow.leaves,
            )
            .where(PrivacyEventRow.dataset_id == ds.id)
            .order_by(PrivacyEventRow.seq)
        ).all()
        problems: list[str] = []
        state, chain = Composition(), GENESIS
        for expected_seq, (seq, mechanisms, stored, leaves) in enumerate(rows, start=1):
            if seq != expected_seq:
                problems.append(f"event {expected_seq} is missing (found {seq})")
            chain = link(chain, seq, mechanisms, leaves)
            if stored != chain:
                problems.append(f"event {seq} does not link to the one before")
                chain = stored
            state = state.add(dp_event_of(mechanisms))  # built from the mechanisms, not stored
            if seq % 500 == 0 or seq == len(rows):
                emit(progress, f"recompose {ds.name}", seq, len(rows), unit="events")
        return len(rows), chain, state, problems

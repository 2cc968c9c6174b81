"""The durable, per-dataset privacy ledger: every release spends budget.

Charge before release, atomically. :meth:`Ledger.charge` runs in one database
transaction that takes the dataset's budget lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``SELECT ... FOR UPDATE`` on the budget row), composes the new
release onto the dataset's composed history (:class:`Composition`), and either
refuses (nothing written) or records the event and commits. Only after the
commit returns may the caller compute and show the noisy result. A crash at
any point leaves either no event (the transaction never committed, nothing was
released) or an event whose release may never have been shown: the ledger can
over-count, never under-count.

**Why a charge does not slow down with history.** The composed history is
kept, not recomposed: in this process's memory (valid while the dataset's last
event is the one it was composed up to) and in a sealed checkpoint row
(``ledger_checkpoints``), written every :data:`CHECKPOINT_EVERY` events. A
charge composes only the events it has not seen, each linked to the one before
by the event chain (:mod:`veil.store.chain`). A checkpoint that fails its seal
or does not match the chain is ignored and rebuilt from the events
(``status().checkpoint`` says so); ``verify`` recomposes everything from
scratch and compares.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from veil.ledger._accountants import PLD_DISCRETIZATION, RDPAccountant
from veil.ledger._budget import (
    Budget,
    BudgetStatus,
    Receipt,
    check_charges,
    check_purpose,
    non_private_mechanism,
    status_of,
)
from veil.ledger._composition import (
    FORMAT,
    Composition,
    LeafKey,
    check_seal,
    decode_leaves,
    seal,
    warm,
)
from veil.ledger._events import Mechanism, PrivacyEvent, validate_event
from veil.ledger.params import check_budget_delta
from veil.progress import ProgressCallback, emit
from veil.store import Store
from veil.store.chain import GENESIS, link
from veil.store.tables import (
    BudgetChangeRow,
    DatasetRow,
    LedgerCheckpointRow,
    PrivacyBudgetRow,
    PrivacyEventRow,
    same_data_names,
    utcnow,
)
from veil.vault import KeyStore
from veil.workspace import Settings, Workspace

__all__ = ["CHECKPOINT_EVERY", "Ledger", "LedgerEntry", "LedgerIntegrityError"]

log = logging.getLogger(__name__)

# A checkpoint row is rewritten every this many events (writing it costs more than composing
# one event: ~100 KB at 100,000 events); the events after it are composed when a process
# without them in memory charges.
CHECKPOINT_EVERY = 256
# The status's RDP cross-check recomposes the history from scratch; beyond this many events
# it is left to `veil budget verify` (it costs milliseconds per event).
CROSS_CHECK_MAX_EVENTS = 2_000


class LedgerIntegrityError(StoreError):
    """The ledger's events do not link up: one was edited, inserted or deleted."""


@dataclass(frozen=True)
class _Known:
    """A composed history held in memory: valid while event ``seq`` still has link ``chain``."""

    seq: int
    chain: str
    state: Composition
    checkpoint_seq: int
    repaired: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded release, as ``veil budget history`` shows it."""

    id: int
    seq: int
    dataset: str
    created_at: datetime
    actor: str
    purpose: str
    operation: str
    what: str
    mechanisms: tuple[Mechanism, ...]
    details: dict[str, Any]
    accountant: str
    epsilon: float | None
    rho: float | None
    spent_epsilon: float | None
    spent_delta: float | None
    spent_rho: float | None

    @classmethod
    def from_row(cls, row: PrivacyEventRow, dataset: str) -> LedgerEntry:
        return cls(
            id=row.id,
            seq=row.seq,
            dataset=dataset,
            created_at=row.created_at,
            actor=row.actor,
            purpose=row.purpose,
            operation=row.operation,
            what=row.what,
            mechanisms=tuple(Mechanism.from_dict(m) for m in row.mechanisms),
            details=dict(row.details),
            accountant=row.accountant,
            epsilon=row.epsilon,
            rho=row.rho,
            spent_epsilon=row.spent_epsilon,
            spent_delta=row.spent_delta,
            spent_rho=row.spent_rho,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "release",
            "id": self.id,
            "seq": self.seq,
            "dataset": self.dataset,
            "at": self.created_at.isoformat(),
            "actor": self.actor,
            "purpose": self.purpose,
            "operation": self.operation,
            "what": self.what,
            "mechanisms": [m.to_dict() for m in self.mechanisms],
            "details": self.details,
            "accountant": self.accountant,
            "charged": {"epsilon": self.epsilon, "rho": self.rho},
            "spent_after": {
                "epsilon": self.spent_epsilon,
                "delta": self.spent_delta,
                "rho": self.spent_rho,
            },
        }


class Ledger:
    """The privacy ledger of a workspace (a :class:`~veil.ledger.BudgetGuard`).

    Args:
        store: The workspace database.
        settings: Who is acting (recorded with every change).
        key: Seals the checkpoints (HMAC-SHA256); ``Ledger.open`` takes the
            workspace's ``ledger`` key. Without one the seal is a plain SHA-256:
            it catches corruption, not a forger with write access.

    >>> from veil.store import Store
    >>> ledger = Ledger(Store.open("sqlite://", upgrade=True))
    >>> ledger.cross_check.name
    'rdp'
    """

    def __init__(
        self, store: Store, settings: Settings | None = None, *, key: bytes | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.cross_check = RDPAccountant()
        self._key = key
        self._known: dict[int, _Known] = {}
        # Per dataset name: whether this process's state was current when it last took the lock.
        self._fresh: dict[str, bool] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> Ledger:
        workspace = workspace or Workspace.locate()
        return cls(
            Store.for_workspace(workspace),
            workspace.settings,
            key=KeyStore.for_workspace(workspace).get("ledger"),
        )

    def _actor(self, actor: str | None) -> str:
        if actor:
            return actor
        return self.settings.actor if self.settings is not None else "unknown"

    # ------------------------------------------------------------ budgets
    def set_budget(
        self, dataset: str, budget: Budget, *, reason: str = "", actor: str | None = None
    ) -> BudgetStatus:
        """Give ``dataset`` a budget (or change it). The change is kept in the history."""
        who = self._actor(actor)
        with self.store.session(lock=True) as session:
            # Lock the dataset row: on PostgreSQL a first budget has no budget row to lock yet.
            ds = self._dataset(session, dataset, lock=self.store.backend != "sqlite")
            if budget.delta is not None:
                check_budget_delta(budget.delta, _privacy_units(ds))
            _refuse_shared_data(session, ds)
            row = self._budget_row(session, ds.id, lock=True)
            known = self._composed(session, ds)
            if budget.rho is not None and not math.isfinite(known.state.zcdp_rho()):
                raise InvalidInputError(
                    f"the history of '{ds.name}' holds a mechanism with no zero-concentrated DP "
                    "guarantee, so its spend cannot be stated as rho",
                    expected="a history of Gaussian, Laplace or pure-epsilon mechanisms",
                    got=f"{known.state.no_rho + known.state.non_private} release(s) without a "
                    "zCDP bound (subsampled or (epsilon, delta) mechanisms)",
                    fix="keep an (epsilon, delta) budget for this dataset",
                )
            if row is None:
                row = PrivacyBudgetRow(dataset_id=ds.id, updated_by=who)
                session.add(row)
            row.epsilon, row.delta, row.rho = budget.epsilon, budget.delta, budget.rho
            row.updated_by = who
            row.updated_at = utcnow()
            session.add(
                BudgetChangeRow(
                    dataset_id=ds.id,
                    actor=who,
                    reason=reason or "budget set",
                    epsilon=budget.epsilon,
                    delta=budget.delta,
                    rho=budget.rho,
                    changed_at=utcnow(),
                )
            )
            session.flush()
            return status_of(ds.name, budget, known.state, events=known.seq)

    def status(self, dataset: str, *, cross_check: bool = True) -> BudgetStatus:
        """The dataset's budget, what has been spent, and what remains.

        ``cross_check`` adds the RDP accountant's figure for histories of up to
        :data:`CROSS_CHECK_MAX_EVENTS` events (it recomposes from scratch).
        """
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            row = self._budget_row(session, ds.id)
            known = self._composed(session, ds)
            budget = None if row is None else _budget_of(row)
            check: dict[str, Any] = {}
            if cross_check and budget is not None and budget.rho is None and known.state.events:
                check = self._cross_check(session, ds, budget, known.state.events)
            status = status_of(ds.name, budget, known.state, events=known.seq, cross_check=check)
            if known.repaired:
                status.cross_check["checkpoint"] = known.repaired
            return status

    def _cross_check(
        self, session: Session, ds: DatasetRow, budget: Budget, events: int
    ) -> dict[str, Any]:
        assert budget.delta is not None  # noqa: S101 - an (epsilon, delta) budget
        if budget.delta == 0:
            return {}
        if events > CROSS_CHECK_MAX_EVENTS:
            return {
                "accountant": self.cross_check.name,
                "epsilon": None,
                "skipped": f"{events:,} events (more than {CROSS_CHECK_MAX_EVENTS:,}): "
                "run `veil budget verify` for the full recomposition",
            }
        history = [
            PrivacyEvent(what="", mechanisms=tuple(Mechanism.from_dict(m) for m in mechs)).dp_event
            for mechs in session.scalars(
                select(PrivacyEventRow.mechanisms)
                .where(PrivacyEventRow.dataset_id == ds.id)
                .order_by(PrivacyEventRow.seq)
            ).all()
        ]
        rdp = self.cross_check.epsilon(history, budget.delta)
        return {"accountant": self.cross_check.name, "epsilon": _finite_or_none(rdp)}

    def history(self, dataset: str) -> list[dict[str, Any]]:
        """Every release and budget change of ``dataset``, oldest first (the auditor's record)."""
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            events = session.scalars(
                select(PrivacyEventRow)
                .where(PrivacyEventRow.dataset_id == ds.id)
                .order_by(PrivacyEventRow.seq)
            ).all()
            changes = session.scalars(
                select(BudgetChangeRow)
                .where(BudgetChangeRow.dataset_id == ds.id)
                .order_by(BudgetChangeRow.id)
            ).all()
            items: list[tuple[datetime, int, dict[str, Any]]] = [
                (e.created_at, 1, LedgerEntry.from_row(e, ds.name).to_dict()) for e in events
            ]
            items += [
                (
                    c.changed_at,
                    0,
                    {
                        "type": "budget",
                        "id": c.id,
                        "dataset": ds.name,
                        "at": c.changed_at.isoformat(),
                        "actor": c.actor,
                        "reason": c.reason,
                        "budget": Budget(epsilon=c.epsilon, delta=c.delta, rho=c.rho).to_dict(),
                    },
                )
                for c in changes
            ]
            items.sort(key=lambda item: (item[0], item[1]))
            return [item[2] for item in items]

    def entries(self, dataset: str) -> list[LedgerEntry]:
        """The recorded releases of ``dataset``, oldest first."""
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            rows = session.scalars(
                select(PrivacyEventRow)
                .where(PrivacyEventRow.dataset_id == ds.id)
                .order_by(PrivacyEventRow.seq)
            ).all()
            return [LedgerEntry.from_row(r, ds.name) for r in rows]

    # ------------------------------------------------------------ charging
    def preview(self, dataset: str, event: PrivacyEvent) -> BudgetStatus:
        """What the status would be after ``event``, without charging (refuses like charge)."""
        return self.preview_many([(dataset, event)])[0]

    def preview_many(self, charges: Sequence[tuple[str, PrivacyEvent]]) -> list[BudgetStatus]:
        """The statuses after all ``charges`` in order, without charging (refuses like charge)."""
        with self.store.session() as session:
            return [c.status for c in self._check(session, charges, lock=False)[0]]

    def charge(
        self,
        dataset: str,
        event: PrivacyEvent,
        *,
        purpose: str,
        actor: str | None = None,
    ) -> Receipt:
        """Record ``event`` against ``dataset``'s budget, or refuse it (nothing recorded).

        Call this *before* computing the noisy result; release the result only
        after it returns.

        Raises:
            BudgetExceededError: The release would exceed the budget, or the
                dataset has no budget yet.
            InvalidInputError: A malformed event (negative scale, probability
                out of range, ...) or an empty purpose.
            NotFoundError: No dataset of that name.
        """
        return self.charge_many([(dataset, event)], purpose=purpose, actor=actor)[0]

    def charge_many(
        self,
        charges: Sequence[tuple[str, PrivacyEvent]],
        *,
        purpose: str,
        actor: str | None = None,
    ) -> list[Receipt]:
        """Record several charges in one transaction, or none of them.

        A release made of several charges (a DP-SGD model and its DP test
        accuracy, possibly on two datasets) is recorded whole or not at all.
        """
        purpose = check_purpose(purpose)
        who = self._actor(actor)
        # Outside the lock: compose the events other processes charged since this one last
        # looked (the lock then only covers the few charged meanwhile), and build each new
        # event's distributions on the grid of the state (cached: under the lock it only convolves).
        # (Only where this process found its state stale at its last charge: alone, it never is.)
        names = sorted({name for name, _ in charges})
        self._catch_up([n for n in names if not self._fresh.get(n, False)])
        for _, event in charges:
            validate_event(event.dp_event)  # before anything is built from it
            with self._lock:
                grids = {k.state.interval for k in self._known.values()}
            for interval in grids or {PLD_DISCRETIZATION}:
                warm(event.dp_event, interval)
        with self.store.session(lock=True) as session:
            checked, datasets, known = self._check(session, charges, lock=True)
            receipts = []
            chains = {ds_id: k.chain for ds_id, k in known.items()}
            seqs = {ds_id: k.seq for ds_id, k in known.items()}
            for item in checked:
                ds = datasets[item.dataset]
                seqs[ds.id] += 1
                mechanisms = [m.to_dict() for m in item.event.mechanisms]
                chains[ds.id] = link(chains[ds.id], seqs[ds.id], mechanisms, item.leaves)
                row = PrivacyEventRow(
                    dataset_id=ds.id,
                    seq=seqs[ds.id],
                    created_at=utcnow(),
                    actor=who,
                    purpose=purpose,
                    operation=item.event.operation,
                    what=item.event.what,
                    mechanisms=mechanisms,
                    details=dict(item.event.details),
                    accountant=item.status.accountant,
                    epsilon=item.alone.epsilon if item.alone.rho is None else None,
                    rho=item.alone.rho,
                    spent_epsilon=item.status.spent.epsilon,
                    spent_delta=item.status.spent.delta,
                    spent_rho=item.status.spent.rho,
                    chain=chains[ds.id],
                    leaves=item.leaves,
                )
                session.add(row)
                session.flush()
                receipts.append(
                    Receipt(
                        event_id=row.id,
                        seq=row.seq,
                        dataset=ds.name,
                        epsilon=item.alone.epsilon,
                        rho=item.alone.rho,
                        status=item.status,
                    )
                )
            final = {item.dataset: item.after for item in checked}
            updates = {}
            for name, state in final.items():
                ds = datasets[name]
                before = known[ds.id]
                checkpoint_seq = before.checkpoint_seq
                if seqs[ds.id] - checkpoint_seq >= CHECKPOINT_EVERY or before.repaired:
                    self._write_checkpoint(session, ds, seqs[ds.id], chains[ds.id], state)
                    checkpoint_seq = seqs[ds.id]
                updates[ds.id] = _Known(seqs[ds.id], chains[ds.id], state, checkpoint_seq)
        # Committed: only now may this process trust the new states.
        with self._lock:
            self._known.update(updates)
        return receipts

    def record_non_private(
        self,
        dataset: str,
        what: str,
        *,
        purpose: str,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Receipt:
        """Record a use of ``dataset`` *without* differential privacy (a baseline model).

        The history shows it (who, when, what, why; mechanism ``non_private``,
        epsilon infinite), but the accountant does not compose it: its output has
        no guarantee to add, and must not be released (a non-private model can
        reveal its training records). Counting it as epsilon = inf would end every
        later release; leaving it out of the history would hide that the data was
        used. Record it *before* the data is touched, like a charge.
        """
        purpose = check_purpose(purpose, non_private=True)
        who = self._actor(actor)
        mechanism = non_private_mechanism()
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset)
            budget_row = self._budget_row(session, ds.id, lock=True)
            known = self._composed(session, ds)
            budget = None if budget_row is None else _budget_of(budget_row)
            status = status_of(ds.name, budget, known.state, events=known.seq)
            seq = known.seq + 1
            mechanisms = [mechanism.to_dict()]
            chain = link(known.chain, seq, mechanisms)
            row = PrivacyEventRow(
                dataset_id=ds.id,
                seq=seq,
                created_at=utcnow(),
                actor=who,
                purpose=purpose,
                operation="non_private",
                what=what,
                mechanisms=mechanisms,
                details={**(details or {}), "private": False},
                accountant="none",
                epsilon=None,
                rho=None,
                spent_epsilon=status.spent.epsilon,
                spent_delta=status.spent.delta,
                spent_rho=status.spent.rho,
                chain=chain,
            )
            session.add(row)
            session.flush()
            # The no-op event composes to nothing; the state's event count moves on.
            state = known.state.add(mechanism.dp_event)
            update = _Known(seq, chain, state, known.checkpoint_seq)
            receipt = Receipt(
                event_id=row.id, seq=seq, dataset=ds.name, epsilon=None, rho=None, status=status
            )
        with self._lock:
            self._known[ds.id] = update
        return receipt

    # ------------------------------------------------------------ verification
    def verify(  # noqa: C901 - one pass over the history, then the comparisons
        self, dataset: str, *, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Recompose ``dataset``'s whole history from scratch and compare (the auditor's check).

        Walks the event chain from the first event, recomposes every event, and
        compares the result with the checkpoint and with what the incremental
        path computes now. A broken chain or a checkpoint that disagrees is
        reported (and the checkpoint rewritten from the events).
        """
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset, lock=self.store.backend != "sqlite")
            budget_row = self._budget_row(session, ds.id, lock=True)
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
                state = state.add(_dp_event(mechanisms))  # built from the mechanisms, not stored
                if seq % 500 == 0 or seq == len(rows):
                    emit(progress, f"recompose {ds.name}", seq, len(rows), unit="events")
            checkpoint = self._read_checkpoint(session, ds)
            checkpoint_note = "none"
            if checkpoint is not None:
                checkpoint_note = "valid"
                if isinstance(checkpoint, str):
                    problems.append(f"checkpoint: {checkpoint}")
                    checkpoint_note = "invalid"
            budget = None if budget_row is None else _budget_of(budget_row)
            scratch = status_of(ds.name, budget, state, events=len(rows))
            try:
                incremental = self._composed(session, ds)
            except LedgerIntegrityError as exc:
                problems.append(f"the incremental path refuses to charge: {exc.message}")
                current = None
            else:
                current = status_of(ds.name, budget, incremental.state, events=incremental.seq)
            if current is not None and scratch.spent != current.spent:
                problems.append(
                    f"incremental spend {current.spent.to_dict()} differs from the recomposition "
                    f"{scratch.spent.to_dict()}"
                )
            if not problems or all(p.startswith("checkpoint") for p in problems):
                self._write_checkpoint(session, ds, len(rows), chain, state)
                with self._lock:
                    self._known[ds.id] = _Known(len(rows), chain, state, len(rows))
            return {
                "dataset": ds.name,
                "events": len(rows),
                "chain": "intact"
                if not any("link" in p or "missing" in p for p in problems)
                else "broken",
                "checkpoint": checkpoint_note,
                "spent": scratch.spent.to_dict(),
                "incremental": None if current is None else current.spent.to_dict(),
                "problems": problems,
                "ok": not problems,
            }

    # ------------------------------------------------------------ internals
    def _catch_up(self, names: Sequence[str]) -> None:
        """Bring this process's composed histories up to date, without the lock (best effort)."""
        if not names:
            return
        try:
            with self.store.session() as session:
                for name in names:
                    ds = session.scalar(select(DatasetRow).where(DatasetRow.name == name))
                    if ds is not None:
                        self._composed(session, ds)
        except LedgerIntegrityError:
            pass  # the locked path reports it, and refuses the charge

    def _check(
        self, session: Session, charges: Sequence[tuple[str, PrivacyEvent]], *, lock: bool
    ) -> tuple[list[Any], dict[str, DatasetRow], dict[int, _Known]]:
        if not charges:
            raise InvalidInputError("nothing to charge", expected="at least one charge", got="none")
        datasets: dict[str, DatasetRow] = {}
        budgets: dict[str, Budget | None] = {}
        known: dict[int, _Known] = {}
        # Lock in a fixed order (by name), so two multi-dataset charges cannot deadlock.
        for name in sorted({name for name, _ in charges}):
            ds = self._dataset(session, name)
            row = self._budget_row(session, ds.id, lock=lock)
            datasets[name] = ds
            budgets[name] = None if row is None else _budget_of(row)
            with self._lock:
                held = self._known.get(ds.id)
            known[ds.id] = self._composed(session, ds)
            self._fresh[name] = known[ds.id] is held
        checked = check_charges(
            charges,
            budgets=budgets,
            units={name: _privacy_units(ds) for name, ds in datasets.items()},
            compositions={name: known[ds.id].state for name, ds in datasets.items()},
            event_counts={name: known[ds.id].seq for name, ds in datasets.items()},
        )
        return checked, datasets, known

    def _composed(self, session: Session, ds: DatasetRow) -> _Known:
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
            known = _Known(known.seq, known.chain, known.state, known.checkpoint_seq, repaired)
        with self._lock:
            self._known[ds.id] = known
        return known

    def _base(
        self, session: Session, ds: DatasetRow, cached: _Known | None, last_seq: int
    ) -> tuple[_Known, str | None]:
        """The latest trustworthy composed prefix: memory, else the checkpoint, else nothing."""
        if (
            cached is not None
            and cached.seq <= last_seq
            and self._chain_at(session, ds.id, cached.seq) == cached.chain
        ):
            return cached, None
        checkpoint = self._read_checkpoint(session, ds)
        if isinstance(checkpoint, _Known):
            if (
                checkpoint.seq <= last_seq
                and self._chain_at(session, ds.id, checkpoint.seq) == checkpoint.chain
            ):
                return checkpoint, None
            if self._key:
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
        empty = _Known(0, GENESIS, Composition(), 0)
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
        self, session: Session, ds: DatasetRow, base: _Known, last_seq: int, last_chain: str
    ) -> _Known:
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
            event = _dp_event(mechanisms)
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
        return _Known(seq, chain, state, base.checkpoint_seq)

    def _read_checkpoint(self, session: Session, ds: DatasetRow) -> _Known | str | None:
        """The stored checkpoint, a reason it cannot be trusted, or ``None`` when there is none."""
        row = session.get(LedgerCheckpointRow, ds.id)
        if row is None:
            return None
        if row.format != FORMAT:
            return f"has format {row.format} (this version writes {FORMAT})"
        if not check_seal(row.state, self._key, row.seal, str(ds.id), str(row.seq), row.chain):
            return "fails its seal (edited, or sealed under another key)"
        try:
            state = Composition.from_bytes(row.state)
        except (ValueError, KeyError, TypeError) as exc:
            return f"cannot be read ({exc})"
        return _Known(row.seq, row.chain, state, row.seq)

    def _write_checkpoint(
        self, session: Session, ds: DatasetRow, seq: int, chain: str, state: Composition
    ) -> None:
        data = state.to_bytes()
        row = session.get(LedgerCheckpointRow, ds.id)
        if row is None:
            row = LedgerCheckpointRow(dataset_id=ds.id)
            session.add(row)
        row.seq, row.chain, row.format, row.state = seq, chain, FORMAT, data
        row.seal = seal(data, self._key, str(ds.id), str(seq), chain)
        row.updated_at = utcnow()

    @staticmethod
    def _dataset(session: Session, name: str, *, lock: bool = False) -> DatasetRow:
        query = select(DatasetRow).where(DatasetRow.name == name)
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            known = sorted(session.scalars(select(DatasetRow.name)).all())
            raise NotFoundError(
                f"no dataset named '{name}'",
                expected="a registered dataset",
                got=repr(name),
                fix=f"register it with `veil datasets add` (known: {', '.join(known) or 'none'})",
            )
        return row

    def _budget_row(
        self, session: Session, dataset_id: int, *, lock: bool = False
    ) -> PrivacyBudgetRow | None:
        query = select(PrivacyBudgetRow).where(PrivacyBudgetRow.dataset_id == dataset_id)
        if lock and self.store.backend != "sqlite":
            query = query.with_for_update()  # SQLite holds the database write lock already
        return session.scalar(query)


def _dp_event(mechanisms: Sequence[dict[str, Any]]) -> Any:
    return PrivacyEvent(
        what="", mechanisms=tuple(Mechanism.from_dict(m) for m in mechanisms)
    ).dp_event


def _refuse_shared_data(session: Session, ds: DatasetRow) -> None:
    """A budget follows the data: none for a registration whose bytes another one holds."""
    others = same_data_names(session, ds.content_sha256, exclude=ds.name)
    if others:
        raise ConflictError(
            f"the same data as '{ds.name}' is also registered as {', '.join(others)}: a budget "
            "for one name would leave the other a second, fresh budget",
            expected="one registration per data file (identical SHA-256)",
            got=f"SHA-256 {ds.content_sha256[:16]}... under {len(others) + 1} names",
            fix=f"remove the extra registration with `veil datasets remove {others[0]}` and set "
            f"the budget on '{ds.name}'",
            details={"dataset": ds.name, "same_data": others},
        )


def _privacy_units(ds: DatasetRow) -> int:
    """How many people (privacy units) the dataset holds, as counted at registration."""
    units = (ds.registration_report or {}).get("privacy_units", ds.n_rows)
    return max(1, int(units if isinstance(units, int) and units > 0 else ds.n_rows or 1))


def _budget_of(row: PrivacyBudgetRow) -> Budget:
    return Budget(epsilon=row.epsilon, delta=row.delta, rho=row.rho)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value

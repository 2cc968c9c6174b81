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
kept, not recomposed (:mod:`veil.ledger._history`): a charge composes only
the events this process has not seen, from memory or from a sealed
checkpoint; ``verify`` recomposes everything from scratch and compares.

**Who may.** Every method checks the acting principal's role first
(:class:`veil.access.Access`: ``budget.set`` to set a budget, ``budget.spend``
to charge, ``dataset.non_private`` for a baseline, ``ledger.read`` to read),
and every budget change and charge is appended to the trail in the same
transaction, with the event's id and chain value, so that ``veil trail
verify`` finds an event deleted, edited or inserted in the database. The
actor recorded is the principal: there is no ``actor=`` argument to claim
another.

The module runs to about 750 lines because :class:`Ledger` is one protocol:
budgets, charges, non-private records and verification share the same locked
transaction and the same held histories, and read best side by side.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.access import Access, Outcome, Permission
from veil.errors import BudgetExceededError, ConflictError, InvalidInputError, NotFoundError
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
from veil.ledger._burndown import (
    SHARED_CURVES,
    BurnDown,
    burndown,
    check_points,
    history_curve,
)
from veil.ledger._composition import warm
from veil.ledger._entry import LedgerEntry, merged_history
from veil.ledger._events import PrivacyEvent, validate_event
from veil.ledger._history import Histories, Known, LedgerIntegrityError
from veil.ledger._views import ReleasePage, normalised_filters, release_page
from veil.ledger.params import check_budget_delta
from veil.progress import ProgressCallback
from veil.store import Store
from veil.store.chain import link
from veil.store.tables import (
    BudgetChangeRow,
    DatasetRow,
    PrivacyBudgetRow,
    PrivacyEventRow,
    same_data_names,
    utcnow,
)
from veil.vault import KeyStore
from veil.workspace import Settings, Workspace

__all__ = ["Ledger"]

log = logging.getLogger(__name__)


class Ledger:
    """The privacy ledger of a workspace (a :class:`~veil.ledger.BudgetGuard`).

    Args:
        store: The workspace database.
        settings: The workspace's settings (who acts, when ``access`` is omitted).
        key: Seals the checkpoints (HMAC-SHA256); ``Ledger.open`` takes the
            workspace's ``ledger`` key. Without one the seal is a plain SHA-256:
            it catches corruption, not a forger with write access.
        access: The acting principal's role checks and trail
            (``Access(store, settings=settings)`` if omitted; ``Ledger.open``
            uses the workspace's, whose trail heads are signed).

    >>> from veil.store import Store
    >>> ledger = Ledger(Store.open("sqlite://", upgrade=True))
    >>> ledger.cross_check.name
    'rdp'
    """

    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        *,
        key: bytes | None = None,
        access: Access | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.access = access or Access(store, settings=settings)
        self.cross_check = RDPAccountant()
        self._histories = Histories(key)
        # Per dataset name: whether this process's state was current when it last took the lock.
        self._fresh: dict[str, bool] = {}
        # RDP curves of complete buckets of releases (the status's cross-check, the burn-down).
        self._curves = SHARED_CURVES

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> Ledger:
        workspace = workspace or Workspace.locate()
        store = Store.for_workspace(workspace)
        return cls(
            store,
            workspace.settings,
            key=KeyStore.for_workspace(workspace).get("ledger"),
            access=Access.open(workspace, store=store),
        )

    # ------------------------------------------------------------ budgets
    def set_budget(self, dataset: str, budget: Budget, *, reason: str = "") -> BudgetStatus:
        """Give ``dataset`` a budget (or change it). The change is kept in the history.

        Needs ``budget.set`` on the dataset (owners). A first budget may go
        without a reason; changing one needs a reason, kept with the change.

        Raises:
            PermissionDeniedError: The acting principal is not an owner of the dataset.
            InvalidInputError: A change without a reason, or a budget the
                history cannot be stated in.
        """
        who = self.access.require(
            Permission.BUDGET_SET, dataset, action="budget.set", purpose=reason
        ).name
        with self.store.session(lock=True) as session:
            # Lock the dataset row: on PostgreSQL a first budget has no budget row to lock yet.
            ds = self._dataset(session, dataset, lock=self.store.backend != "sqlite")
            if budget.delta is not None:
                check_budget_delta(budget.delta, _privacy_units(ds))
            _refuse_shared_data(session, ds)
            row = self._budget_row(session, ds.id, lock=True)
            known = self._histories.composed(session, ds)
            if budget.rho is not None and not math.isfinite(known.state.zcdp_rho()):
                raise InvalidInputError(
                    f"the history of '{ds.name}' holds a mechanism with no zero-concentrated DP "
                    "guarantee, so its spend cannot be stated as rho",
                    expected="a history of Gaussian, Laplace or pure-epsilon mechanisms",
                    got=f"{known.state.no_rho + known.state.non_private} release(s) without a "
                    "zCDP bound (subsampled or (epsilon, delta) mechanisms)",
                    fix="keep an (epsilon, delta) budget for this dataset",
                )
            first = row is None
            if row is None:
                row = PrivacyBudgetRow(dataset_id=ds.id, updated_by=who)
                session.add(row)
            elif not reason.strip():
                raise InvalidInputError(
                    f"changing the budget of '{ds.name}' needs a reason",
                    expected="a reason, kept with the change for the auditor",
                    got="none",
                    fix='give one, e.g. --reason "approved by the DPO, ticket 123"',
                )
            previous = {"epsilon": row.epsilon, "delta": row.delta, "rho": row.rho}
            row.epsilon, row.delta, row.rho = budget.epsilon, budget.delta, budget.rho
            row.updated_by = who
            row.updated_at = utcnow()
            change = BudgetChangeRow(
                dataset_id=ds.id,
                actor=who,
                reason=reason or "budget set",
                epsilon=budget.epsilon,
                delta=budget.delta,
                rho=budget.rho,
                changed_at=utcnow(),
            )
            session.add(change)
            session.flush()
            self.access.append(
                session,
                "budget.set",
                dataset=ds.name,
                purpose=reason or "budget set",
                links={
                    "dataset_id": ds.id,
                    "budget_change": change.id,
                    "content_sha256": ds.content_sha256,
                },
                details={
                    "budget": {"epsilon": row.epsilon, "delta": row.delta, "rho": row.rho},
                    "previous": None if first else previous,
                },
            )
            return status_of(ds.name, budget, known.state, events=known.seq)

    def status(self, dataset: str, *, cross_check: bool = True) -> BudgetStatus:
        """The dataset's budget, what has been spent, and what remains.

        ``cross_check`` adds the RDP accountant's figure for the whole history
        (RDP curves add: one grouped query, one curve per distinct mechanism
        set, cached per process by the last event).
        """
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            row = self._budget_row(session, ds.id)
            known = self._histories.composed(session, ds)
            budget = None if row is None else _budget_of(row)
            check: dict[str, Any] = {}
            if cross_check and budget is not None and budget.rho is None and known.state.events:
                check = self._cross_check(session, ds, budget, known)
            status = status_of(ds.name, budget, known.state, events=known.seq, cross_check=check)
            if known.repaired:
                status.cross_check["checkpoint"] = known.repaired
            return status

    def _cross_check(
        self, session: Session, ds: DatasetRow, budget: Budget, known: Known
    ) -> dict[str, Any]:
        assert budget.delta is not None  # noqa: S101 - an (epsilon, delta) budget
        if budget.delta == 0:
            return {}
        # RDP curves add: buckets of releases grouped by mechanism set in SQL, kept once complete.
        rdp = history_curve(session, ds, known.seq, self._curves).epsilon(budget.delta)
        return {"accountant": self.cross_check.name, "epsilon": _finite_or_none(rdp)}

    def history(self, dataset: str) -> list[dict[str, Any]]:
        """Every release and budget change of ``dataset``, oldest first (the auditor's record)."""
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
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
            history = merged_history(ds.name, events, changes)
        if self.access.allows(Permission.CONSENT_READ, dataset):
            return history
        return [
            {**item, "details": _consent_counts_hidden(item["details"])}
            if isinstance(item.get("details"), dict)
            else item
            for item in history
        ]

    def budget_changes(self, dataset: str) -> list[dict[str, Any]]:
        """Every budget change of ``dataset``, oldest first (shaped as in :meth:`history`)."""
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            changes = session.scalars(
                select(BudgetChangeRow)
                .where(BudgetChangeRow.dataset_id == ds.id)
                .order_by(BudgetChangeRow.id)
            ).all()
            return merged_history(ds.name, [], changes)

    def releases(
        self,
        dataset: str,
        *,
        actor: str | None = None,
        purpose: str | None = None,
        operation: str | None = None,
        mechanism: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> ReleasePage:
        """One page of ``dataset``'s releases, read in the database (keyset on ``seq``).

        ``after=seq``: the releases after it, oldest first; ``before=seq``: those
        before it, newest first; neither: the newest page. Filters: ``actor`` and
        ``operation`` exact, ``purpose`` a case-insensitive substring,
        ``mechanism`` a mechanism's name (matched in the stored JSON),
        ``since <= created_at < until``. Consent counts are hidden from a
        principal without ``consent.read``, as in :meth:`entries`.
        """
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
        filters = normalised_filters(
            actor=actor,
            purpose=purpose,
            operation=operation,
            mechanism=mechanism,
            since=since,
            until=until,
        )
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            page = release_page(session, ds, filters, after=after, before=before, limit=limit)
        if self.access.allows(Permission.CONSENT_READ, dataset):
            return page
        hidden = [replace(e, details=_consent_counts_hidden(e.details)) for e in page.items]
        return replace(page, items=hidden)

    def burndown(self, dataset: str, *, points: int = 200) -> BurnDown:
        """``dataset``'s budget over time: about ``points`` releases (the first and the last
        always), each with the PLD spend stored when it was charged and the RDP
        cross-check's epsilon at the current budget's delta (exact at each point), and
        every budget change."""
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
        points = check_points(points)
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            row = self._budget_row(session, ds.id)
            budget = None if row is None else _budget_of(row)
            last = session.scalar(
                select(PrivacyEventRow.seq)
                .where(PrivacyEventRow.dataset_id == ds.id)
                .order_by(PrivacyEventRow.seq.desc())
                .limit(1)
            )
            last_seq = 0 if last is None else int(last)
            return burndown(
                session,
                ds,
                budget=budget,
                last_seq=last_seq,
                points=points,
                cache=self._curves,
            )

    def entries(self, dataset: str) -> list[LedgerEntry]:
        """The recorded releases of ``dataset``, oldest first."""
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.read")
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            rows = session.scalars(
                select(PrivacyEventRow)
                .where(PrivacyEventRow.dataset_id == ds.id)
                .order_by(PrivacyEventRow.seq)
            ).all()
            entries = [LedgerEntry.from_row(r, ds.name) for r in rows]
        if self.access.allows(Permission.CONSENT_READ, dataset):
            return entries
        return [replace(e, details=_consent_counts_hidden(e.details)) for e in entries]

    # ------------------------------------------------------------ charging
    def preview(self, dataset: str, event: PrivacyEvent) -> BudgetStatus:
        """What the status would be after ``event``, without charging (refuses like charge)."""
        return self.preview_many([(dataset, event)])[0]

    def preview_many(self, charges: Sequence[tuple[str, PrivacyEvent]]) -> list[BudgetStatus]:
        """The statuses after all ``charges`` in order, without charging (refuses like charge)."""
        for name in sorted({name for name, _ in charges}):
            self.access.require(Permission.BUDGET_SPEND, name, action="privacy.preview")
        with self.store.session() as session:
            return [c.status for c in self._check(session, charges, lock=False)[0]]

    def charge(
        self,
        dataset: str,
        event: PrivacyEvent,
        *,
        purpose: str,
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
            PermissionDeniedError: The acting principal may not spend this
                dataset's budget (analysts and owners may).
        """
        return self.charge_many([(dataset, event)], purpose=purpose)[0]

    def charge_many(
        self,
        charges: Sequence[tuple[str, PrivacyEvent]],
        *,
        purpose: str,
    ) -> list[Receipt]:
        """Record several charges in one transaction, or none of them.

        A release made of several charges (a DP-SGD model and its DP test
        accuracy, possibly on two datasets) is recorded whole or not at all.
        Each charge is appended to the trail in the same transaction; a charge
        refused for want of budget is recorded as refused.
        """
        purpose = check_purpose(purpose)
        names = sorted({name for name, _ in charges})
        for name in names:
            self.access.require(
                Permission.BUDGET_SPEND, name, action="privacy.charge", purpose=purpose
            )
        who = self.access.principal.name
        # Outside the lock: compose the events other processes charged since this one last
        # looked (the lock then only covers the few charged meanwhile), and build each new
        # event's distributions on the grid of the state (cached: under the lock it only convolves).
        # (Only where this process found its state stale at its last charge: alone, it never is.)
        self._catch_up([n for n in names if not self._fresh.get(n, False)])
        for _, event in charges:
            validate_event(event.dp_event)  # before anything is built from it
            for interval in self._histories.intervals() or {PLD_DISCRETIZATION}:
                warm(event.dp_event, interval)
        try:
            receipts, updates = self._charge_locked(charges, purpose, who)
        except BudgetExceededError as exc:
            for name in names:
                self.access.record(
                    "privacy.charge",
                    dataset=name,
                    purpose=purpose,
                    outcome=Outcome.REFUSED,
                    details={"reason": exc.code, "message": exc.message},
                )
            raise
        # Committed: only now may this process trust the new states.
        self._histories.remember(updates)
        return receipts

    def _charge_locked(
        self, charges: Sequence[tuple[str, PrivacyEvent]], purpose: str, who: str
    ) -> tuple[list[Receipt], dict[int, Known]]:
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
                self.access.append(
                    session,
                    "privacy.charge",
                    dataset=ds.name,
                    purpose=purpose,
                    links=_event_links(ds, row),
                    details={
                        "operation": row.operation,
                        "what": row.what,
                        "epsilon": row.epsilon,
                        "rho": row.rho,
                        "spent_epsilon": row.spent_epsilon,
                        "details": row.details,
                    },
                )
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
                if self._histories.checkpoint_due(before, seqs[ds.id]):
                    self._histories.write_checkpoint(session, ds, seqs[ds.id], chains[ds.id], state)
                    checkpoint_seq = seqs[ds.id]
                updates[ds.id] = Known(seqs[ds.id], chains[ds.id], state, checkpoint_seq)
        return receipts, updates

    def record_non_private(
        self,
        dataset: str,
        what: str,
        *,
        purpose: str,
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
        who = self.access.require(
            Permission.NON_PRIVATE_USE, dataset, action="privacy.non_private", purpose=purpose
        ).name
        mechanism = non_private_mechanism()
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset)
            budget_row = self._budget_row(session, ds.id, lock=True)
            known = self._histories.composed(session, ds)
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
            self.access.append(
                session,
                "privacy.non_private",
                dataset=ds.name,
                purpose=purpose,
                links=_event_links(ds, row),
                details={"what": what, "details": row.details},
            )
            # The no-op event composes to nothing; the state's event count moves on.
            state = known.state.add(mechanism.dp_event)
            update = Known(seq, chain, state, known.checkpoint_seq)
            receipt = Receipt(
                event_id=row.id, seq=seq, dataset=ds.name, epsilon=None, rho=None, status=status
            )
        self._histories.remember({ds.id: update})
        return receipt

    # ------------------------------------------------------------ verification
    def verify(self, dataset: str, *, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Recompose ``dataset``'s whole history from scratch and compare (the auditor's check).

        Walks the event chain from the first event, recomposes every event, and
        compares the result with the checkpoint and with what the incremental
        path computes now. A broken chain or a checkpoint that disagrees is
        reported (and the checkpoint rewritten from the events).
        """
        self.access.require(Permission.LEDGER_READ, dataset, action="ledger.verify")
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset, lock=self.store.backend != "sqlite")
            budget_row = self._budget_row(session, ds.id, lock=True)
            events, chain, state, problems = self._histories.recompose(session, ds, progress)
            checkpoint = self._histories.read_checkpoint(session, ds)
            checkpoint_note = "none"
            if checkpoint is not None:
                checkpoint_note = "valid"
                if isinstance(checkpoint, str):
                    problems.append(f"checkpoint: {checkpoint}")
                    checkpoint_note = "invalid"
            budget = None if budget_row is None else _budget_of(budget_row)
            scratch = status_of(ds.name, budget, state, events=events)
            try:
                incremental = self._histories.composed(session, ds)
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
                self._histories.write_checkpoint(session, ds, events, chain, state)
                self._histories.remember({ds.id: Known(events, chain, state, events)})
            return {
                "dataset": ds.name,
                "events": events,
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
                        self._histories.composed(session, ds)
        except LedgerIntegrityError:
            pass  # the locked path reports it, and refuses the charge

    def _check(
        self, session: Session, charges: Sequence[tuple[str, PrivacyEvent]], *, lock: bool
    ) -> tuple[list[Any], dict[str, DatasetRow], dict[int, Known]]:
        if not charges:
            raise InvalidInputError("nothing to charge", expected="at least one charge", got="none")
        datasets: dict[str, DatasetRow] = {}
        budgets: dict[str, Budget | None] = {}
        known: dict[int, Known] = {}
        # Lock in a fixed order (by name), so two multi-dataset charges cannot deadlock.
        for name in sorted({name for name, _ in charges}):
            ds = self._dataset(session, name)
            row = self._budget_row(session, ds.id, lock=lock)
            datasets[name] = ds
            budgets[name] = None if row is None else _budget_of(row)
            held = self._histories.held(ds.id)
            known[ds.id] = self._histories.composed(session, ds)
            self._fresh[name] = known[ds.id] is held
        checked = check_charges(
            charges,
            budgets=budgets,
            units={name: _privacy_units(ds) for name, ds in datasets.items()},
            compositions={name: known[ds.id].state for name, ds in datasets.items()},
            event_counts={name: known[ds.id].seq for name, ds in datasets.items()},
        )
        return checked, datasets, known

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


def _event_links(ds: DatasetRow, row: PrivacyEventRow) -> dict[str, Any]:
    """What a trail entry links for a privacy event: enough to find it edited or deleted."""
    return {
        "dataset_id": ds.id,
        "content_sha256": ds.content_sha256,
        "ledger_event": row.id,
        "ledger_seq": row.seq,
        "ledger_chain": row.chain,
    }


def _privacy_units(ds: DatasetRow) -> int:
    """How many people (privacy units) the dataset holds, as counted at registration."""
    units = (ds.registration_report or {}).get("privacy_units", ds.n_rows)
    return max(1, int(units if isinstance(units, int) and units > 0 else ds.n_rows or 1))


def _budget_of(row: PrivacyBudgetRow) -> Budget:
    return Budget(epsilon=row.epsilon, delta=row.delta, rho=row.rho)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _consent_counts_hidden(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` without the consent filter's exact counts (they need ``consent.read``).

    How many persons and rows a release left out is consent state: an analyst who
    may read the ledger but not consent would learn, from the counts, how many rows
    one person who withdrew held. The snapshot's other fields (purpose, the last
    record applied, the time) stay: they say which consent state was used.
    """
    consent = details.get("consent")
    if not isinstance(consent, dict):
        return details
    hidden = {k: None for k in ("persons_excluded", "rows_excluded") if k in consent}
    if not hidden:
        return details
    return {**details, "consent": {**consent, **hidden, "counts": "hidden: needs consent.read"}}

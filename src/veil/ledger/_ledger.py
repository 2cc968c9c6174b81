"""The durable, per-dataset privacy ledger: every release spends budget.

Charge before release, atomically. :meth:`Ledger.charge` runs in one database
transaction that takes the dataset's budget lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``SELECT ... FOR UPDATE`` on the budget row), reads the dataset's
history, composes it with the new release through the accountant, and either
refuses (nothing written) or records the event and commits. Only after the
commit returns may the caller compute and show the noisy result. A crash at
any point leaves either no event (the transaction never committed, nothing was
released) or an event whose release may never have been shown: the ledger can
over-count, never under-count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dp_accounting import dp_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil.errors import BudgetExceededError, InvalidInputError, NotFoundError
from veil.ledger._accountants import PLDAccountant, RDPAccountant, zcdp_rho
from veil.ledger._events import Mechanism, PrivacyEvent
from veil.ledger._params import (
    MAX_RELEASE_EPSILON,
    check_budget_delta,
    check_delta,
    check_epsilon,
    check_rho,
)
from veil.store import Store
from veil.store._tables import (
    BudgetChangeRow,
    DatasetRow,
    PrivacyBudgetRow,
    PrivacyEventRow,
    utcnow,
)
from veil.workspace import Settings, Workspace

__all__ = ["Budget", "BudgetStatus", "Ledger", "LedgerEntry", "Receipt"]

# Float slack when comparing a composed epsilon with the budget (the PLD is already pessimistic).
_SLACK = 1e-9


@dataclass(frozen=True)
class Budget:
    """A dataset's privacy budget: ``(epsilon, delta)`` or zero-concentrated ``rho``."""

    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None

    def __post_init__(self) -> None:
        if self.rho is not None:
            if self.epsilon is not None or self.delta is not None:
                raise InvalidInputError(
                    "a budget is either (epsilon, delta) or rho, not both",
                    expected="--epsilon [--delta] or --rho",
                    got=f"epsilon={self.epsilon}, delta={self.delta}, rho={self.rho}",
                    fix="choose one accounting: (epsilon, delta)-DP or zCDP",
                )
            object.__setattr__(self, "rho", check_rho(self.rho))
            return
        if self.epsilon is None:
            raise InvalidInputError(
                "a budget needs epsilon (with delta) or rho",
                expected="--epsilon E [--delta D] or --rho R",
                got="neither",
                fix="for example: veil budget set adult --epsilon 3 --delta 1e-6",
            )
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(self, "delta", check_delta(0.0 if self.delta is None else self.delta))

    @property
    def kind(self) -> str:
        return "zcdp" if self.rho is not None else "approx_dp"

    def to_dict(self) -> dict[str, Any]:
        if self.rho is not None:
            return {"kind": "zcdp", "rho": self.rho}
        return {"kind": "approx_dp", "epsilon": self.epsilon, "delta": self.delta}

    def __str__(self) -> str:
        if self.rho is not None:
            return f"rho={self.rho:g} (zCDP)"
        return f"epsilon={self.epsilon:g}, delta={self.delta:g}"


@dataclass(frozen=True)
class Spent:
    """What a history of events costs, in the budget's own terms."""

    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.rho is not None:
            return {"rho": self.rho}
        return {"epsilon": _finite_or_none(self.epsilon), "delta": self.delta}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class BudgetStatus:
    """A dataset's budget, what its releases have spent, and what remains."""

    dataset: str
    budget: Budget | None
    spent: Spent
    events: int
    accountant: str
    cross_check: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> float | None:
        """Remaining epsilon (at the budget's delta) or rho; ``None`` without a budget."""
        if self.budget is None:
            return None
        if self.budget.rho is not None:
            return max(0.0, self.budget.rho - (self.spent.rho or 0.0))
        assert self.budget.epsilon is not None  # noqa: S101 - Budget guarantees it
        return max(0.0, self.budget.epsilon - (self.spent.epsilon or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "spent": self.spent.to_dict(),
            "remaining": self.remaining,
            "events": self.events,
            "accountant": self.accountant,
            "cross_check": self.cross_check,
        }


@dataclass(frozen=True)
class Receipt:
    """Proof that a release was charged: give it back with the result."""

    event_id: int
    seq: int
    dataset: str
    epsilon: float | None
    rho: float | None
    status: BudgetStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "dataset": self.dataset,
            "charged": {"epsilon": _finite_or_none(self.epsilon), "rho": self.rho},
            "budget": self.status.to_dict(),
        }


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
    """The privacy ledger of a workspace.

    >>> from veil.store import Store
    >>> ledger = Ledger(Store.open("sqlite://", upgrade=True))
    >>> ledger.accountant.name
    'pld'
    """

    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings
        self.accountant = PLDAccountant()
        self.cross_check = RDPAccountant()

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> Ledger:
        workspace = workspace or Workspace.locate()
        return cls(Store.for_workspace(workspace), workspace.settings)

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
            row = self._budget_row(session, ds.id, lock=True)
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
            return self._status(session, ds, row)

    def status(self, dataset: str) -> BudgetStatus:
        """The dataset's budget, what has been spent, and what remains."""
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            return self._status(session, ds, self._budget_row(session, ds.id), cross_check=True)

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
        with self.store.session() as session:
            ds = self._dataset(session, dataset)
            budget_row = self._require_budget(session, ds)
            history = self._history_events(session, ds.id)
            _, status = self._check(ds, budget_row, history, event)
            return status

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
            NotFoundError: No dataset of that name.
        """
        if not purpose or not purpose.strip():
            raise InvalidInputError(
                "a release needs a purpose",
                expected="a short statement of why the data is used",
                got=repr(purpose),
                fix='pass --purpose "monthly cohort report" (it is recorded for the auditor)',
            )
        who = self._actor(actor)
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset)
            budget_row = self._require_budget(session, ds, lock=True)
            history = self._history_events(session, ds.id)
            alone, status = self._check(ds, budget_row, history, event)
            seq = self._next_seq(session, ds.id)
            row = PrivacyEventRow(
                dataset_id=ds.id,
                seq=seq,
                created_at=utcnow(),
                actor=who,
                purpose=purpose.strip(),
                operation=event.operation,
                what=event.what,
                mechanisms=[m.to_dict() for m in event.mechanisms],
                details=dict(event.details),
                accountant=status.accountant,
                epsilon=alone.epsilon if alone.rho is None else None,
                rho=alone.rho,
                spent_epsilon=status.spent.epsilon,
                spent_delta=status.spent.delta,
                spent_rho=status.spent.rho,
            )
            session.add(row)
            session.flush()
            return Receipt(
                event_id=row.id,
                seq=seq,
                dataset=ds.name,
                epsilon=alone.epsilon,
                rho=alone.rho,
                status=status,
            )

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
        if not purpose or not purpose.strip():
            raise InvalidInputError(
                "a non-private use needs a purpose",
                expected="a short statement of why the data is used without privacy",
                got=repr(purpose),
                fix='pass --purpose "non-private baseline for the DP model" (it is recorded)',
            )
        who = self._actor(actor)
        mechanism = Mechanism(
            "non_private",
            {"epsilon": "inf", "note": "NOT PRIVATE: no noise; not composed; do not release"},
            dp_event.NoOpDpEvent(),
        )
        with self.store.session(lock=True) as session:
            ds = self._dataset(session, dataset)
            status = self._status(session, ds, self._budget_row(session, ds.id, lock=True))
            seq = self._next_seq(session, ds.id)
            row = PrivacyEventRow(
                dataset_id=ds.id,
                seq=seq,
                created_at=utcnow(),
                actor=who,
                purpose=purpose.strip(),
                operation="non_private",
                what=what,
                mechanisms=[mechanism.to_dict()],
                details={**(details or {}), "private": False},
                accountant="none",
                epsilon=None,
                rho=None,
                spent_epsilon=status.spent.epsilon,
                spent_delta=status.spent.delta,
                spent_rho=status.spent.rho,
            )
            session.add(row)
            session.flush()
            return Receipt(
                event_id=row.id, seq=seq, dataset=ds.name, epsilon=None, rho=None, status=status
            )

    # ------------------------------------------------------------ internals
    @staticmethod
    def _next_seq(session: Session, dataset_id: int) -> int:
        """The next event number of a dataset (call under the session's lock)."""
        last = session.scalar(
            select(func.max(PrivacyEventRow.seq)).where(PrivacyEventRow.dataset_id == dataset_id)
        )
        return (last or 0) + 1

    def _check(
        self,
        ds: DatasetRow,
        budget_row: PrivacyBudgetRow,
        history: list[dp_event.DpEvent],
        event: PrivacyEvent,
    ) -> tuple[Spent, BudgetStatus]:
        budget = _budget_of(budget_row)
        if budget.delta is not None and budget.delta >= 1.0 / _privacy_units(ds):
            # A budget set before the 1 / n rule: under it almost nothing costs any epsilon.
            check_budget_delta(budget.delta, _privacy_units(ds), "delta")
        alone = self._spent(budget, [event.dp_event])
        _check_release_size(ds.name, alone)
        after = self._spent(budget, [*history, event.dp_event])
        status = BudgetStatus(
            dataset=ds.name,
            budget=budget,
            spent=after,
            events=len(history) + 1,
            accountant=self._accountant_name(budget),
        )
        if not _fits(budget, after):
            before = self._spent(budget, history)
            current = BudgetStatus(
                dataset=ds.name,
                budget=budget,
                spent=before,
                events=len(history),
                accountant=status.accountant,
            )
            raise BudgetExceededError(
                f"this release would exceed the privacy budget of '{ds.name}'; nothing was "
                "computed or charged",
                expected=f"total spend within {budget}",
                got=f"{_describe(after)} after this release ({_describe(alone)} for it alone; "
                f"{_describe(before)} spent so far)",
                fix=_exceeded_fix(ds, budget, alone),
                details={
                    "budget": budget.to_dict(),
                    "spent": before.to_dict(),
                    "requested": alone.to_dict(),
                    "would_spend": after.to_dict(),
                    "remaining": current.remaining,
                },
            )
        return alone, status

    def _spent(self, budget: Budget, events: Sequence[dp_event.DpEvent]) -> Spent:
        if budget.rho is not None:
            return Spent(rho=zcdp_rho(events))
        assert budget.delta is not None  # noqa: S101 - Budget guarantees it
        return Spent(epsilon=self.accountant.epsilon(events, budget.delta), delta=budget.delta)

    def _accountant_name(self, budget: Budget) -> str:
        return "zcdp" if budget.rho is not None else self.accountant.name

    def _status(
        self,
        session: Session,
        ds: DatasetRow,
        budget_row: PrivacyBudgetRow | None,
        *,
        cross_check: bool = False,
    ) -> BudgetStatus:
        history = self._history_events(session, ds.id)
        if budget_row is None:
            return BudgetStatus(
                dataset=ds.name,
                budget=None,
                spent=Spent(),
                events=len(history),
                accountant=self.accountant.name,
            )
        budget = _budget_of(budget_row)
        spent = self._spent(budget, history)
        check: dict[str, Any] = {}
        if cross_check and budget.rho is None and history:
            assert budget.delta is not None  # noqa: S101
            if budget.delta > 0:
                rdp = self.cross_check.epsilon(history, budget.delta)
                check = {"accountant": self.cross_check.name, "epsilon": _finite_or_none(rdp)}
        return BudgetStatus(
            dataset=ds.name,
            budget=budget,
            spent=spent,
            events=len(history),
            accountant=self._accountant_name(budget),
            cross_check=check,
        )

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

    def _require_budget(
        self, session: Session, ds: DatasetRow, *, lock: bool = False
    ) -> PrivacyBudgetRow:
        row = self._budget_row(session, ds.id, lock=lock)
        if row is None:
            raise BudgetExceededError(
                f"dataset '{ds.name}' has no privacy budget, so nothing may be released from it",
                expected="a budget set by the data owner",
                got="no budget",
                fix=f"veil budget set {ds.name} --epsilon 1.0 --delta 1e-6",
            )
        return row

    @staticmethod
    def _history_events(session: Session, dataset_id: int) -> list[dp_event.DpEvent]:
        rows = session.scalars(
            select(PrivacyEventRow.mechanisms)
            .where(PrivacyEventRow.dataset_id == dataset_id)
            .order_by(PrivacyEventRow.seq)
        ).all()
        return [
            PrivacyEvent(what="", mechanisms=tuple(Mechanism.from_dict(m) for m in mechs)).dp_event
            for mechs in rows
        ]


def _privacy_units(ds: DatasetRow) -> int:
    """How many people (privacy units) the dataset holds, as counted at registration."""
    units = (ds.registration_report or {}).get("privacy_units", ds.n_rows)
    return max(1, int(units if isinstance(units, int) and units > 0 else ds.n_rows or 1))


def _check_release_size(dataset: str, alone: Spent) -> None:
    """Refuse one release that spends more than MAX_RELEASE_EPSILON (or its zCDP equivalent)."""
    limit_rho = MAX_RELEASE_EPSILON**2 / 2
    if alone.rho is not None:
        too_big, shown = alone.rho > limit_rho, f"rho={alone.rho:.6g} (limit {limit_rho:g})"
    else:
        # An infinite epsilon (no guarantee at the budget's delta) is the budget check's refusal.
        eps = alone.epsilon if alone.epsilon is not None else math.inf
        too_big = math.isfinite(eps) and eps > MAX_RELEASE_EPSILON * (1 + _SLACK)
        shown = f"epsilon={eps:.6g}"
    if too_big:
        raise InvalidInputError(
            f"one release from '{dataset}' may spend at most epsilon {MAX_RELEASE_EPSILON:g}; "
            "nothing was computed or charged",
            expected=f"a release of epsilon <= {MAX_RELEASE_EPSILON:g}",
            got=shown,
            fix="ask for a smaller --epsilon (beyond 100 a release protects nobody); a baseline "
            "without privacy is asked for explicitly (veil train --non-private)",
        )


def _budget_of(row: PrivacyBudgetRow) -> Budget:
    return Budget(epsilon=row.epsilon, delta=row.delta, rho=row.rho)


def _fits(budget: Budget, spent: Spent) -> bool:
    if budget.rho is not None:
        return spent.rho is not None and spent.rho <= budget.rho * (1 + _SLACK)
    assert budget.epsilon is not None  # noqa: S101
    return spent.epsilon is not None and spent.epsilon <= budget.epsilon * (1 + _SLACK)


def _exceeded_fix(ds: DatasetRow, budget: Budget, alone: Spent) -> str:
    """How to get past a refusal; a release that needs a delta the budget lacks says so."""
    needs_delta = budget.rho is None and (alone.epsilon is None or not math.isfinite(alone.epsilon))
    if needs_delta:
        units = _privacy_units(ds)
        suggested = 10 ** math.floor(math.log10(0.1 / units))
        return (
            f"this release needs a delta > 0 (Gaussian noise, as in DP-SGD), and the budget's "
            f"delta is {budget.delta:g}: have the data owner set one, below 1/n = 1/{units:,}, "
            f"e.g. `veil budget set {ds.name} --epsilon {budget.epsilon:g} --delta {suggested:g}`"
        )
    return (
        "ask for less (a smaller --epsilon), or have the data owner raise the budget with "
        "`veil budget set`"
    )


def _describe(spent: Spent) -> str:
    if spent.rho is not None:
        return f"rho={spent.rho:.6g}"
    eps = spent.epsilon
    shown = (
        "inf (the releases' deltas exceed the budget's delta)"
        if eps is None or not math.isfinite(eps)
        else f"{eps:.6g}"
    )
    return f"epsilon={shown} at delta={spent.delta:g}"

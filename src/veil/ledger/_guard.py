"""One budget gate: check, then charge, then release.

Every path that releases something computed from personal data (a DP query,
a DP-SGD model and its DP test accuracy, a federated run, synthetic data, the
service) goes through a :class:`BudgetGuard`:

1. ``preview`` refuses early, before the slow part, what the budget cannot pay;
2. ``charge`` (or ``charge_many`` for a release made of several charges)
   records the release, atomically, or refuses it with nothing recorded;
3. only then is the result computed and shown, with the receipt beside it.

Two guards implement it: the workspace :class:`~veil.ledger.Ledger` (durable,
per dataset, shared by processes) and :class:`LocalBudget` (in memory, for a
frame or a script outside a workspace). Both validate every event at the gate
and compose with the same incremental accountant
(:class:`~veil.ledger.Composition`), so a release refused by one is refused
by the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from veil.errors import InvalidInputError, NotFoundError
from veil.ledger._budget import (
    Budget,
    BudgetStatus,
    Receipt,
    check_charges,
    check_purpose,
    non_private_mechanism,
    status_of,
)
from veil.ledger._composition import Composition
from veil.ledger._events import PrivacyEvent

__all__ = ["BudgetGuard", "Charge", "LocalBudget"]

Charge = tuple[str, PrivacyEvent]
"""One charge: the dataset (budget) it is charged to, and the release's event."""


@runtime_checkable
class BudgetGuard(Protocol):
    """What every release path is given: a place that checks and charges budget.

    ``dataset`` names the budget: a registered dataset for the ledger, a label
    for a :class:`LocalBudget`. ``charge_many`` is all-or-nothing: a release
    made of several charges (a model and its DP test accuracy) is recorded
    whole or not at all.
    """

    def status(self, dataset: str) -> BudgetStatus:
        """The budget, what has been spent, and what remains."""
        ...

    def preview(self, dataset: str, event: PrivacyEvent) -> BudgetStatus:
        """The status after ``event``, without charging; refuses exactly as ``charge`` would."""
        ...

    def preview_many(self, charges: Sequence[Charge]) -> list[BudgetStatus]:
        """The statuses after all ``charges`` (in order), without charging."""
        ...

    def charge(self, dataset: str, event: PrivacyEvent, *, purpose: str) -> Receipt:
        """Record ``event`` against ``dataset``'s budget, or refuse it (nothing recorded)."""
        ...

    def charge_many(self, charges: Sequence[Charge], *, purpose: str) -> list[Receipt]:
        """Record every charge in one transaction, or none of them."""
        ...

    def record_non_private(
        self,
        dataset: str,
        what: str,
        *,
        purpose: str,
        details: dict[str, Any] | None = None,
    ) -> Receipt:
        """Record a use without DP (a baseline): shown in the history, not composed."""
        ...


@dataclass
class _Account:
    budget: Budget
    units: int
    composition: Composition
    seq: int = 0


class LocalBudget:
    """An in-memory budget gate for frames and scripts outside a workspace.

    Args:
        budget: One budget (charged under the name ``dataset``), or a mapping
            of names to budgets.
        dataset: The name of the single budget.
        units: How many people each budget covers (for the delta < 1/n rule);
            ``None`` skips that rule (the caller vouches for delta).

    >>> from veil.ledger import Mechanism, PrivacyEvent
    >>> guard = LocalBudget(Budget(epsilon=1.0))
    >>> event = PrivacyEvent("a count", (Mechanism.laplace(scale=2.0, sensitivity=1.0),))
    >>> guard.charge("local", event, purpose="example").status.remaining
    0.5
    """

    def __init__(
        self,
        budget: Budget | Mapping[str, Budget],
        *,
        dataset: str = "local",
        units: int | None = None,
    ) -> None:
        budgets = {dataset: budget} if isinstance(budget, Budget) else dict(budget)
        if not budgets or not all(isinstance(b, Budget) for b in budgets.values()):
            raise InvalidInputError(
                "a local budget needs at least one Budget",
                expected="Budget(epsilon=..., delta=...) or {name: Budget(...)}",
                got=repr(budget),
            )
        self._accounts = {
            name: _Account(b, units or 0, Composition()) for name, b in budgets.items()
        }
        self.history: list[dict[str, Any]] = []

    def _account(self, dataset: str) -> _Account:
        account = self._accounts.get(dataset)
        if account is None:
            raise NotFoundError(
                f"this local budget has no account named '{dataset}'",
                expected=f"one of {sorted(self._accounts)}",
                got=repr(dataset),
                fix="charge the name the LocalBudget was created with",
            )
        return account

    def status(self, dataset: str) -> BudgetStatus:
        account = self._account(dataset)
        return status_of(dataset, account.budget, account.composition)

    def preview(self, dataset: str, event: PrivacyEvent) -> BudgetStatus:
        return self.preview_many([(dataset, event)])[0]

    def preview_many(self, charges: Sequence[Charge]) -> list[BudgetStatus]:
        return [checked.status for checked in self._check(charges)]

    def _check(self, charges: Sequence[Charge]) -> list[Any]:
        accounts = {name: self._account(name) for name, _ in charges}
        return check_charges(
            charges,
            budgets={n: a.budget for n, a in accounts.items()},
            units={n: a.units or None for n, a in accounts.items()},
            compositions={n: a.composition for n, a in accounts.items()},
        )

    def charge(
        self, dataset: str, event: PrivacyEvent, *, purpose: str, actor: str | None = None
    ) -> Receipt:
        return self.charge_many([(dataset, event)], purpose=purpose, actor=actor)[0]

    def charge_many(
        self, charges: Sequence[Charge], *, purpose: str, actor: str | None = None
    ) -> list[Receipt]:
        purpose = check_purpose(purpose)
        checked = self._check(charges)  # refuses before anything changes
        receipts = []
        for item in checked:
            seq = self._record(
                item.dataset, item.after, actor, purpose, item.event.what, item.event.mechanisms
            )
            receipts.append(
                Receipt(
                    event_id=seq,
                    seq=seq,
                    dataset=item.dataset,
                    epsilon=item.alone.epsilon,
                    rho=item.alone.rho,
                    status=item.status,
                )
            )
        return receipts

    def _record(  # noqa: PLR0917 - one history entry
        self,
        dataset: str,
        after: Composition,
        actor: str | None,
        purpose: str,
        what: str,
        mechanisms: Sequence[Any],
        details: dict[str, Any] | None = None,
    ) -> int:
        """Move ``dataset``'s account on to ``after`` and keep the entry (as the ledger's history)."""
        account = self._accounts[dataset]
        account.composition = after
        account.seq += 1
        entry = {
            "dataset": dataset,
            "seq": account.seq,
            "actor": actor or "local",
            "purpose": purpose,
            "what": what,
            "mechanisms": [m.to_dict() for m in mechanisms],
        }
        if details is not None:
            entry["details"] = details
        self.history.append(entry)
        return account.seq

    def record_non_private(
        self,
        dataset: str,
        what: str,
        *,
        purpose: str,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Receipt:
        purpose = check_purpose(purpose, non_private=True)
        account = self._account(dataset)
        mechanism = non_private_mechanism()
        # Composes nothing, but counts as an event, as in the ledger's history.
        after = account.composition.add(mechanism.dp_event)
        seq = self._record(
            dataset, after, actor, purpose, what, [mechanism], {**(details or {}), "private": False}
        )
        return Receipt(
            event_id=seq,
            seq=seq,
            dataset=dataset,
            epsilon=None,
            rho=None,
            status=self.status(dataset),
        )

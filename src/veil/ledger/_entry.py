"""The ledger's records as ``veil budget history`` shows them: releases and budget changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from veil.ledger._budget import Budget
from veil.ledger._events import Mechanism
from veil.store.tables import BudgetChangeRow, PrivacyEventRow

__all__ = ["LedgerEntry", "merged_history"]


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


def merged_history(
    dataset: str, events: Sequence[PrivacyEventRow], changes: Sequence[BudgetChangeRow]
) -> list[dict[str, Any]]:
    """Releases and budget changes in one list, oldest first (a change before a release at a tie)."""
    items: list[tuple[datetime, int, dict[str, Any]]] = [
        (e.created_at, 1, LedgerEntry.from_row(e, dataset).to_dict()) for e in events
    ]
    items += [
        (
            c.changed_at,
            0,
            {
                "type": "budget",
                "id": c.id,
                "dataset": dataset,
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

"""Appending to the trail: the end of the trail while entries are added, and the ledger pin.

:class:`Cursor` turns each entry's fields into its canonical body, leaf hash,
chain value and row, moving the Merkle frontier on and collecting the subtree
roots each append completes (``trail_nodes``). :func:`ledger_pin` is what the
first entry (``trail.start``) records of the ledger as it stood.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil.access._entries import Outcome, TrailEntry, canonical, chain_link, timestamp
from veil.access._merkle import Frontier
from veil.access._nodes import node_rows
from veil.access.verifier import leaf_hash
from veil.store.chain import GENESIS
from veil.store.tables import BudgetChangeRow, PrivacyBudgetRow, PrivacyEventRow

__all__ = ["BODY_VERSION", "Cursor", "ledger_pin"]

BODY_VERSION = 1


class Cursor:
    """The trail's end while entries are being appended: size, chain and frontier."""

    def __init__(self, size: int, chain: str, frontier: Frontier, level: int) -> None:
        self.size, self.chain, self.frontier = size, chain, frontier
        self.level = level
        self.nodes: list[dict[str, Any]] = []  # subtrees completed (trail_nodes rows)

    def add(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], TrailEntry]:
        """The row for the next entry made of ``fields``, and the entry; moves the end on."""
        seq = self.size + 1
        now = datetime.now(UTC)
        outcome = str(Outcome(fields.get("outcome", Outcome.ALLOWED)))
        actor, action = str(fields["actor"]), str(fields["action"])
        dataset = fields.get("dataset")
        body = canonical(
            {
                "v": BODY_VERSION,
                "seq": seq,
                "at": timestamp(now),
                "actor": actor,
                "action": action,
                "outcome": outcome,
                "purpose": str(fields.get("purpose", "")),
                "dataset": dataset,
                "links": dict(fields.get("links") or {}),
                "details": dict(fields.get("details") or {}),
            }
        )
        leaf = leaf_hash(body.encode("ascii"))
        self.chain = chain_link(self.chain, leaf)
        merged = self.frontier.append_merged(leaf, self.level)
        if merged:
            self.nodes.extend(node_rows(merged, seq, self.level))
        self.size = seq
        row = {
            "seq": seq,
            "at": now,
            "actor": actor,
            "action": action,
            "dataset": dataset,
            "outcome": outcome,
            "body": body,
            "leaf": leaf.hex(),
            "chain": self.chain,
        }
        return row, TrailEntry.from_body(body, leaf.hex())


def ledger_pin(session: Session) -> dict[str, Any]:
    """The ledger as it stands: per dataset id, the last event's seq and chain, and the budget."""
    pin: dict[str, Any] = {}
    events = session.execute(
        select(PrivacyEventRow.dataset_id, PrivacyEventRow.seq, PrivacyEventRow.chain).order_by(
            PrivacyEventRow.dataset_id, PrivacyEventRow.seq
        )
    ).all()
    for dataset_id, seq, chain in events:
        pin[str(dataset_id)] = {"seq": seq, "chain": chain}
    for row in session.scalars(select(PrivacyBudgetRow)).all():
        entry = pin.setdefault(str(row.dataset_id), {"seq": 0, "chain": GENESIS})
        entry["budget"] = {"epsilon": row.epsilon, "delta": row.delta, "rho": row.rho}
    last_change = session.execute(
        select(BudgetChangeRow.id).order_by(BudgetChangeRow.id.desc()).limit(1)
    ).scalar()
    return {"datasets": pin, "last_budget_change": last_change or 0}

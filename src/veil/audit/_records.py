"""What an audit puts on the trail: the model's load and the audit's outcome and summary.

The summary holds counts, the claimed epsilon, the verdicts' levels and the
held-out accuracy: never a per-example score, row position or value.
"""

from __future__ import annotations

from typing import Any

from veil.access import Access, Outcome
from veil.audit._findings import AuditReport

__all__ = ["record_audit", "record_load", "summary_of"]


def _model_links(card: Any) -> dict[str, Any]:
    """What ties an audit's trail entries to the model: its name, ledger event and data version."""
    return {
        "model": card.model,
        "ledger_event": card.ledger_event_id,
        "content_sha256": card.dataset_sha256,
    }


def record_load(access: Access, card: Any, purpose: str) -> None:
    """Put the model's load on the trail, linked to its ledger event and its data's version."""
    access.record(
        "model.load",
        dataset=card.dataset,
        purpose=purpose,
        links=_model_links(card),
        details={"private": card.private, "epsilon": card.epsilon},
    )


def record_audit(
    access: Access, card: Any, purpose: str, outcome: Outcome, details: dict[str, Any]
) -> None:
    """Put the audit on the trail: its outcome and what :func:`summary_of` gives."""
    access.record(
        "audit.run",
        dataset=card.dataset,
        purpose=purpose,
        outcome=outcome,
        links=_model_links(card),
        details=details,
    )


def summary_of(report: AuditReport) -> dict[str, Any]:
    """The audit's headline numbers for the trail: counts and verdicts, no per-example data."""
    utility = report.utility or {}
    return {
        "members": report.settings["members"],
        "non_members": report.settings["non_members"],
        "claimed_epsilon": report.claimed_epsilon,
        "verdicts": {v.attack: v.level for v in report.verdicts()},
        "accuracy": utility.get("accuracy"),
        "majority_rate": utility.get("majority_rate"),
        "seconds": report.seconds.get("total"),
    }

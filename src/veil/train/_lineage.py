"""Lineage of a trained model: who it was trained on, and the record that says so.

``members.tokens`` (in the model folder) lists the person tokens of the
training rows (:func:`veil.data.person_tokens`: keyed hashes, never the
identifiers), and the ``model.save`` trail entry is appended in the same
transaction as the model's :class:`~veil.store.tables.DerivedArtifactRow`
(dataset id, version trained on), so that an erasure can name every model
still carrying an erased person without reading any data.
"""

from __future__ import annotations

from typing import Any

from veil.access import Access
from veil.data import DatasetInfo, person_tokens
from veil.store.tables import DerivedArtifactRow
from veil.train._artifact import ModelRegistry, PrivacyCard

__all__ = ["NOT_TRACKED", "members_of", "record_save", "record_unlearn"]

NOT_TRACKED = "membership not tracked: no privacy unit"


def members_of(
    registry: ModelRegistry, info: DatasetInfo, persons: list[Any] | None
) -> tuple[list[str] | None, str]:
    """The person tokens of the rows (one per row, ``None`` untracked) and the card's words."""
    if persons is None or info.dataset_id is None:
        return None, NOT_TRACKED
    tokens = person_tokens(registry.person_key(), info.dataset_id, persons)
    return tokens, f"tracked: {len(set(tokens))} persons (members.tokens)"


def record_save(
    access: Access,
    card: PrivacyCard,
    info: DatasetInfo,
    *,
    purpose: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Put the saved model on the trail and in the lineage, in one transaction.

    The :class:`DerivedArtifactRow` names the dataset and the version trained on
    (``None`` for a reference dataset), so an erasure finds the models derived
    from the version it supersedes.
    """
    lineage = {
        "private": card.private,
        "epsilon": card.epsilon if card.private else None,
        "ledger_event": card.ledger_event_id,
        "membership": card.membership,
        **(details or {}),
    }
    with access.store.session(lock=True) as session:
        if info.dataset_id is not None:
            session.add(
                DerivedArtifactRow(
                    kind="model",
                    name=card.model,
                    dataset_id=info.dataset_id,
                    version=card.dataset_version,
                    created_by=access.principal.name,
                    details=lineage,
                )
            )
        _append_save(session, access, card, info, purpose=purpose)


def _append_save(
    session: Any, access: Access, card: PrivacyCard, info: DatasetInfo, *, purpose: str
) -> None:
    access.append(
        session,
        "model.save",
        dataset=card.dataset,
        purpose=purpose,
        links={
            "model": card.model,
            "ledger_event": card.ledger_event_id,
            "test_ledger_event": card.test_ledger_event_id,
            "dataset_id": info.dataset_id,
            "content_sha256": info.content_sha256,
            "dataset_version": card.dataset_version,
        },
        details={
            "private": card.private,
            "epsilon": card.epsilon,
            "delta": card.delta,
            "architecture": card.architecture,
            "test_dataset": card.test_dataset,
        },
    )


def record_unlearn(
    access: Access,
    card: PrivacyCard,
    info: DatasetInfo,
    *,
    purpose: str,
    version: int | None,
    details: dict[str, Any],
) -> None:
    """``model.unlearn`` on the trail, and the model's new lineage row, in one transaction.

    The new :class:`DerivedArtifactRow` says the ensemble is now derived from
    ``version`` (the one its retrained stages read).
    """
    with access.store.session(lock=True) as session:
        if info.dataset_id is not None:
            session.add(
                DerivedArtifactRow(
                    kind="model",
                    name=card.model,
                    dataset_id=info.dataset_id,
                    version=version,
                    created_by=access.principal.name,
                    details={"unlearned": True, **details},
                )
            )
        access.append(
            session,
            "model.unlearn",
            dataset=card.dataset,
            purpose=purpose,
            links={
                "model": card.model,
                "ledger_event": details.get("ledger_event"),
                "dataset_id": info.dataset_id,
                "dataset_version": version,
            },
            details=details,
        )

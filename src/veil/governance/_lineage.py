"""Lineage: what was made from a dataset, and which erased people a model still carries.

Every model trained on a dataset, and every anonymised file written from one,
is recorded as a :class:`~veil.store.tables.DerivedArtifactRow` (the dataset's
id and the version it was made from). A model folder also holds
``members.tokens``: the keyed tokens of the people whose rows trained it
(:mod:`veil.data`'s person tokens, never identifiers). An erasure records the
erased person's token (:class:`~veil.store.tables.ErasureRow`), so

    carries N erased people  =  | erased tokens of the dataset  ∩  model members |

is a set intersection that needs neither the data (long destroyed) nor the
persons key. Why count from the membership list rather than from versions (a
model trained on version 3 "carries" every erasure from version 3 on): an
erased person who never reached the model (filtered out by consent, or in the
held-out split) is not carried, and a SISA model that was unlearned rewrites its
list without them, so the count drops to zero exactly when the person is gone.

Retention removes rows, not named people, so it is counted in rows: the rows
removed by retention from the version the model was trained on or later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil.access import Access, Permission
from veil.errors import InvalidInputError, NotFoundError
from veil.store.tables import DatasetRow, DatasetVersionRow, DerivedArtifactRow, ErasureRow

if TYPE_CHECKING:
    from veil.data import Catalog
    from veil.train import ModelRegistry

__all__ = [
    "MEMBERS_FILE",
    "CarriedReport",
    "DerivedArtifact",
    "carried_erasures",
    "derived_artifacts",
    "erased_tokens",
    "model_advice",
    "model_kind",
    "read_members",
    "record_artifact",
]

MEMBERS_FILE = "members.tokens"
ARTIFACT_KINDS = ("model", "synthetic", "anonymized")
_TOKEN = re.compile(r"[0-9a-f]{32}")

ADVICE = {
    "sisa": "SISA: run veil unlearn {model}",
    "dp": "DP model: its guarantee protects the person; retrain to remove their influence entirely",
    "non-private": "non-private model: retrain or retire",
    "anonymized": "anonymised output: write it again from the current version and delete this file",
    "synthetic": "DP synthetic data: its guarantee protects the person; generate it again to remove "
    "their influence entirely",
}


@dataclass(frozen=True)
class DerivedArtifact:
    """A model, synthetic release or anonymised file made from one version of a dataset."""

    id: int
    kind: str
    name: str
    dataset_id: int
    version: int | None  # None: made from a reference dataset
    created_at: datetime
    created_by: str
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: DerivedArtifactRow) -> DerivedArtifact:
        return cls(
            id=row.id,
            kind=row.kind,
            name=row.name,
            dataset_id=row.dataset_id,
            version=row.version,
            created_at=row.created_at,
            created_by=row.created_by,
            details=dict(row.details),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True)
class CarriedReport:
    """What a model still carries of the people and rows removed from its dataset since.

    ``erased_people`` is exact when the model has a membership list
    (``members_known``); without one (a model trained before Veil kept them) it
    is the number of people erased from the version it was trained on or later:
    an upper bound.
    """

    model: str
    dataset: str
    kind: str  # sisa | dp | non-private
    trained_on_version: int | None
    current_version: int | None
    erased_people: int
    members_known: bool
    rows_removed_by_retention_since: int
    versions_behind: int | None
    advice: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for people: ``carries 2 erased people: SISA: run veil unlearn m``."""
        if not self.erased_people and not self.rows_removed_by_retention_since:
            return "carries no erased person and no row removed by retention"
        bound = "" if self.members_known else "up to "
        people = "person" if self.erased_people == 1 else "people"
        text = f"carries {bound}{self.erased_people} erased {people}"
        if self.rows_removed_by_retention_since:
            text += f" and {self.rows_removed_by_retention_since:,} rows removed by retention"
        return f"{text}: {self.advice}"


def read_members(folder: Path) -> frozenset[str] | None:
    """The person tokens in ``folder/members.tokens`` (``None`` when the model has no list).

    One token per line; a SISA model may prefix each with its shard and slice
    (``3 1 <token>``), so the last field of a line is the token. Blank lines
    and ``#`` comments are skipped.
    """
    path = folder / MEMBERS_FILE
    if not path.is_file():
        return None
    tokens = set()
    with path.open(encoding="ascii") as handle:
        for line in handle:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            field = text.split()[-1]
            if _TOKEN.fullmatch(field):
                tokens.add(field)
    return frozenset(tokens)


def erased_tokens(session: Session, dataset_id: int) -> set[str]:
    """The tokens of every person erased from the dataset (any version)."""
    rows = session.scalars(
        select(ErasureRow.person).where(
            ErasureRow.dataset_id == dataset_id,
            ErasureRow.kind == "erase",
            ErasureRow.person.is_not(None),
        )
    )
    return {p for p in rows if p}


def _retention_rows_since(session: Session, dataset_id: int, version: int | None) -> int:
    query = select(func.coalesce(func.sum(ErasureRow.rows_removed), 0)).where(
        ErasureRow.dataset_id == dataset_id, ErasureRow.kind == "retention"
    )
    if version is not None:
        query = query.where(ErasureRow.from_version >= version)
    return int(session.scalar(query) or 0)


def _current_version(session: Session, dataset_id: int) -> int | None:
    return session.scalar(
        select(DatasetVersionRow.version).where(
            DatasetVersionRow.dataset_id == dataset_id, DatasetVersionRow.state == "current"
        )
    )


def record_artifact(
    access: Access,
    session: Session,
    *,
    kind: str,
    name: str,
    dataset_id: int,
    version: int | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add a :class:`~veil.store.tables.DerivedArtifactRow` in ``session`` (commits with it).

    ``version`` is the managed version the artefact was made from (``None``
    for a reference dataset). Callers record their own trail entry in the same
    session, so the lineage row and the entry commit together.
    """
    if kind not in ARTIFACT_KINDS:
        raise InvalidInputError(
            "unknown derived artefact kind",
            expected=f"one of {', '.join(ARTIFACT_KINDS)}",
            got=repr(kind),
            fix="record models as 'model', anonymised files as 'anonymized'",
        )
    session.add(
        DerivedArtifactRow(
            kind=kind,
            name=name,
            dataset_id=dataset_id,
            version=version,
            created_at=datetime.now(UTC),
            created_by=access.principal.name,
            details=dict(details or {}),
        )
    )


def _dataset_id(session: Session, name: str) -> int:
    found = session.scalar(select(DatasetRow.id).where(DatasetRow.name == name))
    if found is None:
        raise NotFoundError(
            f"no dataset named '{name}'",
            expected="the name of a registered dataset",
            got=repr(name),
            fix="see `veil datasets list`",
        )
    return found


def derived_artifacts(
    catalog: Catalog, dataset: str, *, kinds: Iterable[str] | None = None
) -> list[DerivedArtifact]:
    """What was made from ``dataset`` (any version), oldest first (needs its metadata read)."""
    catalog.access.require(Permission.DATASET_READ_METADATA, dataset, action="dataset.metadata")
    with catalog.store.session() as session:
        dataset_id = _dataset_id(session, dataset)
        query = select(DerivedArtifactRow).where(DerivedArtifactRow.dataset_id == dataset_id)
        if kinds is not None:
            query = query.where(DerivedArtifactRow.kind.in_(list(kinds)))
        rows = session.scalars(query.order_by(DerivedArtifactRow.id)).all()
        return [DerivedArtifact.from_row(r) for r in rows]


def model_kind(folder: Path, card: Mapping[str, Any] | None = None) -> str:
    """``sisa``, ``dp`` or ``non-private``, from the model's ``model.json`` and card.

    A SISA ensemble says so in its metadata (``"sisa": {...}``) or its card's
    architecture; a DP model's card says ``private``.
    """
    meta: dict[str, Any] = {}
    meta_path = folder / "model.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
    card = dict(card or {})
    if meta.get("sisa") or meta.get("kind") == "sisa" or card.get("sisa"):
        return "sisa"
    if "sisa" in str(card.get("architecture", "")).lower():
        return "sisa"
    return "dp" if card.get("private") else "non-private"


def model_advice(kind: str, model: str) -> str:
    """What to do about a model (or artefact) that carries erased people."""
    return ADVICE.get(kind, ADVICE["non-private"]).format(model=model)


def carried_erasures(catalog: Catalog, registry: ModelRegistry, model: str) -> CarriedReport:
    """How many erased people ``model`` still carries, and what to do about it.

    Needs ``model.read`` on the model's dataset (the refusal is recorded).

    Raises:
        NotFoundError: No such model.
        PermissionDeniedError: The acting principal may not read it.
    """
    card = registry.card(model)
    catalog.access.require(Permission.MODEL_READ, card.dataset or None, action="model.read")
    folder = registry.root / model
    kind = model_kind(folder, card.to_dict())
    members = read_members(folder)
    with catalog.store.session() as session:
        artifact = session.scalars(
            select(DerivedArtifactRow)
            .where(DerivedArtifactRow.kind == "model", DerivedArtifactRow.name == model)
            .order_by(DerivedArtifactRow.id.desc())
        ).first()
        if artifact is not None:
            dataset_id, version = artifact.dataset_id, artifact.version
        else:  # trained before Veil recorded lineage
            dataset_id, version = _dataset_id(session, card.dataset), None
        current = _current_version(session, dataset_id)
        erased = erased_tokens(session, dataset_id)
        if members is None:  # no list: every person erased since the model was trained
            since = select(ErasureRow.person).where(
                ErasureRow.dataset_id == dataset_id, ErasureRow.kind == "erase"
            )
            if version is not None:
                since = since.where(ErasureRow.from_version >= version)
            carried = len({p for p in session.scalars(since) if p})
        else:
            carried = len(erased & members)
        retention = _retention_rows_since(session, dataset_id, version)
    if carried or retention:
        advice = model_advice(kind, model)
    else:
        advice = "nothing to do: it carries no erased person"
    return CarriedReport(
        model=model,
        dataset=card.dataset,
        kind=kind,
        trained_on_version=version,
        current_version=current,
        erased_people=carried,
        members_known=members is not None,
        rows_removed_by_retention_since=retention,
        versions_behind=None if version is None or current is None else current - version,
        advice=advice,
    )

"""The consent filter a load applies: which purpose a release names, and whose rows it may see.

A dataset under consent management (a :class:`~veil.store.tables.DatasetConsentRow`)
is read only for a declared purpose: the release's purpose must name a term of
the workspace's vocabulary, exactly (``research``) or as a prefix followed by
free text (``research: cohort study 12``). The rows kept are those of persons
whose latest record for that term at or before the moment of the load says
``granted``, or, for a person with no record, whatever the dataset's default
says (``withdrawn``: opt-in, the default; ``granted``: opt-out).

"Latest" is by the time the person decided (``at``), then by record id: a
paper form dated last year and imported today does not override a withdrawal
made last month. Records dated in the future are not applied until their time
comes. The snapshot names the highest record id considered
(``through_record``) and the moment (``as_of``), so the same filter can be
recomputed from the table later: records are only appended.

The filter removes whole persons, never single rows of a person, so the
neighbouring relation of every DP mechanism downstream is unchanged and no
accounting changes: a person either contributes all their rows or none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from veil.access import Access, Outcome
from veil.data._dataset_info import DatasetInfo
from veil.data._persons import PERSONS_KEY, person_key, person_tokens
from veil.errors import InvalidInputError, NotFoundError
from veil.store import Store
from veil.store.tables import ConsentPurposeRow, ConsentRecordRow, DatasetConsentRow
from veil.vault import KeyStore
from veil.workspace import Workspace


class CatalogLike(Protocol):
    """What the filter needs of a :class:`~veil.data.Catalog` (which imports this module)."""

    store: Store
    access: Access


__all__ = [
    "GRANTED",
    "STATUSES",
    "WITHDRAWN",
    "ConsentRule",
    "ConsentSnapshot",
    "catalog_person_key",
    "consent_rule",
    "latest_states",
    "purpose_term",
]

GRANTED = "granted"
WITHDRAWN = "withdrawn"
STATUSES = (GRANTED, WITHDRAWN)
ATTR = "veil.consent"  # the key of the snapshot in frame.attrs


@dataclass(frozen=True)
class ConsentSnapshot:
    """The consent state a release was computed under.

    Attributes:
        dataset: The dataset's name.
        purpose: The vocabulary term the release declared.
        through_record: The highest consent record id considered (0: none yet).
        as_of: The moment whose state was applied (ISO 8601, UTC).
        default: What held for a person with no record (``granted`` or ``withdrawn``).
        persons_excluded: Persons in the data whose rows were left out
            (``None`` before the rows are read).
        rows_excluded: Rows left out (``None`` before the rows are read).
    """

    dataset: str
    purpose: str
    through_record: int
    as_of: str
    default: str
    persons_excluded: int | None = None
    rows_excluded: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The form kept in ``frame.attrs``, ledger details and trail entries."""
        return {
            "purpose": self.purpose,
            "through_record": self.through_record,
            "as_of": self.as_of,
            "persons_excluded": self.persons_excluded,
            "rows_excluded": self.rows_excluded,
            "default": self.default,
        }


def purpose_term(purpose: str) -> str:
    """The vocabulary term a declared purpose names: ``"research: study 12"`` -> ``"research"``."""
    head, _, _ = purpose.partition(":")
    return head.strip()


def latest_states(
    dataset_id: int,
    *,
    as_of: datetime,
    through: int | None = None,
    purpose: str | None = None,
    person: str | None = None,
) -> Any:
    """The latest record per (purpose, person) at or before ``as_of``: a subquery.

    Columns: ``purpose``, ``person``, ``status``, ``at``, ``source``, ``id``,
    ``rank`` (keep ``rank == 1``). A window function ranks each person's
    records by ``at`` then ``id``; SQLite (3.25+) and PostgreSQL both run it
    from the ``dataset_id`` index in one pass.
    """
    r = ConsentRecordRow
    conditions = [r.dataset_id == dataset_id, r.at <= as_of]
    if through is not None:
        conditions.append(r.id <= through)
    if purpose is not None:
        conditions.append(r.purpose == purpose)
    if person is not None:
        conditions.append(r.person == person)
    rank = (
        func.row_number()
        .over(partition_by=(r.purpose, r.person), order_by=(r.at.desc(), r.id.desc()))
        .label("rank")
    )
    query = select(r.purpose, r.person, r.status, r.at, r.source, r.id, rank).where(*conditions)
    return query.subquery()


@dataclass(frozen=True)
class ConsentRule:
    """The filter of one load: who is in, decided before a byte of the data is read.

    ``listed`` holds the tokens whose latest record is the opposite of the
    default: the persons let in under ``withdrawn`` (opt-in), or kept out
    under ``granted`` (opt-out).
    """

    snapshot: ConsentSnapshot
    unit: str
    dataset_id: int
    listed: frozenset[str] = field(repr=False)

    def apply(self, frame: pd.DataFrame, key: bytes, columns: Sequence[str] | None) -> pd.DataFrame:
        """Keep the rows of persons whose consent holds; drop the unit column if not asked for.

        The snapshot, with the persons and rows left out, goes to
        ``frame.attrs["veil.consent"]``.
        """
        values = frame[self.unit]
        uniques = pd.unique(values)
        tokens = person_tokens(key, self.dataset_id, uniques.tolist())
        listed = np.fromiter((t in self.listed for t in tokens), dtype=bool, count=len(tokens))
        admitted = listed if self.snapshot.default == WITHDRAWN else ~listed
        keep = values.isin(uniques[admitted]).to_numpy()
        kept = frame.loc[keep].reset_index(drop=True)
        if columns is not None and self.unit not in columns:
            kept = kept.drop(columns=[self.unit])
        snapshot = replace(
            self.snapshot,
            persons_excluded=int((~admitted).sum()),
            rows_excluded=int((~keep).sum()),
        )
        kept.attrs[ATTR] = snapshot.to_dict()
        return kept


def _vocabulary(session: Session) -> list[str]:
    return list(session.scalars(select(ConsentPurposeRow.name).order_by(ConsentPurposeRow.name)))


def _example(vocabulary: list[str]) -> str:
    return "statistics" if "statistics" in vocabulary or not vocabulary else vocabulary[0]


def consent_rule(
    catalog: CatalogLike, info: DatasetInfo, purpose: str, *, now: datetime | None = None
) -> ConsentRule | None:
    """The filter a load of ``info`` for ``purpose`` applies; ``None`` when consent is not managed.

    Raises:
        InvalidInputError: The purpose names no term of the vocabulary (the
            refusal is recorded on the trail; nothing was read).
    """
    as_of = now or datetime.now(UTC)
    dataset_id = int(info.dataset_id or 0)
    with catalog.store.session() as session:
        managed = session.get(DatasetConsentRow, dataset_id)
        if managed is None:
            return None
        default = managed.default
        vocabulary = _vocabulary(session)
        term = purpose_term(purpose or "")
        if term not in vocabulary:
            catalog.access.record(
                "dataset.read",
                dataset=info.name,
                purpose=purpose,
                outcome=Outcome.REFUSED,
                details={"reason": "consent_purpose", "vocabulary": vocabulary},
            )
            raise InvalidInputError(
                f"'{info.name}' is under consent management: a release must declare its purpose",
                expected=f"a purpose naming one of {', '.join(vocabulary)}, alone or followed "
                "by ': why' (e.g. 'statistics: monthly cohort report')",
                got=repr(purpose),
                fix=f'pass --purpose "{_example(vocabulary)}: ..." '
                "(see `veil consent purposes`; an owner adds terms with "
                "`veil consent purposes add`)",
            )
        through = session.scalar(
            select(func.coalesce(func.max(ConsentRecordRow.id), 0)).where(
                ConsentRecordRow.dataset_id == dataset_id
            )
        )
        latest = latest_states(dataset_id, as_of=as_of, through=int(through or 0), purpose=term)
        opposite = GRANTED if default == WITHDRAWN else WITHDRAWN
        listed = frozenset(
            session.scalars(
                select(latest.c.person).where(latest.c.rank == 1, latest.c.status == opposite)
            )
        )
    unit = info.schema.privacy_unit
    if unit is None:  # enable() refuses this; a registration changed since is caught here
        raise InvalidInputError(
            f"'{info.name}' is under consent management but declares no privacy-unit column",
            expected="a privacy-unit column naming each row's person",
            got="one row per person, unnamed",
            fix=f"declare it: veil datasets update {info.name} --id COLUMN",
        )
    snapshot = ConsentSnapshot(
        dataset=info.name,
        purpose=term,
        through_record=int(through or 0),
        as_of=as_of.isoformat(),
        default=default,
    )
    return ConsentRule(snapshot=snapshot, unit=unit, dataset_id=dataset_id, listed=listed)


def catalog_person_key(catalog: CatalogLike) -> bytes:
    """The persons key of the catalogue's workspace.

    From the catalogue's ``workspace`` when it has one, else the workspace of
    the current directory, else ``VEIL_KEY_PERSONS`` alone (a catalogue opened
    on a bare database, as tests and embedding programs do).
    """
    workspace = getattr(catalog, "workspace", None)
    if workspace is None:
        try:
            workspace = Workspace.locate()
        except NotFoundError:
            workspace = None
    if workspace is not None:
        return person_key(workspace)
    if os.environ.get("VEIL_KEY_" + PERSONS_KEY.upper()):
        return KeyStore(Workspace.default_home() / "keys").get(PERSONS_KEY, create=False)
    raise NotFoundError(
        "no persons key: consent is matched by keyed person tokens",
        expected="a workspace (its keys/persons.key) or VEIL_KEY_PERSONS",
        got="neither",
        fix="run inside the workspace (veil init), or set VEIL_KEY_PERSONS",
    )

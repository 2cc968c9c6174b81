"""Consent per person and purpose: the vocabulary, the records, and what a release may see.

A person's consent is recorded per dataset and per purpose of the workspace's
vocabulary (``statistics``, ``model-training``, ``research``,
``synthetic-data``, ``federated-learning``; owners add terms). Records are
only appended: ``granted`` or ``withdrawn``, with when the person decided
(``at``) and where Veil learnt it (``source``). A dataset is filtered once it
is put under consent management (:meth:`Consent.enable`), with a default for
persons who have no record: ``withdrawn`` (opt-in; the default, because a
missing record is not consent) or ``granted`` (opt-out, where the law allows
it). From then on every load declares a purpose naming a term and sees only
the rows of persons whose consent for that term holds at that moment
(:mod:`veil.data._consent_rule`).

Persons are named by keyed tokens (:mod:`veil.data._persons`), never by their
identifiers: the consent table lists nobody to a reader without the
workspace's persons key.

**Who may do what.** Declaring purposes, enabling and recording need
``consent.manage`` (owners; on the workspace for the vocabulary, on the dataset
otherwise); reading states and counts needs ``consent.read`` (owners,
auditors). Every change is on the trail, appended in the transaction that
writes it (``consent.purpose``, ``consent.enable``, ``consent.record``,
``consent.import``); a refusal is recorded too. The vocabulary itself is
readable by every principal: each release must name one of its terms, and it
names no person.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, select

from veil.access import Permission
from veil.data._archive import registered_name
from veil.data._consent_lines import Line, check_line, check_status, read_csv
from veil.data._consent_rule import (
    GRANTED,
    STATUSES,
    WITHDRAWN,
    ConsentSnapshot,
    catalog_person_key,
    consent_rule,
    latest_states,
)
from veil.data._dataset_info import DatasetInfo
from veil.data._persons import person_tokens
from veil.errors import ConflictError, InvalidInputError
from veil.store.tables import ConsentPurposeRow, ConsentRecordRow, DatasetConsentRow

if TYPE_CHECKING:
    from veil.data._catalog import Catalog

__all__ = ["Consent", "ConsentState", "ImportReport", "Purpose"]

_PURPOSE = re.compile(r"[a-z][a-z0-9-]{1,63}")


@dataclass(frozen=True)
class Purpose:
    """A term of the consent vocabulary."""

    name: str
    description: str
    created_at: datetime
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }


class ConsentState(NamedTuple):
    """One person's state for one purpose: a record's, or the default's (``at`` None)."""

    status: str
    at: datetime | None
    source: str


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: one transaction, every line or none."""

    dataset: str
    records: int
    persons: int
    counts: dict[str, dict[str, int]]  # purpose -> status -> records
    first_record: int
    last_record: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "records": self.records,
            "persons": self.persons,
            "counts": self.counts,
            "first_record": self.first_record,
            "last_record": self.last_record,
        }


class Consent:
    """The consent records of a workspace's datasets (see the module docstring).

    Args:
        catalog: The catalogue: its store, and the principal who acts.
        key: The persons key (default: the workspace's, see
            :func:`~veil.data._consent_rule.catalog_person_key`).
    """

    def __init__(self, catalog: Catalog, *, key: bytes | None = None) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self.access = catalog.access
        self._key = key

    @property
    def key(self) -> bytes:
        """The persons key tokens are made with."""
        if self._key is None:
            self._key = catalog_person_key(self.catalog)
        return self._key

    # ------------------------------------------------------------ vocabulary
    def purposes(self) -> list[Purpose]:
        """The vocabulary, by name (no role needed: every release must name a term)."""
        with self.store.session() as session:
            rows = session.scalars(select(ConsentPurposeRow).order_by(ConsentPurposeRow.name))
            return [Purpose(r.name, r.description, r.created_at, r.created_by) for r in rows]

    def add_purpose(self, name: str, description: str) -> Purpose:
        """Add a term to the vocabulary (``consent.manage`` on the workspace; on the trail).

        Raises:
            InvalidInputError: A malformed name or an empty description.
            ConflictError: The term exists.
        """
        self.access.require(Permission.CONSENT_MANAGE, None, action="consent.purpose")
        if not isinstance(name, str) or not _PURPOSE.fullmatch(name):
            raise InvalidInputError(
                "invalid purpose name",
                expected="2-64 lower-case letters, digits or '-', starting with a letter",
                got=repr(name),
                fix="for example: veil consent purposes add clinical-audit --description ...",
            )
        if not description or not description.strip():
            raise InvalidInputError(
                "a purpose needs a description",
                expected="a sentence saying what the data is used for",
                got=repr(description),
                fix='pass --description "audits of clinical practice"',
            )
        with self.store.session(lock=True) as session:
            if session.get(ConsentPurposeRow, name) is not None:
                raise ConflictError(
                    f"the purpose '{name}' is already declared",
                    expected="a new term",
                    got=repr(name),
                    fix="see `veil consent purposes`",
                )
            row = ConsentPurposeRow(
                name=name,
                description=description.strip(),
                created_at=datetime.now(UTC),
                created_by=self.access.principal.name,
            )
            session.add(row)
            self.access.append(
                session,
                "consent.purpose",
                details={"purpose": name, "description": row.description},
            )
            return Purpose(row.name, row.description, row.created_at, row.created_by)

    # ------------------------------------------------------------ datasets
    def _dataset(self, dataset: str, permission: Permission, action: str) -> DatasetInfo:
        self.access.require(permission, dataset, action=action)
        return self.catalog._get(dataset)  # noqa: SLF001 - checked just above

    def enable(self, dataset: str, default: str = WITHDRAWN) -> dict[str, Any]:
        """Put ``dataset`` under consent management (``consent.manage`` on it; on the trail).

        ``default`` is what holds for a person with no record: ``withdrawn``
        (opt-in) or ``granted`` (opt-out). Enabling again changes the default
        (recorded with the previous one); the same default again writes nothing.

        Raises:
            InvalidInputError: A bad default, or a dataset without a
                privacy-unit column (consent is per person).
        """
        info = self._dataset(dataset, Permission.CONSENT_MANAGE, "consent.enable")
        check_status(default, what="default")
        if info.schema.privacy_unit is None:
            raise InvalidInputError(
                f"'{dataset}' declares no privacy-unit column, so its rows name no person",
                expected="a dataset with a privacy-unit column (e.g. patient_id)",
                got="one row per person, unnamed",
                fix=f"declare it: veil datasets update {dataset} --id COLUMN",
            )
        with self.store.session(lock=True) as session:
            row = session.get(DatasetConsentRow, _id(info), with_for_update=True)
            previous = None if row is None else row.default
            result = {"dataset": dataset, "default": default, "previous": previous}
            if previous == default:
                return result | {"changed": False}
            if row is None:
                session.add(
                    DatasetConsentRow(
                        dataset_id=_id(info),
                        default=default,
                        enabled_at=datetime.now(UTC),
                        enabled_by=self.access.principal.name,
                    )
                )
            else:
                row.default = default
            self.access.append(
                session,
                "consent.enable",
                dataset=registered_name(info),
                links={"dataset_id": _id(info)},
                details={
                    "default": default,
                    "previous": previous,
                    "privacy_unit": info.schema.privacy_unit,
                },
            )
            return result | {"changed": True}

    # ------------------------------------------------------------ records
    def record(
        self,
        dataset: str,
        person: Any,
        purpose: str,
        status: str,
        *,
        at: datetime | str | None = None,
        source: str = "api",
    ) -> int:
        """Append one record (``consent.manage`` on ``dataset``; on the trail); its id.

        ``at`` is when the person decided (default: now; a naive time is UTC).

        Raises:
            InvalidInputError: An undeclared purpose, a bad status, time,
                source or identifier (nothing written).
        """
        info = self._dataset(dataset, Permission.CONSENT_MANAGE, "consent.record")
        vocabulary = {p.name for p in self.purposes()}
        line = check_line(
            person, purpose, status, at=at, source=source, vocabulary=vocabulary, where=""
        )
        ids = self._write(info, [line], action="consent.record", details={})
        return ids[0]

    def import_csv(
        self, dataset: str, path: str | Path, *, source: str | None = None
    ) -> ImportReport:
        """Import records from a CSV file: every line checked first, then one transaction.

        Columns: ``person``, ``purpose``, ``status``, and optionally ``at``
        (ISO 8601; default now) and ``source`` (default: ``source``, else the
        file's name). One bad line refuses the whole file, naming the line;
        nothing is written.
        """
        info = self._dataset(dataset, Permission.CONSENT_MANAGE, "consent.import")
        path = Path(path)
        vocabulary = {p.name for p in self.purposes()}
        lines = read_csv(path, vocabulary, fallback=source or f"file:{path.name}")
        if not lines:
            raise InvalidInputError(
                f"{path.name} holds no record",
                expected="at least one line after the header",
                got="none",
            )
        ids = self._write(
            info, lines, action="consent.import", details={"file": path.name, "source": source}
        )
        counts: dict[str, dict[str, int]] = {}
        for (purpose, status), n in sorted(Counter((x.purpose, x.status) for x in lines).items()):
            counts.setdefault(purpose, {})[status] = n
        return ImportReport(
            dataset=dataset,
            records=len(lines),
            persons=len({x.person for x in lines}),
            counts=counts,
            first_record=ids[0],
            last_record=ids[-1],
        )

    def _write(
        self, info: DatasetInfo, lines: list[Line], *, action: str, details: dict[str, Any]
    ) -> list[int]:
        """Tokenise and append ``lines`` with their trail entry, in one transaction; the ids."""
        tokens = person_tokens(self.key, _id(info), [x.person for x in lines])
        who = self.access.principal.name
        recorded_at = datetime.now(UTC)
        rows = [
            ConsentRecordRow(
                dataset_id=_id(info),
                person=token,
                purpose=x.purpose,
                status=x.status,
                at=x.at,
                source=x.source,
                recorded_at=recorded_at,
                recorded_by=who,
            )
            for token, x in zip(tokens, lines, strict=True)
        ]
        counts: dict[str, dict[str, int]] = {}
        for x in lines:
            per = counts.setdefault(x.purpose, {})
            per[x.status] = per.get(x.status, 0) + 1
        extra: dict[str, Any] = {
            "records": len(rows),
            "persons": len(set(tokens)),
            "counts": counts,
        }
        if len(rows) == 1:
            extra["person"] = tokens[0]  # a token names nobody without the persons key
        with self.store.session(lock=True) as session:
            session.add_all(rows)
            session.flush()
            ids = [int(r.id) for r in rows]
            self.access.append(
                session,
                action,
                dataset=registered_name(info),
                links={"dataset_id": _id(info), "records": [ids[0], ids[-1]]},
                details=details | extra,
            )
        return ids

    # ------------------------------------------------------------ reading
    def state(self, dataset: str, person: Any) -> dict[str, ConsentState]:
        """One person's state for every purpose, now (``consent.read`` on ``dataset``)."""
        info = self._dataset(dataset, Permission.CONSENT_READ, "consent.read")
        token = person_tokens(self.key, _id(info), [person])[0]
        now = datetime.now(UTC)
        with self.store.session() as session:
            managed = session.get(DatasetConsentRow, _id(info))
            latest = latest_states(_id(info), as_of=now, person=token)
            found = {
                purpose: ConsentState(status, at, source)
                for purpose, status, at, source in session.execute(
                    select(latest.c.purpose, latest.c.status, latest.c.at, latest.c.source).where(
                        latest.c.rank == 1
                    )
                )
            }
        # One person's decisions are about that person: who looked is on the trail.
        self.access.record(
            "consent.read",
            dataset=registered_name(info),
            links={"dataset_id": _id(info)},
            details={"person": token},
        )
        default = ConsentState(
            managed.default if managed else GRANTED, None, "default" if managed else "not managed"
        )
        return {p.name: found.get(p.name, default) for p in self.purposes()}

    def summary(self, dataset: str) -> dict[str, Any]:
        """Persons per purpose and state, now (``consent.read`` on ``dataset``).

        Returns:
            ``{"dataset", "managed", "default", "through_record", "purposes":
            {purpose: {"granted": n, "withdrawn": n}}}``: persons with a record
            only (persons without one follow ``default``).
        """
        info = self._dataset(dataset, Permission.CONSENT_READ, "consent.read")
        now = datetime.now(UTC)
        with self.store.session() as session:
            managed = session.get(DatasetConsentRow, _id(info))
            through = session.scalar(
                select(func.coalesce(func.max(ConsentRecordRow.id), 0)).where(
                    ConsentRecordRow.dataset_id == _id(info)
                )
            )
            latest = latest_states(_id(info), as_of=now, through=int(through or 0))
            rows = session.execute(
                select(latest.c.purpose, latest.c.status, func.count())
                .where(latest.c.rank == 1)
                .group_by(latest.c.purpose, latest.c.status)
            ).all()
        purposes: dict[str, dict[str, int]] = {
            p.name: dict.fromkeys(STATUSES, 0) for p in self.purposes()
        }
        for purpose, status, n in rows:
            purposes.setdefault(purpose, dict.fromkeys(STATUSES, 0))[status] = int(n)
        return {
            "dataset": dataset,
            "managed": managed is not None,
            "default": managed.default if managed else None,
            "through_record": int(through or 0),
            "as_of": now.isoformat(),
            "purposes": purposes,
        }

    def default(self, dataset: str) -> str | None:
        """``dataset``'s default (``granted``/``withdrawn``), or ``None`` when not under management.

        Needs ``dataset.read_metadata`` only: whether rows are filtered is part
        of what a release on the dataset must know, not a person's state.
        """
        info = self._dataset(dataset, Permission.DATASET_READ_METADATA, "dataset.metadata")
        with self.store.session() as session:
            row = session.get(DatasetConsentRow, _id(info))
            return None if row is None else row.default

    def snapshot(self, dataset: str, purpose: str) -> ConsentSnapshot | None:
        """The state a load of ``dataset`` for ``purpose`` would apply now (before reading rows).

        ``None`` when the dataset is not under consent management. Needs
        ``consent.read`` on ``dataset``.

        Raises:
            InvalidInputError: ``purpose`` names no vocabulary term.
        """
        info = self._dataset(dataset, Permission.CONSENT_READ, "consent.read")
        rule = consent_rule(self.catalog, info, purpose)
        return None if rule is None else rule.snapshot


def _id(info: DatasetInfo) -> int:
    """A registered dataset's id (always set once it is in the store)."""
    assert info.dataset_id is not None  # noqa: S101 - read back from its row
    return info.dataset_id

"""The workspace database's tables (SQLAlchemy 2 declarative models).

A public submodule for Veil's own packages (the catalogue, the ledger and the
migrations read and write these rows), not a user API: users go through
:class:`veil.store.Store`, :class:`veil.data.Catalog` and :class:`veil.ledger.Ledger`.

Every change to these classes needs a migration in ``migrations/versions``;
``tests/store/test_migrations.py`` fails when the two drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = [
    "AccessStateRow",
    "Base",
    "BudgetChangeRow",
    "DatasetRow",
    "GrantRow",
    "LedgerCheckpointRow",
    "PrivacyBudgetRow",
    "PrivacyEventRow",
    "ServiceKeyRow",
    "TrailEntryRow",
    "TrailHeadRow",
    "TrailStateRow",
    "UTCDateTime",
    "same_data_names",
]

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite keeps no time zone; PostgreSQL's ``timestamptz`` does. Either way a
    naive datetime is refused on the way in, and UTC comes back out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        del dialect
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"timestamps must be timezone-aware, got naive {value!r}"
            raise ValueError(msg)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        del dialect
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of all Veil tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DatasetRow(Base):
    """A registered dataset: where it is, what it holds, and its privacy schema."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    format: Mapped[str] = mapped_column(String(32), nullable=False)
    source: Mapped[str] = mapped_column(String(4096), nullable=False)
    content_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n_rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n_columns: Mapped[int] = mapped_column(Integer, nullable=False)
    privacy_schema: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    load_options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    registration_report: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    veil_version: Mapped[str] = mapped_column(String(32), nullable=False)


def same_data_names(session: Session, digest: str, *, exclude: str | None = None) -> list[str]:
    """The active (not archived) registrations of the bytes whose SHA-256 is ``digest``.

    One name at most in a workspace registered under the catalogue's current rule;
    two or more only in a workspace registered before that rule. The ledger calls it
    before giving a dataset a budget: a budget shared out among two names of the
    same data would be spent twice.

    Args:
        session: An open session (the caller's transaction).
        digest: The content SHA-256 (``DatasetRow.content_sha256``).
        exclude: A name to leave out (the dataset being given a budget).

    Returns:
        Their names, oldest registration first.
    """
    rows = session.execute(
        select(DatasetRow.name, DatasetRow.registration_report)
        .where(DatasetRow.content_sha256 == digest)
        .order_by(DatasetRow.id)
    ).all()
    return [n for n, report in rows if "archived" not in report and n != exclude]


class PrivacyBudgetRow(Base):
    """The privacy budget of one dataset: (epsilon, delta), or rho for zCDP.

    Chargers lock this row (``SELECT ... FOR UPDATE`` on PostgreSQL; the
    database write lock on SQLite) so that concurrent releases serialise.
    """

    __tablename__ = "privacy_budgets"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True
    )
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    rho: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)


class BudgetChangeRow(Base):
    """Every change of a dataset's budget, kept for the auditor."""

    __tablename__ = "budget_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    rho: Mapped[float | None] = mapped_column(Float, nullable=True)


class PrivacyEventRow(Base):
    """One release from a dataset: who, when, what, why, and the mechanisms that ran."""

    __tablename__ = "privacy_events"
    __table_args__ = (UniqueConstraint("dataset_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256), nullable=False)
    purpose: Mapped[str] = mapped_column(Text, nullable=False)
    operation: Mapped[str] = mapped_column(String(32), nullable=False)
    what: Mapped[str] = mapped_column(Text, nullable=False)
    mechanisms: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    accountant: Mapped[str] = mapped_column(String(16), nullable=False)
    # The release alone, and the dataset's total after it (epsilon at the budget's delta, or rho).
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    rho: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_delta: Mapped[float | None] = mapped_column(Float, nullable=True)
    spent_rho: Mapped[float | None] = mapped_column(Float, nullable=True)
    # SHA-256 over the previous event's chain and this event's accounting content: a checkpoint
    # names the chain value it was composed up to, and the events after it must link on.
    chain: Mapped[str] = mapped_column(String(64), nullable=False)
    # The privacy-loss distributions this event composed (veil.ledger.encode_leaves), so that
    # another process composes them instead of building them again; covered by ``chain``.
    leaves: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class LedgerCheckpointRow(Base):
    """A dataset's composed privacy loss up to event ``seq``, so a charge composes one event.

    ``state`` is :meth:`veil.ledger.Composition.to_bytes`; ``seal`` binds it to the
    dataset, ``seq`` and ``chain`` (HMAC-SHA256 under the workspace's ledger key, or
    SHA-256 without one). A checkpoint that fails its seal, or whose ``chain`` is not
    the chain of event ``seq``, is ignored and rebuilt from the events.
    """

    __tablename__ = "ledger_checkpoints"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    chain: Mapped[str] = mapped_column(String(64), nullable=False)
    format: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    seal: Mapped[str] = mapped_column(String(96), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class GrantRow(Base):
    """A role held by a principal, on the whole workspace (scope ``*``) or on one dataset."""

    __tablename__ = "access_grants"
    __table_args__ = (UniqueConstraint("principal", "role", "scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    # "*" for the workspace, else a dataset name (not NULL: NULLs never collide in a unique key).
    scope: Mapped[str] = mapped_column(String(128), nullable=False)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    granted_by: Mapped[str] = mapped_column(String(256), nullable=False)


class ServiceKeyRow(Base):
    """A service key: its public id, its principal, and a slow hash of its secret (never the secret)."""

    __tablename__ = "access_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    secret_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    # The (role, scope) pairs the key may exercise: a subset of its principal's grants.
    scopes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(256), nullable=True)


class AccessStateRow(Base):
    """One row: the generation of the grants and keys, bumped by every change.

    A process that keeps grants in memory (the service) re-reads them when the
    generation moved, so a revocation takes effect at the next request.
    """

    __tablename__ = "access_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)


class TrailEntryRow(Base):
    """One entry of the trail: ``body`` (canonical JSON) is what the Merkle leaf covers.

    ``at``, ``actor``, ``action``, ``dataset`` and ``outcome`` repeat fields of
    the body so that ``veil trail show`` can filter with an index; ``veil trail
    verify`` checks that they agree with it. ``leaf`` is the RFC 6962 leaf hash
    of the body and ``chain`` SHA-256 over the previous entry's chain and this
    leaf, so a single edit is named by the first entry whose values disagree.
    """

    __tablename__ = "trail_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    dataset: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    leaf: Mapped[str] = mapped_column(String(64), nullable=False)
    chain: Mapped[str] = mapped_column(String(64), nullable=False)


class TrailStateRow(Base):
    """One row: the trail's size, last chain value and Merkle frontier; appenders lock it."""

    __tablename__ = "trail_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    chain: Mapped[str] = mapped_column(String(64), nullable=False)
    frontier: Mapped[list[str]] = mapped_column(JSON, nullable=False)


class TrailHeadRow(Base):
    """A signed tree head: the Merkle root of the first ``size`` entries, signed with Ed25519."""

    __tablename__ = "trail_heads"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64), nullable=False)
    timestamp: Mapped[str] = mapped_column(String(40), nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)

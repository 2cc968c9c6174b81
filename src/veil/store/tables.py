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
    Index,
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
    "ConsentPurposeRow",
    "ConsentRecordRow",
    "DatasetConsentRow",
    "DatasetRow",
    "DatasetVersionRow",
    "DerivedArtifactRow",
    "ErasureRow",
    "GrantRow",
    "LedgerCheckpointRow",
    "PrivacyBudgetRow",
    "PrivacyEventRow",
    "RetentionPolicyRow",
    "ServeSpoolRow",
    "ServeUsageRow",
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


# Pages of a dataset's releases filtered by actor or operation (keyset on seq) or by time
# (Ledger.releases, the console's history).
Index(
    "ix_privacy_events_actor_seq",
    PrivacyEventRow.dataset_id,
    PrivacyEventRow.actor,
    PrivacyEventRow.seq,
)
Index(
    "ix_privacy_events_operation_seq",
    PrivacyEventRow.dataset_id,
    PrivacyEventRow.operation,
    PrivacyEventRow.seq,
)
Index(
    "ix_privacy_events_created_at",
    PrivacyEventRow.dataset_id,
    PrivacyEventRow.created_at,
    PrivacyEventRow.seq,
)


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


# ------------------------------------------------------------------ governance (issue 23)
class DatasetVersionRow(Base):
    """One version of a managed dataset: a columnar file sealed under its own data key.

    ``path`` is relative to the workspace home; ``object_id`` names the
    version's data key in the vault, so destroying that key (crypto-shredding)
    makes every copy of the file unreadable. ``sha256`` is the digest of the
    plaintext Parquet bytes, checked on every load. ``state`` is ``current``
    (exactly one per dataset), ``superseded`` (a newer version is current; the
    key is destroyed next), or ``shredded`` (key destroyed, file deleted).
    """

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    object_id: Mapped[str] = mapped_column(String(64), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    n_rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConsentPurposeRow(Base):
    """A purpose of the workspace's consent vocabulary (``statistics``, ``model-training``, ...)."""

    __tablename__ = "consent_purposes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)


class DatasetConsentRow(Base):
    """A dataset under consent management, and what holds for a person with no record."""

    __tablename__ = "dataset_consent"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True
    )
    default: Mapped[str] = mapped_column(String(16), nullable=False)  # granted | withdrawn
    enabled_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    enabled_by: Mapped[str] = mapped_column(String(256), nullable=False)


class ConsentRecordRow(Base):
    """One consent event: a person (by keyed token) granted or withdrew one purpose.

    ``at`` is when the person decided (from the source); ``recorded_at`` when
    Veil learnt it. Records are only appended: the state for a person and a
    purpose at a moment is the latest record at or before it.
    """

    __tablename__ = "consent_records"
    # A load's filter asks for the latest record per person of one dataset and purpose.
    __table_args__ = (Index("ix_consent_records_lookup", "dataset_id", "purpose", "person", "at"),)

    # Integer: SQLite assigns ids only to an INTEGER PRIMARY KEY (a BIGINT one stays NULL).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    person: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    purpose: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # granted | withdrawn
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    source: Mapped[str] = mapped_column(String(256), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(256), nullable=False)


class RetentionPolicyRow(Base):
    """A dataset's retention policy: rows older than ``days`` by ``date_column``, or all after ``expire_on``."""

    __tablename__ = "retention_policies"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # max_age | expire_on
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    date_column: Mapped[str | None] = mapped_column(String(256), nullable=True)
    expire_on: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ErasureRow(Base):
    """Rows removed from a managed dataset: one person's erasure, or a retention run.

    ``person`` is the keyed token of the erased person (never the identifier
    itself); ``None`` for retention. ``from_version`` is the version the rows
    were removed from, ``to_version`` the version written without them.
    """

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # erase | retention
    person: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    from_version: Mapped[int] = mapped_column(Integer, nullable=False)
    to_version: Mapped[int] = mapped_column(Integer, nullable=False)
    rows_removed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256), nullable=False)


class DerivedArtifactRow(Base):
    """Something made from a version of a dataset: a model, a synthetic release, an anonymised file.

    Erasure marks what was derived from the versions it supersedes: ``veil
    models show`` and ``veil erase`` report what still carries erased people.
    """

    __tablename__ = "derived_artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # model | synthetic | anonymized
    name: Mapped[str] = mapped_column(String(1024), nullable=False)
    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: a reference dataset
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class ServeSpoolRow(Base):
    """How far the trail holds a ``veil serve`` worker's spool file (bytes flushed).

    A worker writes each request's trail entry to its spool file before it
    answers, and moves the entries to the trail in batches; the offset moves in
    the same transaction as the entries, so a spool replayed after a crash adds
    each entry exactly once.
    """

    __tablename__ = "serve_spools"

    spool_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    flushed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ServeUsageRow(Base):
    """Records a service key has had answered by a served model (its count budget, durable).

    Incremented with the trail entries of the answers (the spool's flush), so the
    count survives a restart of the service and of Redis.
    """

    __tablename__ = "serve_usage"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    answered: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


# ------------------------------------------------------------------ the console (issue 25)
class ConsoleSessionRow(Base):
    """A signed-in console session: the SHA-256 of its cookie's token, never the token.

    A session stands for the service key it was opened with: it ends at
    ``expires_at``, at sign-out (the row is deleted), or as soon as the key is
    revoked or expires (checked on every request).
    """

    __tablename__ = "console_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


# ------------------------------------------------------------------ trail in the console (issue 25)
class TrailNodeRow(Base):
    """The root of a complete, aligned perfect subtree of the trail's Merkle tree.

    The ``2**level`` leaves from ``idx * 2**level`` on (0-based), kept for levels
    of at least ``veil.access._nodes.NODE_LEVEL``: an append-only tree never
    changes them, so an inclusion proof reads about ``log2(size)`` of them
    instead of every leaf. Verification never trusts them (it recomputes).
    """

    __tablename__ = "trail_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


# Keyset pages of the trail filtered by one column, newest first (Trail.page).
Index("ix_trail_entries_actor_seq", TrailEntryRow.actor, TrailEntryRow.seq)
Index("ix_trail_entries_action_seq", TrailEntryRow.action, TrailEntryRow.seq)
Index("ix_trail_entries_dataset_seq", TrailEntryRow.dataset, TrailEntryRow.seq)
Index("ix_trail_entries_outcome_seq", TrailEntryRow.outcome, TrailEntryRow.seq)

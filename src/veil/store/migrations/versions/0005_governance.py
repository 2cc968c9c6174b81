"""Governance: managed dataset versions, consent, retention, erasures, derived artifacts.

Adds ``dataset_versions`` (the sealed, versioned copies of managed datasets),
``consent_purposes``, ``dataset_consent`` and ``consent_records`` (who agreed
to which use, and when), ``retention_policies``, ``erasures`` (rows removed by
an erasure request or a retention run, the person named by a keyed token) and
``derived_artifacts`` (models and releases made from a dataset version).
Existing datasets stay reference datasets; nothing is backfilled. The
consent vocabulary starts with the purposes Veil names in its docs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import veil.store.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_PURPOSES = {
    "statistics": "aggregate statistics and reports (DP queries)",
    "model-training": "training machine-learning models",
    "research": "research studies",
    "synthetic-data": "generating synthetic data",
    "federated-learning": "federated training rounds",
}


def _dataset_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["dataset_id"],
        ["datasets.id"],
        name=op.f(f"fk_{table}_dataset_id_datasets"),
        ondelete="RESTRICT",
    )


def upgrade() -> None:
    utc = veil.store.tables.UTCDateTime
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("shredded_at", utc(), nullable=True),
        _dataset_fk("dataset_versions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("dataset_id", "version", name=op.f("uq_dataset_versions_dataset_id")),
    )
    op.create_index(
        op.f("ix_dataset_versions_dataset_id"), "dataset_versions", ["dataset_id"], unique=False
    )
    op.create_table(
        "consent_purposes",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_consent_purposes")),
    )
    op.create_table(
        "dataset_consent",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("default", sa.String(length=16), nullable=False),
        sa.Column("enabled_at", utc(), nullable=False),
        sa.Column("enabled_by", sa.String(length=256), nullable=False),
        _dataset_fk("dataset_consent"),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_dataset_consent")),
    )
    op.create_table(
        "consent_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("person", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", utc(), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("recorded_at", utc(), nullable=False),
        sa.Column("recorded_by", sa.String(length=256), nullable=False),
        _dataset_fk("consent_records"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    op.create_index(
        op.f("ix_consent_records_dataset_id"), "consent_records", ["dataset_id"], unique=False
    )
    op.create_index(op.f("ix_consent_records_person"), "consent_records", ["person"], unique=False)
    op.create_index(
        "ix_consent_records_lookup",
        "consent_records",
        ["dataset_id", "purpose", "person", "at"],
        unique=False,
    )
    op.create_table(
        "retention_policies",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("date_column", sa.String(length=256), nullable=True),
        sa.Column("expire_on", utc(), nullable=True),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("last_run_at", utc(), nullable=True),
        sa.Column("last_result", sa.JSON(), nullable=True),
        _dataset_fk("retention_policies"),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_retention_policies")),
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("person", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=False),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("rows_removed", sa.BigInteger(), nullable=False),
        sa.Column("at", utc(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        _dataset_fk("erasures"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index(op.f("ix_erasures_dataset_id"), "erasures", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_erasures_person"), "erasures", ["person"], unique=False)
    op.create_table(
        "derived_artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _dataset_fk("derived_artifacts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_derived_artifacts")),
    )
    op.create_index(
        op.f("ix_derived_artifacts_dataset_id"), "derived_artifacts", ["dataset_id"], unique=False
    )
    purposes = sa.table(
        "consent_purposes",
        sa.column("name"),
        sa.column("description"),
        sa.column("created_at", utc()),
        sa.column("created_by"),
    )
    created = datetime.now(UTC)
    op.bulk_insert(
        purposes,
        [
            {"name": n, "description": d, "created_at": created, "created_by": "veil"}
            for n, d in DEFAULT_PURPOSES.items()
        ],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_derived_artifacts_dataset_id"), table_name="derived_artifacts")
    op.drop_table("derived_artifacts")
    op.drop_index(op.f("ix_erasures_person"), table_name="erasures")
    op.drop_index(op.f("ix_erasures_dataset_id"), table_name="erasures")
    op.drop_table("erasures")
    op.drop_table("retention_policies")
    op.drop_index("ix_consent_records_lookup", table_name="consent_records")
    op.drop_index(op.f("ix_consent_records_person"), table_name="consent_records")
    op.drop_index(op.f("ix_consent_records_dataset_id"), table_name="consent_records")
    op.drop_table("consent_records")
    op.drop_table("dataset_consent")
    op.drop_table("consent_purposes")
    op.drop_index(op.f("ix_dataset_versions_dataset_id"), table_name="dataset_versions")
    op.drop_table("dataset_versions")

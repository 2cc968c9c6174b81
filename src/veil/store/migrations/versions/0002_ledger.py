"""The privacy ledger: per-dataset budgets, their changes, and privacy events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veil.store.tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("delta", sa.Float(), nullable=True),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.Column("updated_at", veil.store.tables.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_privacy_budgets_dataset_id_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_privacy_budgets")),
    )
    op.create_table(
        "budget_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("changed_at", veil.store.tables.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("delta", sa.Float(), nullable=True),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_budget_changes_dataset_id_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_changes")),
    )
    op.create_index(
        op.f("ix_budget_changes_dataset_id"), "budget_changes", ["dataset_id"], unique=False
    )
    op.create_table(
        "privacy_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", veil.store.tables.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("mechanisms", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("accountant", sa.String(length=16), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=True),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.Column("spent_epsilon", sa.Float(), nullable=True),
        sa.Column("spent_delta", sa.Float(), nullable=True),
        sa.Column("spent_rho", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_privacy_events_dataset_id_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_events")),
        sa.UniqueConstraint("dataset_id", "seq", name=op.f("uq_privacy_events_dataset_id")),
    )
    op.create_index(
        op.f("ix_privacy_events_dataset_id"), "privacy_events", ["dataset_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_events_dataset_id"), table_name="privacy_events")
    op.drop_table("privacy_events")
    op.drop_index(op.f("ix_budget_changes_dataset_id"), table_name="budget_changes")
    op.drop_table("budget_changes")
    op.drop_table("privacy_budgets")

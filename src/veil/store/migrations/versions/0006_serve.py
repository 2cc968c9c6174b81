"""The service: trail spools of ``veil serve`` workers and per-key usage of served models.

Adds ``serve_spools`` (how many bytes of each worker's spool file the trail
already holds) and ``serve_usage`` (records each service key has had answered
by each served model: the durable half of the count budget).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veil.store.tables

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = veil.store.tables.UTCDateTime
    op.create_table(
        "serve_spools",
        sa.Column("spool_id", sa.String(length=64), nullable=False),
        sa.Column("flushed", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("spool_id", name=op.f("pk_serve_spools")),
    )
    op.create_table(
        "serve_usage",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("answered", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "model", name=op.f("pk_serve_usage")),
    )


def downgrade() -> None:
    op.drop_table("serve_usage")
    op.drop_table("serve_spools")

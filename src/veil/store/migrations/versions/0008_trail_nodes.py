"""The trail in the console: kept Merkle subtree roots, and indexes for paged searches.

Adds ``trail_nodes`` (the root of each complete aligned subtree of
``2**level`` entries: inclusion proofs read about twenty of them instead of
every entry; a trail written before this revision has them computed the first
time a proof needs them) and indexes ``(column, seq)`` on ``trail_entries``
for each column a search filters on exactly (actor, action, dataset, outcome),
so a page of the newest matches is one index range read at any trail size.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXED = ("actor", "action", "dataset", "outcome")


def upgrade() -> None:
    op.create_table(
        "trail_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_trail_nodes")),
    )
    for column in _INDEXED:
        op.create_index(
            f"ix_trail_entries_{column}_seq", "trail_entries", [column, "seq"], unique=False
        )


def downgrade() -> None:
    for column in reversed(_INDEXED):
        op.drop_index(f"ix_trail_entries_{column}_seq", table_name="trail_entries")
    op.drop_table("trail_nodes")

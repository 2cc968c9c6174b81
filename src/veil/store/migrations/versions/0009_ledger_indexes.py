"""The ledger in the console: indexes for pages of a dataset's releases.

Adds ``(dataset_id, actor, seq)`` and ``(dataset_id, operation, seq)`` on
``privacy_events``, so that a page of one actor's (or one kind of) releases
is one index range read at any ledger size, and ``(dataset_id, created_at,
seq)`` for pages between two times (the page's keys are read from the index
alone, then its rows fetched by key). The unique ``(dataset_id, seq)`` already serves
unfiltered pages.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_privacy_events_actor_seq": ["dataset_id", "actor", "seq"],
    "ix_privacy_events_operation_seq": ["dataset_id", "operation", "seq"],
    "ix_privacy_events_created_at": ["dataset_id", "created_at", "seq"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "privacy_events", columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="privacy_events")

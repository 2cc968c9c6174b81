"""The ledger's checkpoints and event chain: a charge composes one event, not the history.

Adds ``privacy_events.chain`` (filled here for existing events, in order, per
dataset), ``privacy_events.leaves`` (empty for existing events) and the ``ledger_checkpoints`` table (filled lazily: the first charge
or status after the upgrade composes the history once and stores it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veil.store.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from veil.store.chain import GENESIS, link  # noqa: PLC0415 - the one definition of a link

    with op.batch_alter_table("privacy_events") as batch:
        batch.add_column(sa.Column("chain", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("leaves", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    events = sa.table(
        "privacy_events",
        sa.column("id", sa.Integer),
        sa.column("dataset_id", sa.Integer),
        sa.column("seq", sa.Integer),
        sa.column("mechanisms", sa.JSON),
        sa.column("chain", sa.String),
    )
    rows = bind.execute(
        sa.select(events.c.id, events.c.dataset_id, events.c.seq, events.c.mechanisms).order_by(
            events.c.dataset_id, events.c.seq
        )
    ).all()
    chains: dict[int, str] = {}
    for row in rows:
        value = link(chains.get(row.dataset_id, GENESIS), row.seq, row.mechanisms)
        chains[row.dataset_id] = value
        bind.execute(sa.update(events).where(events.c.id == row.id).values(chain=value))
    with op.batch_alter_table("privacy_events") as batch:
        batch.alter_column("chain", existing_type=sa.String(length=64), nullable=False)
    op.create_table(
        "ledger_checkpoints",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("seal", sa.String(length=96), nullable=False),
        sa.Column("updated_at", veil.store.tables.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_ledger_checkpoints_dataset_id_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("pk_ledger_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    with op.batch_alter_table("privacy_events") as batch:
        batch.drop_column("leaves")
        batch.drop_column("chain")

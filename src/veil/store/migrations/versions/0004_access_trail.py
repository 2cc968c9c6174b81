"""Access and the trail: grants, service keys, and the hash-chained Merkle trail.

Adds ``access_grants``, ``access_keys`` and ``access_state`` (the generation of
grants and keys), and ``trail_entries``, ``trail_state`` and ``trail_heads``.
Nothing is backfilled here: the trail's first entry (``trail.start``, written
by the first action after the upgrade) pins the ledger's history as it stood,
so privacy events charged before the trail existed are covered by the ledger's
own chain up to that pin, and every later one by an entry of its own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import veil.store.tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    utc = veil.store.tables.UTCDateTime
    op.create_table(
        "access_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("granted_at", utc(), nullable=False),
        sa.Column("granted_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_grants")),
        sa.UniqueConstraint("principal", "role", "scope", name=op.f("uq_access_grants_principal")),
    )
    op.create_index(
        op.f("ix_access_grants_principal"), "access_grants", ["principal"], unique=False
    )
    op.create_table(
        "access_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("secret_hash", sa.String(length=256), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", utc(), nullable=True),
        sa.Column("revoked_at", utc(), nullable=True),
        sa.Column("revoked_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_access_keys")),
    )
    op.create_index(op.f("ix_access_keys_principal"), "access_keys", ["principal"], unique=False)
    op.create_table(
        "access_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_state")),
    )
    op.create_table(
        "trail_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", utc(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("leaf", sa.String(length=64), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_trail_entries")),
    )
    op.create_index(op.f("ix_trail_entries_at"), "trail_entries", ["at"], unique=False)
    op.create_index(op.f("ix_trail_entries_actor"), "trail_entries", ["actor"], unique=False)
    op.create_index(op.f("ix_trail_entries_dataset"), "trail_entries", ["dataset"], unique=False)
    op.create_table(
        "trail_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("frontier", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trail_state")),
    )
    op.create_table(
        "trail_heads",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.String(length=40), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_trail_heads")),
    )
    # The single rows that appenders and grant changes lock.
    access_state = sa.table("access_state", sa.column("id"), sa.column("generation"))
    op.bulk_insert(access_state, [{"id": 1, "generation": 0}])
    trail_state = sa.table(
        "trail_state",
        sa.column("id"),
        sa.column("size"),
        sa.column("chain"),
        sa.column("frontier", sa.JSON),
    )
    op.bulk_insert(trail_state, [{"id": 1, "size": 0, "chain": GENESIS, "frontier": []}])


def downgrade() -> None:
    op.drop_table("trail_heads")
    op.drop_table("trail_state")
    op.drop_index(op.f("ix_trail_entries_dataset"), table_name="trail_entries")
    op.drop_index(op.f("ix_trail_entries_actor"), table_name="trail_entries")
    op.drop_index(op.f("ix_trail_entries_at"), table_name="trail_entries")
    op.drop_table("trail_entries")
    op.drop_table("access_state")
    op.drop_index(op.f("ix_access_keys_principal"), table_name="access_keys")
    op.drop_table("access_keys")
    op.drop_index(op.f("ix_access_grants_principal"), table_name="access_grants")
    op.drop_table("access_grants")

"""The workspace database: tables, sessions and schema versions.

SQLite by default (a WAL-mode file in the workspace), PostgreSQL through
``VEIL_DATABASE_URL``. Every schema change ships as an Alembic migration.
The tables themselves (:mod:`veil.store.tables`) and the ledger's event chain
(:mod:`veil.store.chain`) are public submodules for Veil's own packages.

>>> from veil.store import Store
>>> store = Store.open("sqlite://", upgrade=True)   # in-memory, for a quick look
>>> store.current_revision() == head_revision()
True
"""

from veil.store._store import Store, head_revision

__all__ = ["Store", "head_revision"]

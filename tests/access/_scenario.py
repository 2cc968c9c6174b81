"""A small workspace with real actions on its trail, for the attack tests.

Alice (an owner, the first to act) registers a 40-row CSV through the
catalogue, gives it a budget through the ledger, charges three Laplace
releases and reads the rows twice (once for a mechanism, once raw); then she
exports a signed head (``trail.checkpoint()``), which the tests keep "outside"
the database as an owner would. The trail then reads:

====  ===================  =========================================
seq   action               what
====  ===================  =========================================
1     trail.start          the ledger's pin (empty)
2     access.claim         alice owns the workspace
3     dataset.register     ``visits``
4     budget.set           epsilon 10 (budget change 1)
5-7   privacy.charge       Laplace, scale 1, sensitivity 1 (events 1-3)
8-9   dataset.read         a mechanism's read, a raw read
====  ===================  =========================================
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from veil.access import Access, Principal, TrailReport, TreeHead
from veil.data import Catalog, DataUse
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent
from veil.store import Store
from veil.store.tables import TrailStateRow

DATASET = "visits"
OWNER = "alice"
CHARGE_SEQS = (5, 6, 7)  # the trail entries that record privacy events 1, 2 and 3
SIZE = 9


def laplace(scale: float = 1.0) -> PrivacyEvent:
    """A count released with Laplace noise (sensitivity 1: epsilon = 1 / scale)."""
    return PrivacyEvent("count(*)", (Mechanism.laplace(scale=scale, sensitivity=1.0),))


@dataclass
class World:
    """The store, the trail's signing key, alice's access, and the head she exported."""

    store: Store
    key: bytes
    owner: Access
    catalog: Catalog
    ledger: Ledger
    head: TreeHead
    state_after_charges: tuple[int, str, list[str]]  # trail_state (size, chain, frontier) at 7

    def access(self, name: str = OWNER) -> Access:
        """A fresh access for ``name`` (another process, say), with the trail's key."""
        return Access(self.store, Principal(name), signing_key=self.key)

    def verify(self, *, exported: bool = True) -> TrailReport:
        """The trail verified by a fresh access, against the exported head if ``exported``."""
        return self.access().trail.verify(head=self.head if exported else None)

    def execute(self, sql: str, **params: Any) -> int:
        """Run ``sql`` directly on the database, as someone holding its credentials; rowcount."""
        with self.store.engine.begin() as connection:
            return int(connection.execute(text(sql), params).rowcount)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.store.engine.connect() as connection:
            return list(connection.execute(text(sql), params).all())


def populate(store: Store, tmp_path: Path) -> World:
    """Run the actions in the module docstring on ``store`` (empty, upgraded)."""
    key = secrets.token_bytes(32)
    owner = Access(store, Principal(OWNER), signing_key=key)
    path = tmp_path / "visits.csv"
    path.write_text(
        "age,visits\n" + "".join(f"{20 + i % 50},{i % 7}\n" for i in range(40)), encoding="utf-8"
    )
    catalog = Catalog(store, access=owner)
    catalog.add(path, name=DATASET, bounds={"age": (0, 100), "visits": (0, 10)})
    ledger = Ledger(store, access=owner)
    ledger.set_budget(DATASET, Budget(epsilon=10), reason="initial budget")
    for number in range(3):
        ledger.charge(DATASET, laplace(), purpose=f"release {number + 1}")
    with store.session() as session:
        row = session.get(TrailStateRow, 1)
        assert row is not None
        state = (row.size, row.chain, list(row.frontier))
    catalog.load_frame(DATASET, ["age"], use=DataUse.MECHANISM, purpose="a DP mean of age")
    catalog.load_frame(DATASET, use=DataUse.RAW, purpose="cleaning")
    head = owner.trail.checkpoint()
    assert head.size == SIZE
    return World(store, key, owner, catalog, ledger, head, state)

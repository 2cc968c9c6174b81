"""Signed heads every HEAD_EVERY entries, and the pin of a ledger older than the trail.

A workspace upgraded from before the trail (revision 0003) has privacy events
that no trail entry recorded. The trail's first entry (``trail.start``) pins
the ledger as it stood; ``verify`` then accepts the old history and still
catches an edit of it, through the pinned chain value.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command

from veil.access import HEAD_EVERY, Access, Principal, Trail
from veil.access.verifier import verify_head
from veil.data import Catalog
from veil.ledger import Budget, Ledger, Mechanism, PrivacyEvent
from veil.store import Store
from veil.store import _store as store_module
from veil.store.chain import GENESIS, link

KEY = bytes(range(32))


def _entries(count: int) -> list[dict[str, object]]:
    return [{"actor": "alice", "action": "dataset.read", "dataset": "d"} for _ in range(count)]


def test_a_head_is_signed_every_head_every_entries(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    trail = Trail(store, signing_key=KEY)
    with store.session(lock=True) as session:
        trail.append_many(session, _entries(2 * HEAD_EVERY + 5))  # + trail.start
    heads = trail.heads()
    assert [h.size for h in heads] == [HEAD_EVERY, 2 * HEAD_EVERY]
    public = bytes.fromhex(trail.public_key or "")
    assert all(verify_head(h.to_dict(), public) for h in heads)
    assert trail.verify().ok
    assert trail.verify().heads_checked == 2
    # Without the key nothing is signed, and nothing else changes.
    unsigned = Store.open(f"sqlite:///{tmp_path / 'unsigned.db'}", upgrade=True)
    bare = Trail(unsigned)
    with unsigned.session(lock=True) as session:
        bare.append_many(session, _entries(HEAD_EVERY + 1))
    assert bare.heads() == []
    assert bare.verify().ok


def _downgrade(store: Store, revision: str) -> None:
    config = store_module._alembic_config()
    with store.engine.connect() as connection, connection.begin():
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _laplace(scale: float) -> PrivacyEvent:
    return PrivacyEvent("count", (Mechanism.laplace(scale=scale, sensitivity=1.0),))


def test_a_ledger_older_than_the_trail_is_pinned_and_an_edit_of_it_is_caught(tmp_path):
    url = f"sqlite:///{tmp_path / 'veil.db'}"
    store = Store.open(url, upgrade=True)
    owner = Access(store, Principal("alice"))
    Catalog(store, access=owner).add("sklearn:diabetes", name="d")
    ledger = Ledger(store, access=owner)
    ledger.set_budget("d", Budget(epsilon=10))
    for _ in range(3):
        ledger.charge("d", _laplace(2.0), purpose="before the trail")
    # Back to a Veil without the trail: its tables go, the ledger stays.
    _downgrade(store, "0003")
    store.upgrade()
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM trail_entries")).scalar() == 0
    owner = Access(store, Principal("alice"))  # claims the workspace again: grants went too
    ledger = Ledger(store, access=owner)
    ledger.charge("d", _laplace(2.0), purpose="after the upgrade")
    start = owner.trail.entry(1)
    assert start.action == "trail.start"
    pinned = start.details["ledger"]["datasets"]
    assert [m["seq"] for m in pinned.values()] == [3]
    assert owner.trail.verify().ok
    # Lower the first release's noise in place, relinking the ledger's own chain: the spend
    # falls, the ledger's chain looks whole, and the trail's pin no longer matches.
    with store.engine.begin() as connection:
        rows = connection.execute(
            sa.text("SELECT id, seq, mechanisms, leaves FROM privacy_events ORDER BY seq")
        ).all()
        chain = GENESIS
        for ident, seq, mechanisms, leaves in rows:
            mechs = mechanisms if isinstance(mechanisms, list) else json.loads(mechanisms)
            if seq == 1:
                mechs[0]["parameters"]["scale"] = 1e9
            chain = link(chain, seq, mechs, leaves)
            connection.execute(
                sa.text("UPDATE privacy_events SET mechanisms = :m, chain = :c WHERE id = :i"),
                {"m": json.dumps(mechs), "c": chain, "i": ident},
            )
    report = owner.trail.verify()
    assert not report.ok
    assert any(
        p.kind == "ledger" and "before the trail began" in p.message for p in report.problems
    )


def test_deleted_signed_heads_are_a_warning_and_the_exported_head_still_catches_a_rewrite(
    tmp_path,
):
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    trail = Trail(store, signing_key=KEY)
    with store.session(lock=True) as session:
        trail.append_many(session, _entries(HEAD_EVERY + 10))
    exported = trail.checkpoint()
    assert trail.verify().warnings == ()
    # A database-only attacker deletes every signed head, then rewrites an actor everywhere
    # and rebuilds the trail consistently with the product's own hashing.
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM trail_heads"))
        connection.execute(sa.text("DELETE FROM trail_entries"))
        connection.execute(sa.text("DELETE FROM trail_nodes"))  # else verify names them
        connection.execute(
            sa.text("UPDATE trail_state SET size = 0, chain = :g, frontier = '[]'"), {"g": GENESIS}
        )
    forger = Trail(store)  # no key: it cannot sign
    forged = [{"actor": "mallory", "action": "dataset.read", "dataset": "d"}] * (HEAD_EVERY + 10)
    with store.session(lock=True) as session:
        forger.append_many(session, forged)
    report = trail.verify()
    assert report.ok  # self-consistent: the chain and the tree hold, no head contradicts them
    assert len(report.warnings) == 1 and "missing" in report.warnings[0]
    against_head = trail.verify(head=exported)
    assert not against_head.ok
    assert {p.kind for p in against_head.problems} >= {"rewritten"}

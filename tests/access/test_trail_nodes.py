"""Inclusion and consistency proofs from kept subtree roots equal the ones built from every leaf.

A trail of a few thousand entries with a small kept level (``node_level = 3``:
subtrees of 8 entries and more) exercises every path of
``veil.access._nodes``: kept nodes written by appends, ranges ending in a tail
of leaves, nodes missing (a trail written before ``trail_nodes`` existed, or
rows deleted) computed and kept on first need, and a tampered node that the
verifier then refuses.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import CursorResult, delete, func, select, update

from veil.access import Trail, TreeHead
from veil.access._merkle import consistency_proof, inclusion_proof, root_of
from veil.access.verifier import head_message, verify_consistency, verify_inclusion_proof
from veil.errors import InvalidInputError
from veil.store import Store
from veil.store.tables import TrailEntryRow, TrailNodeRow

# The slow tier (not in `make test-fast`): half a second to seconds a test (databases, servers).
pytestmark = pytest.mark.slow

KEY = bytes(range(32))
LEVEL = 3


def _entries(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"actor": f"user{(start + i) % 5}", "action": "dataset.read", "dataset": "d"}
        for i in range(count)
    ]


def _leaves(store: Store) -> list[bytes]:
    with store.session() as session:
        rows = session.scalars(select(TrailEntryRow.leaf).order_by(TrailEntryRow.seq)).all()
    return [bytes.fromhex(h) for h in rows]


def _nodes(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(TrailNodeRow)) or 0


@pytest.fixture
def trail(store: Store) -> Trail:
    """On SQLite and PostgreSQL (tests/access/conftest.py's store_url)."""
    made = Trail(store)
    made.node_level = LEVEL
    # Several appends of odd sizes, so subtrees are completed inside and across batches.
    written = 0
    for batch in (1, 6, 57, 1000, 333, 1, 1111):
        with store.session(lock=True) as session:
            made.append_many(session, _entries(batch, written))
        written += batch
    return made


def _signed_head(leaves: list[bytes], size: int) -> TreeHead:
    """A head of the first ``size`` leaves, signed with KEY (the verifier needs a signature)."""
    signer = Ed25519PrivateKey.from_private_bytes(KEY)
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    root = root_of(leaves[:size])
    stamp = "2026-12-06T00:00:00Z"
    signature = signer.sign(head_message(size, root, stamp)).hex()
    return TreeHead(size, root.hex(), stamp, public, signature)


def test_appends_keep_every_complete_aligned_subtree(trail: Trail) -> None:
    leaves = _leaves(trail.store)
    size = len(leaves)
    expected = sum(size >> level for level in range(LEVEL, size.bit_length()))
    assert _nodes(trail.store) == expected
    with trail.store.session() as session:
        rows = session.execute(select(TrailNodeRow)).scalars().all()
        for row in random.Random(1).sample(list(rows), 40):  # noqa: S311 - a fixed sample
            width = 1 << row.level
            assert row.hash == root_of(leaves[row.idx * width : (row.idx + 1) * width]).hex()


def test_proofs_equal_the_proofs_from_every_leaf(trail: Trail) -> None:
    leaves = _leaves(trail.store)
    size = len(leaves)
    rng = random.Random(7)  # noqa: S311 - reproducible test positions
    sizes = sorted({1, 2, 7, 8, 9, 64, 1023, 1024, 1025, size, *rng.sample(range(1, size), 25)})
    checked = 0
    for tree_size in sizes:
        head = _signed_head(leaves, tree_size)
        for seq in {1, tree_size, *rng.sample(range(1, tree_size + 1), min(5, tree_size))}:
            document = trail.prove(seq, head=head)
            expected = [h.hex() for h in inclusion_proof(leaves, seq - 1, tree_size)]
            assert document["proof"] == expected
            assert verify_inclusion_proof(document)
            checked += 1
        for old in {1, tree_size // 2, tree_size - 1} - {0}:
            proof = trail.consistency(old, tree_size)
            assert proof == consistency_proof(leaves, old, tree_size)
            old_root = bytes.fromhex(_signed_head(leaves, old).root)
            assert verify_consistency(old, tree_size, old_root, bytes.fromhex(head.root), proof)
    assert checked > 100


def test_missing_nodes_are_computed_once_and_kept(trail: Trail) -> None:
    leaves = _leaves(trail.store)
    size = len(leaves)
    all_nodes = _nodes(trail.store)
    # As a trail written before revision 0008: no kept nodes at all.
    with trail.store.session() as session:
        session.execute(delete(TrailNodeRow))
    head = _signed_head(leaves, size)
    document = trail.prove(5, head=head)
    assert document["proof"] == [h.hex() for h in inclusion_proof(leaves, 4, size)]
    kept = _nodes(trail.store)
    assert 0 < kept <= all_nodes  # the subtrees the proof needed, and every one below them
    # Backfilled nodes are right: every other proof now agrees too, with no more computed.
    for seq in (1, size // 3, size - 2, size):
        assert trail.prove(seq, head=head)["proof"] == [
            h.hex() for h in inclusion_proof(leaves, seq - 1, size)
        ]
    # Some nodes missing in the middle (a partial backfill).
    with trail.store.session() as session:
        session.execute(delete(TrailNodeRow).where(TrailNodeRow.level == LEVEL + 1))
    assert trail.prove(size // 2, head=head)["proof"] == [
        h.hex() for h in inclusion_proof(leaves, size // 2 - 1, size)
    ]
    assert trail.verify().ok  # kept nodes missing are not a problem; wrong ones would be


def test_a_tampered_node_gives_a_proof_the_verifier_refuses(trail: Trail) -> None:
    leaves = _leaves(trail.store)
    size = len(leaves)
    head = _signed_head(leaves, size)
    top = size.bit_length() - 1  # the left half's root: on the path of every right entry
    with trail.store.session() as session:
        changed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(TrailNodeRow)
            .where(TrailNodeRow.level == top, TrailNodeRow.idx == 0)
            .values(hash="00" * 32)
        )
        assert changed.rowcount == 1
    document = trail.prove(size, head=head)
    assert not verify_inclusion_proof(document)
    # Verification recomputes the tree from the entries and names the node that disagrees.
    report = trail.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("node", 1)]
    assert "disagrees" in report.problems[0].message
    assert report.root == head.root  # the tree itself is unchanged


def test_verify_names_a_kept_node_beyond_the_entries(trail: Trail) -> None:
    assert trail.verify().ok
    size = len(_leaves(trail.store))
    with trail.store.session() as session:
        session.add(TrailNodeRow(level=LEVEL, idx=size, hash="11" * 32))
    report = trail.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("node", size * 8 + 1)]
    assert "does not hold" in report.problems[0].message


def test_a_head_beyond_the_trail_is_refused(trail: Trail) -> None:
    leaves = _leaves(trail.store)
    head = _signed_head(leaves, len(leaves))
    bigger = TreeHead(head.size + 10, head.root, head.timestamp)
    with pytest.raises(InvalidInputError, match="larger than the trail"):
        trail.prove(3, head=bigger)


def test_signed_proofs_at_the_default_level_verify(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'veil.db'}", upgrade=True)
    trail = Trail(store, signing_key=KEY)
    with store.session(lock=True) as session:
        trail.append_many(session, _entries(2500))
    leaves = _leaves(store)
    assert _nodes(store) == 2 + 1  # two subtrees of 1024 and one of 2048
    public = bytes.fromhex(trail.public_key or "")
    for seq in (1, 1024, 1025, 2048, 2049, 2501):
        document = trail.prove(seq)
        size = document["head"]["size"]
        assert document["proof"] == [h.hex() for h in inclusion_proof(leaves, seq - 1, size)]
        assert verify_inclusion_proof(document, public)

"""The trail's Merkle tree (veil.access._merkle) against RFC 6962.

Three oracles: the published Certificate Transparency vectors (roots for sizes 0..8 and
their proofs), a slow transcription of RFC 6962 §2.1 (tests/access/_rfc6962.py) for every
tree size up to 70 and every index and old size, and the standalone verifier, which must
accept every proof built here and refuse every corruption of one.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from tests.access import _rfc6962 as rfc

from veil.access import verifier
from veil.access._merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    root_of,
    roots_at,
)
from veil.errors import InvalidInputError

CT = [rfc.leaf(d) for d in rfc.CT_LEAVES]
MAX_SIZE = 70
DATA = [b"entry %d" % i for i in range(MAX_SIZE)]
LEAVES = [rfc.leaf(d) for d in DATA]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(proof: list[bytes], element: int, bit: int) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:element], bytes(changed), *proof[element + 1 :]]


def _path_length(index: int, size: int) -> int:
    """len(PATH(index, D[size])): one hash per split on the way down (RFC 6962 §2.1.1)."""
    length = 0
    while size > 1:
        k = 1 << ((size - 1).bit_length() - 1)
        index, size = (index, k) if index < k else (index - k, size - k)
        length += 1
    return length


# ---------------------------------------------------------------- known answers


def test_roots_match_the_published_vectors_for_sizes_0_to_8():
    for size in range(9):
        assert root_of(CT[:size]) == rfc.CT_ROOTS[size], size


def test_the_empty_tree_is_sha256_of_nothing():
    assert root_of([]) == hashlib.sha256(b"").digest() == Frontier().root()


@pytest.mark.parametrize(("index", "size", "expected"), rfc.CT_INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(index, size, expected):
    assert inclusion_proof(CT, index, size) == expected


@pytest.mark.parametrize(("old_size", "new_size", "expected"), rfc.CT_CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(old_size, new_size, expected):
    assert consistency_proof(CT, old_size, new_size) == expected


# ---------------------------------------------------------------- against the RFC's definitions


def test_roots_match_the_rfc_definition_for_every_size_to_70():
    for size in range(MAX_SIZE + 1):
        assert root_of(LEAVES[:size]) == rfc.mth(DATA[:size]), size


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_proofs_match_path_for_every_index(size):
    for index in range(size):
        expected = rfc.path(index, DATA[:size])
        assert inclusion_proof(LEAVES[:size], index) == expected, index
        # The same proof from a longer trail, for an older head.
        assert inclusion_proof(LEAVES, index, size) == expected, index


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_consistency_proofs_match_proof_for_every_old_size(size):
    for old_size in range(1, size + 1):
        expected = rfc.proof(old_size, DATA[:size])
        assert consistency_proof(LEAVES[:size], old_size) == expected, old_size
        assert consistency_proof(LEAVES, old_size, size) == expected, old_size
    assert consistency_proof(LEAVES, 0, size) == []  # the empty tree: RFC 9162's convention


# ---------------------------------------------------------------- every proof verifies, no corruption does


def _inclusion_corruptions(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):
    """Every way to get an inclusion check wrong that must be refused, with a description."""
    yield "index - 1", (index - 1, size, leaf, proof, root)
    for wrong in range(size + 1):
        if wrong != index:
            yield f"index {wrong}", (wrong, size, leaf, proof, root)
    yield "index ^ 2", (index ^ 2, size, leaf, proof, root)
    yield "size * 2", (index, size * 2, leaf, proof, root)
    yield "size // 2", (index, size // 2, leaf, proof, root)
    for other in range(1, 2 * size + 2):
        # A path tells the size only through its shape (index 0 has the same path in trees
        # of 3 and 4 leaves; the signed head binds the size). Every size that gives this
        # index a path of another length, or does not hold the index, must be refused.
        if index >= other or _path_length(index, other) != len(proof):
            yield f"size {other}", (index, other, leaf, proof, root)
    yield "wrong leaf", (index, size, SOME_HASH, proof, root)
    yield "leaf data instead of its hash", (index, size, b"WrongLeaf", proof, root)
    yield "empty root", (index, size, leaf, proof, verifier.EMPTY_ROOT)
    yield "random root", (index, size, leaf, proof, SOME_HASH)
    yield "trailing garbage", (index, size, leaf, [*proof, b""], root)
    yield "trailing root", (index, size, leaf, [*proof, root], root)
    yield "preceding garbage", (index, size, leaf, [b"", *proof], root)
    yield "preceding root", (index, size, leaf, [root, *proof], root)
    if proof:
        yield "truncated", (index, size, leaf, proof[:-1], root)
        yield "first element dropped", (index, size, leaf, proof[1:], root)
    if len(proof) > 1:
        yield "inserted element", (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)
        yield "two elements swapped", (index, size, leaf, [proof[1], proof[0], *proof[2:]], root)


@pytest.mark.parametrize("size", range(1, 33))
def test_every_inclusion_proof_verifies_and_every_corruption_fails(size):
    leaves = LEAVES[:size]
    root = root_of(leaves)
    bits = range(256) if size <= 16 else range(0, 256, 37)  # every bit on small trees
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        assert verifier.root_from_inclusion(index, size, leaves[index], proof) == root
        assert verifier.verify_inclusion(index, size, leaves[index], proof, root)
        for what, args in _inclusion_corruptions(index, size, proof, root, leaves[index]):
            assert not verifier.verify_inclusion(*args), (index, what)
        for element, bit in itertools.product(range(len(proof)), bits):
            flipped = _flip(proof, element, bit)
            assert not verifier.verify_inclusion(index, size, leaves[index], flipped, root), (
                index,
                element,
                bit,
            )


def _consistency_corruptions(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]):
    yield "old size - 1", (m - 1, n, old, new, proof)
    yield "old size + 1", (m + 1, n, old, new, proof)
    yield "old size ^ 2", (m ^ 2, n, old, new, proof)
    yield "new size * 2", (m, n * 2, old, new, proof)
    yield "new size // 2", (m, n // 2, old, new, proof)
    yield "wrong old root", (m, n, SOME_HASH, new, proof)
    yield "wrong new root", (m, n, old, SOME_HASH, proof)
    yield "swapped roots", (m, n, new, old, proof)
    yield "empty proof", (m, n, old, new, [])
    yield "trailing garbage", (m, n, old, new, [*proof, b""])
    yield "trailing old root", (m, n, old, new, [*proof, old])
    yield "trailing new root", (m, n, old, new, [*proof, new])
    yield "preceding garbage", (m, n, old, new, [b"", *proof])
    yield "preceding old root", (m, n, old, new, [old, *proof])
    yield "preceding new root", (m, n, old, new, [new, *proof])
    yield "preceding proof[0]", (m, n, old, new, [proof[0], *proof])
    yield "truncated", (m, n, old, new, proof[:-1])
    if len(proof) > 1:
        yield "two elements swapped", (m, n, old, new, [proof[1], proof[0], *proof[2:]])


@pytest.mark.parametrize("size", range(2, 25))
def test_every_consistency_proof_verifies_and_every_corruption_fails(size):
    leaves = LEAVES[:size]
    new = root_of(leaves)
    bits = range(256) if size <= 12 else range(0, 256, 37)
    for m in range(1, size):
        old = root_of(leaves[:m])
        proof = consistency_proof(leaves, m)
        assert verifier.verify_consistency(m, size, old, new, proof), m
        for what, args in _consistency_corruptions(m, size, old, new, proof):
            assert not verifier.verify_consistency(*args), (m, what)
        for element, bit in itertools.product(range(len(proof)), bits):
            flipped = _flip(proof, element, bit)
            assert not verifier.verify_consistency(m, size, old, new, flipped), (m, element, bit)
        # A tree that differs from the old one in any leaf is not consistent with the new one.
        for changed in range(m):
            forged = [*leaves[:changed], SOME_HASH, *leaves[changed + 1 : m]]
            assert not verifier.verify_consistency(m, size, root_of(forged), new, proof)


def test_trivial_consistency_needs_an_empty_proof():
    root = root_of(LEAVES[:5])
    assert verifier.verify_consistency(5, 5, root, root, [])
    assert verifier.verify_consistency(0, 5, verifier.EMPTY_ROOT, root, [])
    assert not verifier.verify_consistency(5, 5, root, SOME_HASH, [])
    assert not verifier.verify_consistency(5, 5, root, root, [root])
    assert not verifier.verify_consistency(0, 5, verifier.EMPTY_ROOT, root, [root])
    assert not verifier.verify_consistency(5, 4, root, root, [])  # time travel


# ---------------------------------------------------------------- the frontier


def test_frontier_root_equals_root_of_for_every_size_to_300():
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(300)]
    frontier = Frontier()
    assert frontier.root() == root_of([])
    for size, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == size
        assert len(frontier.nodes) == size.bit_count()
        assert frontier.root() == root_of(leaves[:size]), size


def test_frontier_json_round_trips_and_keeps_appending_the_same():
    frontier = Frontier()
    for size in range(40):
        stored = Frontier.from_json(frontier.size, frontier.to_json())
        assert stored == frontier and stored.root() == frontier.root(), size
        assert all(isinstance(node, str) and len(node) == 64 for node in frontier.to_json())
        stored.append(LEAVES[size])
        frontier.append(LEAVES[size])
        assert stored == frontier, size


def test_frontier_copy_is_independent():
    frontier = Frontier()
    for leaf in LEAVES[:5]:
        frontier.append(leaf)
    twin = frontier.copy()
    twin.append(LEAVES[5])
    assert frontier.size == 5 and frontier.root() == root_of(LEAVES[:5])
    assert twin.root() == root_of(LEAVES[:6])


@pytest.mark.parametrize(
    ("size", "nodes"),
    [
        (-1, []),
        (True, ["00" * 32]),
        (3, ["00" * 32]),  # 3 = 2 + 1 needs two roots
        (1, ["00" * 31]),
        (1, ["zz" * 32]),
        (1, [" 0" * 32]),
        (1, [b"\x00" * 32]),
        (1, "00" * 32),
    ],
)
def test_a_damaged_stored_frontier_is_refused(size, nodes):
    with pytest.raises(InvalidInputError):
        Frontier.from_json(size, nodes)


def test_a_leaf_that_is_not_a_hash_is_refused():
    with pytest.raises(InvalidInputError, match="leaf hashes"):
        Frontier().append(b"entry data")
    with pytest.raises(InvalidInputError):
        root_of([LEAVES[0], b"short"])


@pytest.mark.parametrize(
    ("index", "size"), [(-1, None), (5, 5), (0, 0), (0, 71), (True, None), (0, -1)]
)
def test_an_inclusion_proof_outside_the_tree_is_refused(index, size):
    with pytest.raises(InvalidInputError):
        inclusion_proof(LEAVES[:5] if size is None else LEAVES, index, size)


@pytest.mark.parametrize(("old_size", "new_size"), [(-1, 5), (6, 5), (0, 71), (3, -1)])
def test_a_consistency_proof_outside_the_tree_is_refused(old_size, new_size):
    with pytest.raises(InvalidInputError):
        consistency_proof(LEAVES, old_size, new_size)


# ---------------------------------------------------------------- streaming roots


def test_roots_at_yields_each_requested_root_in_one_pass():
    sizes = [0, 1, 1, 7, 8, 33, MAX_SIZE]
    consumed = []

    def stream():
        for leaf in LEAVES:
            consumed.append(leaf)
            yield leaf

    got = list(roots_at(stream(), sizes))
    assert got == [(size, root_of(LEAVES[:size])) for size in sizes]
    assert len(consumed) == MAX_SIZE


def test_roots_at_resumes_from_a_checkpoint_without_changing_it():
    checkpoint = Frontier()
    for leaf in LEAVES[:20]:
        checkpoint.append(leaf)
    got = list(roots_at(iter(LEAVES[20:]), [20, 21, 64], start=checkpoint))
    assert got == [(s, root_of(LEAVES[:s])) for s in (20, 21, 64)]
    assert checkpoint.size == 20


def test_roots_at_refuses_unsorted_sizes_and_a_truncated_trail():
    with pytest.raises(InvalidInputError, match="not in order"):
        list(roots_at(iter(LEAVES), [5, 3]))
    with pytest.raises(InvalidInputError, match="ran out"):
        list(roots_at(iter(LEAVES[:10]), [5, 11]))


# ---------------------------------------------------------------- at scale


@pytest.mark.slow
def test_a_million_leaf_tree_proves_any_entry_in_at_most_20_hashes():
    leaves = [i.to_bytes(32, "big") for i in range(1_000_000)]  # cheap stand-in leaf hashes
    root = root_of(leaves)
    # 20 = ceil(log2(1,000,000)) hashes for an entry in the left, perfect 2**19 subtree.
    first = inclusion_proof(leaves, 0)
    assert len(first) == 20
    assert verifier.verify_inclusion(0, 1_000_000, leaves[0], first, root)
    # The last entry sits in the rightmost perfect subtree (1,000,000 = 2**19 + 2**18 +
    # 2**17 + 2**16 + 2**14 + 2**9 + 2**6): 6 hashes inside it, one per larger subtree.
    last = inclusion_proof(leaves, 999_999)
    assert len(last) == 6 + 6 == _path_length(999_999, 1_000_000)
    assert verifier.verify_inclusion(999_999, 1_000_000, leaves[-1], last, root)
    assert max(_path_length(i, 1_000_000) for i in range(0, 1_000_000, 997)) == 20
    consistency = consistency_proof(leaves, 999_999)
    old = root_of(leaves[:999_999])
    assert verifier.verify_consistency(999_999, 1_000_000, old, root, consistency)

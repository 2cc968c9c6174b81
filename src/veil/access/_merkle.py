"""The RFC 6962 Merkle tree behind the access trail: roots, proofs and the frontier.

The trail stores one leaf hash per entry (:func:`veil.access.verifier.leaf_hash` of the
entry's canonical JSON) and, after each append, the tree's *frontier*: the roots of the
perfect subtrees that make up the tree so far. From the frontier alone the next root
follows in ``O(log n)`` hashes, so appending never rereads the trail. Proofs are built
from the stored leaf hashes, or from the kept roots of complete subtrees
(:mod:`veil.access._nodes`) and a few leaves.

Everything here is RFC 6962 §2.1 (restated in RFC 9162 §2.1): the Merkle Tree Hash with
domain-separated leaf (``0x00``) and node (``0x01``) hashes, the audit path PATH
(§2.1.1) and the consistency proof PROOF (§2.1.2). The hash functions come from
:mod:`veil.access.verifier`, the standalone module an auditor runs, so Veil and its
auditors cannot disagree on them; the verification side lives there too.

Written by hand rather than taken from a library: the maintained implementations
(transparency-dev/merkle, Trillian) are Go; the Python packages on PyPI are unmaintained
or hash differently from RFC 6962. The code is small and checked against the RFC's
reference vectors and a direct transcription of the RFC's recursive definitions.

Cost: a root or a proof over ``n`` leaves hashes each internal node at most once (level
by level over lists, about ``n`` hashes; a second or so for a million leaves in CPython);
:meth:`Frontier.append` hashes once per carry, one hash per append on average.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from veil.access.verifier import EMPTY_ROOT, HASH_SIZE, node_hash
from veil.errors import InvalidInputError

__all__ = [
    "Frontier",
    "consistency_proof",
    "inclusion_proof",
    "root_of",
    "roots_at",
]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): RFC 6962's split point ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidInputError(
            f"{what} is not a SHA-256 hash",
            expected=f"{HASH_SIZE} bytes",
            got=got,
            fix="pass leaf hashes (veil.access.verifier.leaf_hash of the entry), not the data",
        )
    return value


def _check_size(size: int | None, available: int, what: str = "size") -> int:
    if size is None:
        return available
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= available:
        raise InvalidInputError(
            f"the tree {what} is outside the leaves given",
            expected=f"an integer from 0 to {available} (the number of leaves)",
            got=repr(size),
            fix="ask for a tree size the trail has reached",
        )
    return size


class Frontier:
    """The compact range of a tree: the roots of its perfect subtrees, largest first.

    A tree of ``size`` leaves is, in RFC 6962's shape, a row of perfect subtrees whose
    sizes are the binary digits of ``size`` (13 = 8 + 4 + 1). Their roots are all that is
    needed to compute the tree's root and to append: appending a leaf works like adding
    one to a binary counter, merging equal-sized subtrees on each carry.

    Attributes:
        size: The number of leaves appended so far.
    """

    __slots__ = ("_nodes", "size")

    def __init__(self) -> None:
        """An empty tree."""
        self.size = 0
        self._nodes: list[bytes] = []

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """The subtree roots, largest (leftmost) first; one per set bit of :attr:`size`."""
        return tuple(self._nodes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf to the right of the tree.

        Args:
            leaf_hash: The leaf's 32-byte hash (:func:`veil.access.verifier.leaf_hash`).

        Raises:
            InvalidInputError: When ``leaf_hash`` is not 32 bytes.
        """
        nodes = self._nodes
        nodes.append(_check_hash(leaf_hash, "the leaf hash"))
        carry = self.size
        while carry & 1:  # each trailing 1 bit of the old size is a subtree to merge
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            carry >>= 1
        self.size += 1

    def append_merged(self, leaf_hash: bytes, from_level: int) -> list[bytes]:
        """Add one leaf, as :meth:`append`, and return the perfect subtrees it completed.

        Appending the leaf that makes :attr:`size` a multiple of ``2**j`` completes one
        aligned perfect subtree at each level ``1..j`` (the one ending at the new size);
        those never change again in an append-only tree, so the trail keeps them
        (:mod:`veil.access._nodes`) and builds proofs from them.

        Args:
            leaf_hash: The leaf's 32-byte hash.
            from_level: The lowest level wanted (a subtree of ``2**from_level`` leaves).

        Returns:
            The roots of the completed subtrees at levels ``from_level..j``, lowest first
            (empty for most appends).
        """
        nodes = self._nodes
        nodes.append(_check_hash(leaf_hash, "the leaf hash"))
        carry = self.size
        level = 0
        merged: list[bytes] = []
        while carry & 1:
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            carry >>= 1
            level += 1
            if level >= from_level:
                merged.append(nodes[-1])
        self.size += 1
        return merged

    def root(self) -> bytes:
        """The RFC 6962 Merkle Tree Hash of the leaves so far (``SHA-256("")`` when empty).

        Returns:
            The 32-byte root.
        """
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        root = nodes[-1]
        for node in reversed(nodes[:-1]):
            root = node_hash(node, root)
        return root

    def copy(self) -> Frontier:
        """An independent copy: appending to one does not change the other."""
        twin = Frontier()
        twin.size = self.size
        twin._nodes = list(self._nodes)
        return twin

    def to_json(self) -> list[str]:
        """The subtree roots as hex strings, for a database row (the size is stored beside)."""
        return [node.hex() for node in self._nodes]

    @classmethod
    def from_json(cls, size: int, nodes: Sequence[str]) -> Frontier:
        """Rebuild a frontier stored with :meth:`to_json`.

        Args:
            size: The number of leaves the frontier covers.
            nodes: The hex subtree roots, largest first.

        Returns:
            The frontier.

        Raises:
            InvalidInputError: When the size is negative, the number of roots is not the
                number of set bits of ``size``, or a root is not 64 hex digits.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(
                "a stored frontier's size is not a leaf count",
                expected="a non-negative integer",
                got=repr(size),
                fix="store Frontier.size beside Frontier.to_json()",
            )
        expected = size.bit_count()
        if isinstance(nodes, str) or len(nodes) != expected:
            raise InvalidInputError(
                f"a stored frontier of {size} leaves has the wrong number of subtree roots",
                expected=f"{expected} (one per set bit of the size)",
                got=repr(nodes) if isinstance(nodes, str) else str(len(nodes)),
                fix="store the size and the list from the same Frontier",
            )
        decoded = []
        for node in nodes:
            try:
                raw = bytes.fromhex(node) if isinstance(node, str) and node.isascii() else b""
            except ValueError:
                raw = b""
            if len(raw) != HASH_SIZE or len(node) != 2 * HASH_SIZE:
                raise InvalidInputError(
                    "a stored frontier root is not a SHA-256 hash in hex",
                    expected=f"{2 * HASH_SIZE} hex digits",
                    got=repr(node)[:80],
                    fix="store the list Frontier.to_json() returns, unchanged",
                )
            decoded.append(raw)
        frontier = cls()
        frontier.size = size
        frontier._nodes = decoded
        return frontier

    def __eq__(self, other: object) -> bool:
        """Two frontiers are equal when they cover the same size with the same roots."""
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        """The size and the root, abbreviated."""
        return f"Frontier(size={self.size}, root={self.root().hex()[:16]}...)"


def _mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH of leaf hashes, level by level: pair neighbours, carry an odd last node up.

    The carried node is exactly RFC 6962's unbalanced right edge: at every level the
    paired nodes are the perfect subtrees of the split at the largest power of two.
    """
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = list(map(node_hash, level[0::2], level[1::2]))
        if odd is not None:
            level.append(odd)
    return level[0]


def _checked(leaves: Sequence[bytes], size: int | None) -> Sequence[bytes]:
    n = _check_size(size, len(leaves))
    prefix = leaves if n == len(leaves) else leaves[:n]
    for leaf in prefix:
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            _check_hash(leaf, "a leaf hash")
    return prefix


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash (§2.1) of a list of leaf hashes.

    Args:
        leaves: The leaf hashes in order (:func:`veil.access.verifier.leaf_hash` of each
            entry), not the entries' data.

    Returns:
        The 32-byte root; ``SHA-256("")`` for no leaves.

    Raises:
        InvalidInputError: When a leaf hash is not 32 bytes.
    """
    return _mth(_checked(leaves, None))


def _path_ranges(index: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make up PATH(index, D[lo:hi]), from the leaf up (§2.1.1)."""
    ranges: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = lo + _split(hi - lo)
        if index < k:
            ranges.append((k, hi))
            hi = k
        else:
            ranges.append((lo, k))
            lo = k
    ranges.reverse()  # the recursion appends the top sibling first; the path starts low
    return ranges


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """The audit path of a leaf, RFC 6962 §2.1.1 PATH(index, D[0:size]).

    Args:
        leaves: The trail's leaf hashes in order (at least ``size`` of them).
        index: The 0-based position of the leaf to prove.
        size: The tree size the proof is for (default: all the leaves given), so a proof
            can be made against an older signed head.

    Returns:
        The sibling hashes from the leaf up; ``len`` is about ``log2(size)``.

    Raises:
        InvalidInputError: When ``size`` exceeds the leaves given, ``index`` is not in
            ``[0, size)`` or a leaf hash is not 32 bytes.
    """
    prefix = _checked(leaves, size)
    n = len(prefix)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise InvalidInputError(
            "the entry to prove is not in the tree",
            expected=f"an index from 0 to {n - 1}" if n else "a tree with at least one entry",
            got=repr(index),
            fix="prove an entry the tree of this size contains",
        )
    return [_mth(prefix[a:b]) for a, b in _path_ranges(index, 0, n)]


def _proof_ranges(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make up PROOF(m, D[lo:hi]) in order (§2.1.2 SUBPROOF)."""
    tail: list[tuple[int, int]] = []
    complete = True  # SUBPROOF's b: whether D[lo:lo+m] is the old tree itself
    while True:
        n = hi - lo
        if m == n:
            head = [] if complete else [(lo, hi)]
            return head + tail[::-1]
        k = _split(n)
        if m <= k:
            tail.append((lo + k, hi))
            hi = lo + k
        else:
            tail.append((lo, lo + k))
            lo += k
            m -= k
            complete = False


def consistency_proof(
    leaves: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    """The consistency proof between two tree sizes, RFC 6962 §2.1.2 PROOF(m, D[0:n]).

    Args:
        leaves: The trail's leaf hashes in order (at least ``new_size`` of them).
        old_size: The earlier tree size ``m``.
        new_size: The later tree size ``n`` (default: all the leaves given).

    Returns:
        The proof hashes; empty when ``old_size`` is 0 or equals ``new_size`` (RFC 9162's
        conventions, which :func:`veil.access.verifier.verify_consistency` follows).

    Raises:
        InvalidInputError: When a size is out of range or ``old_size > new_size``.
    """
    prefix = _checked(leaves, new_size)
    n = len(prefix)
    m = _check_size(old_size, n, "old size")
    if m in {0, n}:
        return []
    return [_mth(prefix[a:b]) for a, b in _proof_ranges(m, 0, n)]


def roots_at(
    leaves: Iterable[bytes], sizes: Iterable[int], start: Frontier | None = None
) -> Iterator[tuple[int, bytes]]:
    """Stream the leaves once and yield the tree's root at each of the given sizes.

    The trail's verification uses it to compare every signed head with the stored leaves
    in one pass, holding only a frontier in memory.

    Args:
        leaves: The leaf hashes in order (an iterator is fine), starting after ``start``.
        sizes: The tree sizes wanted, in non-decreasing order.
        start: A frontier to resume from (for instance a checkpoint); it is not changed.
            Default: the empty tree.

    Yields:
        ``(size, root)`` for each size, in order.

    Raises:
        InvalidInputError: When the sizes are not in order, a size is below the start,
            the leaves run out before a size is reached, or a leaf hash is not 32 bytes.
    """
    frontier = Frontier() if start is None else start.copy()
    stream = iter(leaves)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < frontier.size:
            raise InvalidInputError(
                "the tree sizes are not in order",
                expected=f"sizes in non-decreasing order, from {frontier.size} on",
                got=repr(size),
                fix="sort the sizes (the signed heads by size) before streaming",
            )
        while frontier.size < size:
            leaf = next(stream, None)
            if leaf is None:
                raise InvalidInputError(
                    f"the leaves ran out at {frontier.size} before the tree size {size}",
                    expected=f"at least {size} leaves",
                    got=f"{frontier.size} leaves",
                    fix="a head of this size was signed over entries that are now missing:"
                    " the trail was truncated; restore it from a backup",
                )
            frontier.append(leaf)
        yield size, frontier.root()

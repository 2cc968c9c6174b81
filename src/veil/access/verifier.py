"""Verify Veil's access trail without Veil: RFC 6962 Merkle proofs and signed tree heads.

This module is deliberately standalone. An auditor who must check that an access was
recorded in a Veil trail (and that the trail was not rewritten since) should not have to
trust, install or even read the rest of Veil: whoever keeps the trail could change Veil's
code as easily as its data. So this file imports nothing from ``veil``, only the standard
library and the ``cryptography`` package (for Ed25519), and it can be copied out on its
own and run (which is also why it is one file of about 500 lines, not a package)::

    pip install cryptography
    python verifier.py proof.json --public-key 3b6a27bc...  # the key the auditor trusts

It prints ``OK: ...`` and exits 0 when the proof holds, ``FAILED: <reason>`` and exits 1
when it does not (a malformed document is a failure, not a crash). Without
``--public-key`` it checks the head against the key the document carries, which proves the
document is intact but not who signed it (see :func:`verify_head`).

The hashing is RFC 6962's (Certificate Transparency, §2.1), restated in RFC 9162 §2.1:

* a leaf is hashed as ``SHA-256(0x00 || data)`` and an interior node as
  ``SHA-256(0x01 || left || right)``. The one-byte prefixes separate the two domains: without
  them, the 64 bytes ``left || right`` of an interior node would also be a valid leaf, and
  a tree could be presented with a fake "leaf" whose data is two child hashes (a second
  preimage of the root), proving the inclusion of an entry that was never appended;
* the Merkle Tree Hash of ``n`` leaves splits them at ``k``, the largest power of two
  smaller than ``n`` (RFC 6962 §2.1), and the empty tree's hash is ``SHA-256("")``;
* an inclusion proof (audit path) is checked with RFC 9162 §2.1.3.2 and a consistency
  proof between two tree sizes with RFC 9162 §2.1.4.2, in ``O(log n)`` hashes.

The documents it reads are JSON objects. A signed tree head::

    {"format": "veil-trail-head/v1", "size": 10, "root": "<64 hex>",
     "timestamp": "2026-01-02T03:04:05Z", "public_key": "<64 hex: Ed25519 raw key>",
     "signature": "<128 hex: Ed25519 signature of head_message(size, root, timestamp)>"}

and an inclusion proof of one entry::

    {"format": "veil-trail-proof/v1",
     "entry": {"index": 3, "body": "<the entry's canonical JSON text>"},
     "proof": ["<64 hex>", ...], "head": {...a signed tree head...}}

The leaf data of an entry is the UTF-8 encoding of its ``body`` text, exactly as stored;
only the body is covered by the proof, so any other key of ``entry`` is not evidence.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HEAD_FORMAT",
    "PROOF_FORMAT",
    "check_head",
    "check_inclusion_proof",
    "head_message",
    "leaf_hash",
    "main",
    "node_hash",
    "root_from_inclusion",
    "verify_consistency",
    "verify_head",
    "verify_inclusion",
    "verify_inclusion_proof",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 digest: every leaf hash, node hash and root."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The Merkle Tree Hash of the empty tree, ``SHA-256("")`` (RFC 6962 §2.1)."""

HEAD_FORMAT = "veil-trail-head/v1"
"""The ``format`` of a signed tree head, and the first line of the message it signs."""

PROOF_FORMAT = "veil-trail-proof/v1"
"""The ``format`` of an exported inclusion proof document."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_HEAD_PREFIX = HEAD_FORMAT.encode("ascii") + b"\n"
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: ``SHA-256(0x00 || data)`` (RFC 6962 §2.1).

    The ``0x00`` prefix (``0x01`` for interior nodes, see :func:`node_hash`) keeps leaves
    and nodes in separate domains, so no leaf can pass for an interior node: that is what
    stops a second-preimage attack presenting a node's two children as a leaf's data.

    Args:
        data: The leaf's bytes (for the trail, an entry's canonical JSON in UTF-8).

    Returns:
        The 32-byte leaf hash.
    """
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: ``SHA-256(0x01 || left || right)`` (RFC 6962 §2.1).

    Args:
        left: The hash of the left subtree.
        right: The hash of the right subtree.

    Returns:
        The 32-byte node hash.
    """
    return _sha256(_NODE_PREFIX + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a leaf's inclusion proof leads to (RFC 9162 §2.1.3.2).

    Args:
        index: The leaf's 0-based position in the tree.
        size: The number of leaves in the tree the proof is for.
        leaf: The leaf's hash (:func:`leaf_hash` of its data), not the data.
        proof: The audit path, the sibling hashes from the leaf up (RFC 6962 §2.1.1).

    Returns:
        The 32-byte root hash; compare it with a trusted root (:func:`verify_inclusion`).

    Raises:
        ValueError: When the index is not in ``[0, size)``, a hash is not 32 bytes or the
            proof has the wrong length for this index and size.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of {size} leaves")
    if len(leaf) != HASH_SIZE:
        raise ValueError(f"the leaf hash has {len(leaf)} bytes, not {HASH_SIZE}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ValueError(f"a proof hash has {len(p)} bytes, not {HASH_SIZE}")
        if sn == 0:
            raise ValueError("the proof is longer than the path from this leaf to the root")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                # The right edge of an unbalanced tree: climb the levels where this node
                # had no sibling (it was carried up unchanged).
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the proof is shorter than the path from this leaf to the root")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows the leaf hash ``leaf`` at ``index`` in the tree with ``root``.

    RFC 9162 §2.1.3.2. A proof that does not fit the index and size, or any malformed
    argument, is ``False``.

    Args:
        index: The leaf's 0-based position.
        size: The tree size the root is for.
        leaf: The leaf's hash (:func:`leaf_hash` of its data).
        proof: The audit path, from the leaf up.
        root: The trusted root hash of the tree of ``size`` leaves.

    Returns:
        True when the path from the leaf leads to ``root``.
    """
    try:
        computed = root_from_inclusion(index, size, leaf, proof)
    except (ValueError, TypeError):
        return False
    return computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether the tree of ``old_size`` leaves is a prefix of the tree of ``new_size``.

    RFC 9162 §2.1.4.2: from the proof (RFC 6962 §2.1.2 PROOF) both roots are rebuilt, so
    a log that rewrote or dropped any of its first ``old_size`` entries cannot produce one.
    Conventions at the edges, as in the reference implementations: equal sizes need an
    empty proof and equal roots; ``old_size == 0`` is trivially consistent with any tree
    (the empty tree is a prefix of every tree, and an empty proof is then required, the
    roots are not looked at). A larger old size than new size, or any malformed argument,
    is ``False``.

    Args:
        old_size: The earlier tree size.
        new_size: The later tree size.
        old_root: The root of the earlier tree.
        new_root: The root of the later tree.
        proof: The consistency proof.

    Returns:
        True when the proof shows the earlier tree is a prefix of the later one.
    """
    try:
        return _consistent(old_size, new_size, old_root, new_root, proof)
    except (ValueError, TypeError):
        return False


def _consistent(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root starts the path.
        path.insert(0, old_root)
    roots = _roots_from_consistency(old_size, new_size, path)
    return roots is not None and roots == (old_root, new_root)


def _roots_from_consistency(
    old_size: int, new_size: int, path: Sequence[bytes]
) -> tuple[bytes, bytes] | None:
    """The old and new roots a consistency path rebuilds (RFC 9162 §2.1.4.2, steps 3-7)."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while fn and not fn & 1:  # climb past the levels where this node had no sibling
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return (fr, sr) if sn == 0 else None


def head_message(size: int, root: bytes, timestamp: str) -> bytes:
    """The exact bytes a tree head's Ed25519 signature covers.

    ``b"veil-trail-head/v1\\n"`` then the size in decimal, the root in lowercase hex and
    the timestamp, each ending in a newline. The format line keeps these signatures apart
    from any other message signed with the same key.

    Args:
        size: The number of entries the head commits to.
        root: The 32-byte Merkle root of those entries.
        timestamp: When the head was signed, ISO 8601 in UTC.

    Returns:
        The message to sign or verify.
    """
    return _HEAD_PREFIX + f"{size}\n{root.hex()}\n{timestamp}\n".encode()


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _hex(value: object, size: int, what: str) -> bytes:
    """``value`` decoded from exactly ``2 * size`` hex digits, or ValueError naming ``what``."""
    if not isinstance(value, str) or len(value) != 2 * size:
        raise ValueError(f"{what} is not {2 * size} hex digits")
    try:
        return binascii.a2b_hex(value)
    except binascii.Error:  # a2b_hex, unlike bytes.fromhex, also refuses spaces
        raise ValueError(f"{what} is not {2 * size} hex digits") from None


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} is not a non-negative integer")
    return value


def _utc_timestamp(value: object) -> str:
    if not isinstance(value, str) or not value.isprintable():
        raise ValueError("the head's timestamp is not a string of printable characters")
    try:
        # Python before 3.11 does not read a final "Z"; the auditor's Python may be older.
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ValueError("the head's timestamp is not ISO 8601") from None
    _require(
        parsed.utcoffset() == timedelta(0),
        "the head's timestamp is not in UTC (it needs 'Z' or '+00:00')",
    )
    return value


def _parse_head(head: object, public_key: bytes | None) -> tuple[int, bytes]:
    """The size and root of a head whose signature verifies; ValueError with the reason if not.

    Raises:
        ValueError: A malformed head (the reason is the message).
        TypeError: A value of an unexpected type.
        InvalidSignature: The signature does not verify.
    """
    if not isinstance(head, Mapping):
        raise TypeError("the head is not a JSON object")
    _require(head.get("format") == HEAD_FORMAT, f"the head's format is not {HEAD_FORMAT!r}")
    size = _int(head.get("size"), "the head's size")
    root = _hex(head.get("root"), HASH_SIZE, "the head's root")
    timestamp = _utc_timestamp(head.get("timestamp"))
    own_key = _hex(head.get("public_key"), _PUBLIC_KEY_SIZE, "the head's public_key")
    signature = _hex(head.get("signature"), _SIGNATURE_SIZE, "the head's signature")
    _require(
        size > 0 or root == EMPTY_ROOT,
        "the head is for an empty tree but its root is not SHA-256 of nothing",
    )
    key = own_key if public_key is None else bytes(public_key)
    _require(
        len(key) == _PUBLIC_KEY_SIZE, f"the public key has {len(key)} bytes, not {_PUBLIC_KEY_SIZE}"
    )
    _require(key == own_key, "the head names another public key than the one given")
    Ed25519PublicKey.from_public_bytes(key).verify(signature, head_message(size, root, timestamp))
    return size, root


def check_head(head: object, public_key: bytes | None = None) -> str | None:
    """Why a signed tree head fails verification, or None when it holds.

    The same check as :func:`verify_head`, with the reason kept for a person to read.

    Args:
        head: The head as exported (see the module docstring).
        public_key: The 32-byte raw Ed25519 key the auditor trusts, or None to use the
            head's own ``public_key``.

    Returns:
        None when the head is well formed and its signature verifies; else the reason.
    """
    try:
        _parse_head(head, public_key)
    except InvalidSignature:
        whose = "its own public key" if public_key is None else "the given public key"
        return f"the head's signature does not verify with {whose}"
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def verify_head(head: Mapping[str, object], public_key: bytes | None = None) -> bool:
    """Whether a signed tree head is well formed and its Ed25519 signature verifies.

    The signature covers :func:`head_message` of the head's size, root and timestamp.
    With ``public_key`` (the key the auditor obtained from the trail's keeper through a
    channel they trust), a valid signature proves the keeper signed this head; the head
    must also name that key. Without it, the head's own ``public_key`` is used: that
    proves only that the head was not altered after signing, since whoever forged a head
    could sign it with a key of their own and put that key in the head.

    Args:
        head: The head as exported: ``format``, ``size``, ``root``, ``timestamp``
            (ISO 8601, UTC), ``public_key`` and ``signature`` (see the module docstring).
        public_key: The 32-byte raw Ed25519 key the auditor trusts, or None.

    Returns:
        True when the head verifies; False for a bad signature or any malformed input
        (it never raises).
    """
    return check_head(head, public_key) is None


def _check_document(document: object, public_key: bytes | None) -> None:
    """Raise ValueError (the reason), TypeError or InvalidSignature unless the proof holds."""
    if not isinstance(document, Mapping):
        raise TypeError("the document is not a JSON object")
    _require(
        document.get("format") == PROOF_FORMAT, f"the document's format is not {PROOF_FORMAT!r}"
    )
    entry = document.get("entry")
    if not isinstance(entry, Mapping):
        raise TypeError("the document's entry is not a JSON object")
    index = _int(entry.get("index"), "the entry's index")
    body = entry.get("body")
    if not isinstance(body, str):
        raise TypeError("the entry's body is not a string")
    hashes = document.get("proof")
    if not isinstance(hashes, list):
        raise TypeError("the document's proof is not a list")
    proof = [_hex(h, HASH_SIZE, f"proof[{i}]") for i, h in enumerate(hashes)]
    size, root = _parse_head(document.get("head"), public_key)
    leaf = leaf_hash(body.encode("utf-8"))  # UnicodeEncodeError is a ValueError
    _require(
        verify_inclusion(index, size, leaf, proof, root),
        f"the proof does not lead from entry {index} to the root of the head",
    )


def check_inclusion_proof(document: object, public_key: bytes | None = None) -> str | None:
    """Why an exported inclusion proof fails verification, or None when it holds.

    The same check as :func:`verify_inclusion_proof`, with the reason kept for a person.

    Args:
        document: The proof document (see the module docstring).
        public_key: The 32-byte raw Ed25519 key the auditor trusts, or None.

    Returns:
        None when the entry is in the signed tree; else the reason it is not shown to be.
    """
    try:
        _check_document(document, public_key)
    except InvalidSignature:
        whose = "its own public key" if public_key is None else "the given public key"
        return f"the head's signature does not verify with {whose}"
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def verify_inclusion_proof(document: Mapping[str, object], public_key: bytes | None = None) -> bool:
    """Whether an exported proof shows its entry in a signed tree head.

    Three checks, all needed: the leaf hash of the entry's body (its UTF-8 bytes), the
    audit path from that leaf at the entry's index to the head's root for the head's
    size (RFC 9162 §2.1.3.2), and the head's signature (:func:`verify_head`, with
    ``public_key`` if given, else the head's own key, which proves integrity only).

    Args:
        document: ``{"format": "veil-trail-proof/v1", "entry": {"index", "body"},
            "proof": [hex, ...], "head": {...}}``.
        public_key: The 32-byte raw Ed25519 key the auditor trusts, or None.

    Returns:
        True when all three hold; False otherwise, malformed input included (it never
        raises).
    """
    return check_inclusion_proof(document, public_key) is None


def main(argv: Sequence[str] | None = None) -> int:
    """Check an inclusion proof file: ``python verifier.py proof.json [--public-key HEX]``.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 when the proof holds (``OK`` is printed), 1 when it does not or cannot be read
        (``FAILED`` and the reason are printed).
    """
    parser = argparse.ArgumentParser(
        prog="verifier.py",
        description="Verify an exported Veil trail inclusion proof (RFC 6962, Ed25519).",
    )
    parser.add_argument("proof", help="the proof document (JSON), or - for standard input")
    parser.add_argument(
        "--public-key",
        metavar="HEX",
        help="the trail's Ed25519 public key (64 hex digits) that you trust; without it "
        "the head's own key is used, which proves integrity but not who signed it",
    )
    args = parser.parse_args(argv)
    key: bytes | None = None
    try:
        if args.public_key is not None:
            key = _hex(args.public_key.strip(), _PUBLIC_KEY_SIZE, "--public-key")
        text = sys.stdin.read() if args.proof == "-" else Path(args.proof).read_text("utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        sys.stdout.write(f"FAILED: {exc}\n")
        return 1
    problem = check_inclusion_proof(document, key)
    if problem is not None:
        sys.stdout.write(f"FAILED: {problem}\n")
        return 1
    head = document["head"]
    signer = "the given key" if key is not None else "its own key (integrity only)"
    sys.stdout.write(
        f"OK: entry {document['entry']['index'] + 1} (leaf index {document['entry']['index']}) "
        f"is in the trail of {head['size']} entries "
        f"with root {head['root']}, signed at {head['timestamp']} by {signer}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

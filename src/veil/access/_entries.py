"""A trail entry and a tree head: what is hashed, signed and exported.

An entry's **body** is canonical JSON (sorted keys, no spaces, ASCII, no NaN):
its UTF-8 bytes are the Merkle leaf data, so anyone holding a body can hash it
with :func:`veil.access.verifier.leaf_hash` and check it against a proof.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from veil._io import to_jsonable
from veil.access.verifier import leaf_hash
from veil.errors import InvalidInputError
from veil.store.tables import TrailHeadRow

__all__ = ["HEAD_FORMAT", "PROOF_FORMAT", "Outcome", "TrailEntry", "TreeHead", "canonical"]

HEAD_FORMAT = "veil-trail-head/v1"
PROOF_FORMAT = "veil-trail-proof/v1"
ROOT_BYTES = 32


class Outcome(StrEnum):
    """What became of the action an entry records."""

    ALLOWED = "allowed"
    REFUSED = "refused"
    FAILED = "failed"


def canonical(value: Any) -> str:
    """The canonical JSON text of ``value`` (sorted keys, no spaces, ASCII, no NaN)."""
    return json.dumps(
        to_jsonable(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_link(previous: str, leaf: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + leaf).hexdigest()


@dataclass(frozen=True)
class TrailEntry:
    """One entry, as its body says (the body is what the Merkle leaf covers)."""

    seq: int
    at: str
    actor: str
    action: str
    outcome: Outcome
    purpose: str
    dataset: str | None
    links: Mapping[str, Any]
    details: Mapping[str, Any]
    body: str
    leaf: str

    @classmethod
    def from_body(cls, body: str, leaf: str | None = None) -> TrailEntry:
        data = json.loads(body)
        return cls(
            seq=int(data["seq"]),
            at=str(data["at"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
            outcome=Outcome(data["outcome"]),
            purpose=str(data["purpose"]),
            dataset=data["dataset"],
            links=data["links"],
            details=data["details"],
            body=body,
            leaf=leaf or leaf_hash(body.encode("ascii")).hex(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "outcome": str(self.outcome),
            "purpose": self.purpose,
            "dataset": self.dataset,
            "links": dict(self.links),
            "details": dict(self.details),
            "leaf": self.leaf,
        }


@dataclass(frozen=True)
class TreeHead:
    """The root of the first ``size`` entries, signed (or not, without a key)."""

    size: int
    root: str
    timestamp: str
    public_key: str | None = None
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "size": self.size,
            "root": self.root,
            "timestamp": self.timestamp,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeHead:
        try:
            size, root = int(data["size"]), str(data["root"])
            well_formed = (
                data.get("format") == HEAD_FORMAT
                and size >= 0
                and len(bytes.fromhex(root)) == ROOT_BYTES
            )
            if well_formed:
                return cls(
                    size=size,
                    root=root,
                    timestamp=str(data["timestamp"]),
                    public_key=data.get("public_key"),
                    signature=data.get("signature"),
                )
            problem = f"format {data.get('format')!r}, size {size}, root {root[:16]!r}"
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        raise InvalidInputError(
            "not a Veil trail head",
            expected=f'a JSON object with "format": "{HEAD_FORMAT}", size, root (64 hex '
            "digits), timestamp, public_key and signature",
            got=problem,
            fix="pass the file written by `veil trail checkpoint -o FILE`",
        )


def head_of(row: TrailHeadRow) -> TreeHead:
    return TreeHead(
        row.size, row.root, row.timestamp, row.public_key or None, row.signature or None
    )

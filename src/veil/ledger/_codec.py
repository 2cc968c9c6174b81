"""How a composition is stored: its bytes, bit-exact, and the seal that binds them to a row.

A stored state (:meth:`~veil.ledger._composition.Composition.to_bytes`) and
the leaf distributions of one event (:func:`encode_leaves`, kept on the
event's ledger row) share one layout: a magic number, the length of a JSON
header (``repr`` of a float round-trips exactly through JSON), then the raw
little-endian float64 arrays of each privacy-loss distribution. Reading
checks every length and raises ``ValueError`` on anything malformed, so a
damaged record is rebuilt from the events, never trusted. :func:`seal` binds a
stored state to its context (the dataset, the event it was composed up to, its
link): HMAC-SHA256 under the workspace's ``ledger`` key, else a plain SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import pld_pmf
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from veil.ledger._events import flatten

__all__ = [
    "FORMAT",
    "STATE_MAGIC",
    "LeafKey",
    "check_seal",
    "decode_leaves",
    "dense",
    "encode_leaves",
    "pack",
    "pld_from_parts",
    "pmf_parts",
    "seal",
    "unpack",
]

# Stored-state format (bump when the layout changes: an old checkpoint is then rebuilt).
FORMAT = 2
STATE_MAGIC = b"VEILPLD1"
_LEAVES_MAGIC = b"VEILLEAF"
_LEAVES_FORMAT = 1


def dense(pmf: pld_pmf.PLDPmf) -> pld_pmf.DensePLDPmf:
    return pmf.to_dense_pmf()


LeafKey = tuple[dp_event.DpEvent, int, float]
"""A leaf event, how many times it runs, and the grid interval of its distribution."""


def pmf_parts(pld: pld_lib.PrivacyLossDistribution) -> tuple[list[dict[str, Any]], list[bytes]]:
    parts = [("remove", dense(pld._pmf_remove))]  # noqa: SLF001
    if not pld._symmetric:  # noqa: SLF001
        parts.append(("add", dense(pld._pmf_add)))  # noqa: SLF001
    heads, arrays = [], []
    for side, pmf in parts:
        probs = np.ascontiguousarray(pmf._probs, dtype="<f8")  # noqa: SLF001
        heads.append(
            {
                "side": side,
                "lower": int(pmf._lower_loss),  # noqa: SLF001
                "infinity": float(pmf._infinity_mass),  # noqa: SLF001
                "n": int(probs.size),
            }
        )
        arrays.append(probs.tobytes())
    return heads, arrays


def pld_from_parts(
    data: bytes, offset: int, heads: list[dict[str, Any]], interval: float
) -> tuple[pld_lib.PrivacyLossDistribution, int]:
    pmfs = {}
    for part in heads:
        n = int(part["n"])
        if n < 1 or offset + 8 * n > len(data):
            msg = "a stored distribution is truncated"
            raise ValueError(msg)
        probs = np.frombuffer(data, dtype="<f8", count=n, offset=offset).astype(np.float64)
        offset += 8 * n
        pmfs[part["side"]] = pld_pmf.DensePLDPmf(
            interval,
            int(part["lower"]),
            probs,
            float(part["infinity"]),
            True,  # noqa: FBT003
        )
    return pld_lib.PrivacyLossDistribution(pmfs["remove"], pmfs.get("add")), offset


def pack(header: dict[str, Any], arrays: list[bytes], magic: bytes) -> bytes:
    # repr() of a float round-trips exactly through json.
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return magic + struct.pack("<I", len(head)) + head + b"".join(arrays)


def unpack(data: bytes, magic: bytes) -> tuple[dict[str, Any], int]:
    if not data.startswith(magic) or len(data) < len(magic) + 4:
        msg = "not a Veil composition record"
        raise ValueError(msg)
    (size,) = struct.unpack_from("<I", data, len(magic))
    start = len(magic) + 4
    header = json.loads(data[start : start + size])
    if not isinstance(header, dict):
        msg = "malformed header"
        raise ValueError(msg)  # noqa: TRY004 - malformed bytes, as every other case here
    return header, start + size


def encode_leaves(record: Sequence[tuple[int, LeafKey, pld_lib.PrivacyLossDistribution]]) -> bytes:
    """The leaf distributions one event composed, for its ledger row (see :meth:`Composition.add`)."""
    entries, arrays = [], []
    for index, (_, count, interval), pld in record:
        heads, parts = pmf_parts(pld)
        entries.append({"leaf": index, "count": count, "interval": interval, "pmfs": heads})
        arrays += parts
    return pack({"format": _LEAVES_FORMAT, "leaves": entries}, arrays, _LEAVES_MAGIC)


def decode_leaves(
    data: bytes, event: dp_event.DpEvent
) -> dict[LeafKey, pld_lib.PrivacyLossDistribution]:
    """Inverse of :func:`encode_leaves`, keyed by ``event``'s own leaves (ValueError if malformed)."""
    header, offset = unpack(data, _LEAVES_MAGIC)
    if header.get("format") != _LEAVES_FORMAT:
        msg = f"stored leaves format {header.get('format')!r}, expected {_LEAVES_FORMAT}"
        raise ValueError(msg)
    leaves = flatten([event])
    found: dict[LeafKey, pld_lib.PrivacyLossDistribution] = {}
    for entry in header["leaves"]:
        leaf, count = leaves[int(entry["leaf"])]
        if int(entry["count"]) != count:
            msg = "a stored distribution is for another count"
            raise ValueError(msg)
        interval = float(entry["interval"])
        pld, offset = pld_from_parts(data, offset, entry["pmfs"], interval)
        found[(leaf, count, interval)] = pld
    if offset != len(data):
        msg = "stored leaves have trailing bytes"
        raise ValueError(msg)
    return found


def seal(state: bytes, key: bytes | None, *context: str) -> str:
    """A digest of a stored state bound to its context: HMAC-SHA256 with a key, else SHA-256."""
    message = "\x1f".join(context).encode() + b"\x1e" + state
    if key:
        return "hmac-sha256:" + hmac.new(key, message, hashlib.sha256).hexdigest()
    return "sha256:" + hashlib.sha256(message).hexdigest()


def check_seal(state: bytes, key: bytes | None, seal_value: str, *context: str) -> bool:
    return hmac.compare_digest(seal(state, key, *context), seal_value)

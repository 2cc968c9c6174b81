"""The ledger's event chain: each event's accounting content linked to the one before.

``link(previous, seq, mechanisms, leaves)`` is SHA-256 over the previous link,
the event's number, its mechanisms (canonical JSON) and the SHA-256 of its
stored privacy-loss distributions. A checkpoint records the
link of the last event it composed; a charge composes the events after it only
if each links on, so a checkpoint cannot be paired with a history it was not
built from, and an edited, inserted or deleted event after it is detected.
(Editing events *before* a valid checkpoint cannot lower the spend: the
checkpoint already holds them; ``veil budget verify`` walks the whole chain.)

A public submodule for Veil's own packages (the ledger and the migrations), not a
user API. It lives in the store, below the ledger, because a migration links the
rows it writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["GENESIS", "link"]

GENESIS = "0" * 64


def link(
    previous: str, seq: int, mechanisms: Sequence[dict[str, Any]], leaves: bytes | None = None
) -> str:
    """The chain value of event ``seq`` whose predecessor's chain value is ``previous``.

    ``leaves`` (the event's stored privacy-loss distributions, when it has them) is
    covered by its SHA-256, so a process may compose them instead of rebuilding.
    """
    content: dict[str, Any] = {"seq": int(seq), "mechanisms": list(mechanisms)}
    if leaves:
        content["leaves"] = hashlib.sha256(leaves).hexdigest()
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(f"{previous}:{body}".encode()).hexdigest()

"""The ledger's event chain: each event's accounting content linked to the one before.

``link(previous, seq, mechanisms)`` is SHA-256 over the previous link, the
event's number and its mechanisms (canonical JSON). A checkpoint records the
link of the last event it composed; a charge composes the events after it only
if each links on, so a checkpoint cannot be paired with a history it was not
built from, and an edited, inserted or deleted event after it is detected.
(Editing events *before* a valid checkpoint cannot lower the spend: the
checkpoint already holds them; ``veil budget verify`` walks the whole chain.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["GENESIS", "link"]

GENESIS = "0" * 64


def link(previous: str, seq: int, mechanisms: Sequence[dict[str, Any]]) -> str:
    """The chain value of event ``seq`` whose predecessor's chain value is ``previous``."""
    body = json.dumps(
        {"seq": int(seq), "mechanisms": list(mechanisms)},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(f"{previous}:{body}".encode()).hexdigest()

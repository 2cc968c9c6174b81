"""The opened result of a secure computation, with what it cost (time, bytes, memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MpcResult"]


@dataclass(frozen=True)
class MpcResult:
    """The opened result of a secure computation and what it cost.

    Attributes:
        value: The result: a float, or an array for element-wise operations.
        operation: ``sum``, ``mean``, ``dot`` or ``mul``.
        protocol: ``additive`` or ``shamir``.
        parties: Parties started.
        threshold: Shares needed to reconstruct (``parties`` for additive).
        contributors: Parties whose input is in the result.
        dropped: Parties that did not finish, with the reason.
        frac_bits: Fractional bits of the fixed-point encoding.
        resolution: ``2**-frac_bits``; each value is rounded to within half of it.
        seconds: Wall time of the whole run, process start-up included.
        protocol_seconds: The slowest party's time from connecting to its result.
        bytes_sent: Bytes each node put on the wire (``"dealer"`` included).
        count: Values counted, for a mean over all values.
        phases: The slowest party's seconds per protocol phase.
        refused: Per node, the connections it refused (an address and why: a
            wrong token, an oversized or missing hello); empty in a quiet run.
        peak_memory: Each node's peak resident memory in bytes.
    """

    value: float | npt.NDArray[np.float64]
    operation: str
    protocol: str
    parties: int
    threshold: int
    contributors: tuple[int, ...]
    dropped: dict[int, str]
    frac_bits: int
    resolution: float
    seconds: float
    protocol_seconds: float
    bytes_sent: dict[str, int]
    count: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    refused: dict[str, list[str]] = field(default_factory=dict)
    peak_memory: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes sent by all nodes together."""
        return sum(self.bytes_sent.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an array value becomes a list)."""
        value = self.value.tolist() if isinstance(self.value, np.ndarray) else self.value
        return {
            "value": value,
            "operation": self.operation,
            "protocol": self.protocol,
            "parties": self.parties,
            "threshold": self.threshold,
            "contributors": list(self.contributors),
            "dropped": {str(k): v for k, v in self.dropped.items()},
            "frac_bits": self.frac_bits,
            "resolution": self.resolution,
            "count": self.count,
            "seconds": self.seconds,
            "protocol_seconds": self.protocol_seconds,
            "phases": self.phases,
            "bytes_sent": self.bytes_sent,
            "total_bytes": self.total_bytes,
            "refused": self.refused,
            "peak_memory": self.peak_memory,
        }

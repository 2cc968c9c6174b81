"""The audit report: everything an audit measured, with the claim it measured against.

The type lives apart from :func:`~veil.audit.audit_model`, which fills it, and from
the renderer (``_report``) and the verdicts (``_verdicts``), which read it, so that
none of them needs the others to be read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from veil._io import float_from_json, to_jsonable
from veil.audit._attribute import AttributeResult
from veil.audit._dpaudit import CanaryAudit
from veil.audit._extraction import ExtractionResult
from veil.audit._fairness import FairnessResult
from veil.audit._inversion import InversionResult
from veil.audit._metrics import AttackResult
from veil.audit._verdicts import Verdict, verdicts

__all__ = ["AuditReport"]


@dataclass
class AuditReport:
    """Everything an audit measured, with the claim it measured against."""

    model: str
    card: dict[str, Any]
    train: str
    test: str
    settings: dict[str, Any]
    membership: list[AttackResult] = field(default_factory=list)
    attribute: AttributeResult | None = None
    inversion: InversionResult | None = None
    extraction: ExtractionResult | None = None
    dp: CanaryAudit | None = None
    fairness: FairnessResult | None = None
    utility: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    # Membership tests of erased people after unlearning (veil.governance), newest last.
    unlearning: list[dict[str, Any]] = field(default_factory=list)

    @property
    def claimed_epsilon(self) -> float:
        eps = self.card.get("epsilon")
        return math.inf if eps is None else float_from_json(eps)

    @property
    def claimed_delta(self) -> float:
        return float(self.card.get("delta") or 0.0)

    def verdicts(self) -> list[Verdict]:
        return verdicts(self)

    def to_dict(self, *, per_example: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = to_jsonable(
            {
                "model": self.model,
                "claimed": {
                    "epsilon": self.claimed_epsilon,
                    "delta": self.claimed_delta,
                    "private": bool(self.card.get("private")),
                    "accountant": self.card.get("accountant"),
                },
                "train": self.train,
                "test": self.test,
                "settings": self.settings,
                "verdicts": [v.to_dict() for v in self.verdicts()],
                "membership": [r.to_dict(per_example=per_example) for r in self.membership],
                "attribute": None if self.attribute is None else self.attribute.to_dict(),
                "inversion": None if self.inversion is None else self.inversion.to_dict(),
                "extraction": None if self.extraction is None else self.extraction.to_dict(),
                "dp_audit": None if self.dp is None else self.dp.to_dict(),
                "fairness": None if self.fairness is None else self.fairness.to_dict(),
                "utility": self.utility,
                "notes": self.notes,
                "seconds": self.seconds,
            }
        )
        if self.unlearning:
            out["unlearning"] = to_jsonable(self.unlearning)
        return out

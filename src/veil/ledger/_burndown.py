"""The budget over time, and the RDP cross-check, from a few grouped SQL rows.

Rényi DP composes by adding curves: the RDP curve (one value per order) of a
history is the sum of its events' curves, and one epsilon is read off the sum
at the end. So the cross-check never needs the events one by one: the
database groups them by their stored mechanisms (``GROUP BY
CAST(mechanisms AS TEXT)``), each distinct mechanism set's curve is computed
once (and cached for the process), and the sum is ``count x curve`` over the
groups. A history of 100,000 releases made of a dozen kinds of release is a
dozen curves and a dozen rows.

The burn-down groups the same way per bucket of sequence numbers: bucket ``b``
holds the events ``b*w+1 .. (b+1)*w``, so the running sum at the end of each
bucket is the history's RDP curve up to that event, exactly (the same sum
:class:`~veil.ledger.RDPAccountant` makes, up to the order floats are added
in). The PLD figure at each point is the spend stored with that event when it
was charged (``spent_epsilon``: the ledger's own accountant, at the budget's
delta of that time).

Mechanisms RDP cannot express exactly enter as :class:`RDPAccountant` enters
them: pure epsilon through its zCDP bound, (epsilon, delta) by basic
composition (its epsilon and delta add outside the curve).
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant
from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from veil.errors import InvalidInputError
from veil.ledger._accountants import _quiet_absl, _rdp_form, pure_epsilon
from veil.ledger._budget import Budget
from veil.ledger._events import Mechanism, PrivacyEvent, flatten
from veil.store.tables import BudgetChangeRow, DatasetRow, PrivacyEventRow

__all__ = [
    "MAX_POINTS",
    "BudgetChange",
    "BurnDown",
    "BurnPoint",
    "Curve",
    "CurveCache",
    "burndown",
    "cumulative_curves",
    "history_curve",
]

# The most points one burn-down may ask for (each is one exact RDP conversion).
MAX_POINTS = 2000
# Distinct mechanism sets whose RDP curve a process keeps.
_CURVE_CACHE = 8192


@dataclass(frozen=True)
class Curve:
    """What a history (or one release) adds up to under Rényi DP.

    ``rdp`` is the curve over dp_accounting's default orders; ``basic_epsilon``
    and ``basic_delta`` are the (epsilon, delta) mechanisms composed outside
    it; ``pure`` is the sum of pure epsilons (the answer at delta 0).
    """

    rdp: np.ndarray
    basic_epsilon: float = 0.0
    basic_delta: float = 0.0
    pure: float = 0.0
    leaves: int = 0

    def scaled(self, times: int) -> Curve:
        return Curve(
            self.rdp * times,
            self.basic_epsilon * times,
            self.basic_delta * times,
            self.pure * times,
            self.leaves * times,
        )

    def plus(self, other: Curve) -> Curve:
        return Curve(
            self.rdp + other.rdp,
            self.basic_epsilon + other.basic_epsilon,
            self.basic_delta + other.basic_delta,
            self.pure + other.pure,
            self.leaves + other.leaves,
        )

    def epsilon(self, delta: float) -> float:
        """The epsilon at ``delta``, as :meth:`RDPAccountant.epsilon` reads it."""
        if not self.leaves:
            return 0.0
        if delta == 0:
            return self.pure
        if self.basic_delta >= delta:
            return math.inf
        eps, _ = rdp_privacy_accountant.compute_epsilon(_ORDERS, self.rdp, delta - self.basic_delta)
        return float(eps) + self.basic_epsilon


_ORDERS = np.array(rdp_privacy_accountant.RdpAccountant().orders)
_EMPTY = Curve(np.zeros_like(_ORDERS, dtype=np.float64))


@functools.lru_cache(maxsize=_CURVE_CACHE)
def release_curve(mechanisms_json: str) -> Curve:
    """The curve of one release, from its stored mechanisms (JSON text), cached by that text."""
    mechanisms = json.loads(mechanisms_json)
    event = PrivacyEvent(
        what="", mechanisms=tuple(Mechanism.from_dict(m) for m in mechanisms)
    ).dp_event
    accountant = rdp_privacy_accountant.RdpAccountant()
    basic_eps = basic_delta = pure = 0.0
    leaves = flatten([event])
    for leaf, count in leaves:
        pure += count * pure_epsilon(leaf)
        rdp_event, eps, dlt = _rdp_form(leaf)
        if rdp_event is None:
            basic_eps += eps * count
            basic_delta += dlt * count
        else:
            with _quiet_absl():
                accountant.compose(rdp_event, count)
    curve = Curve(accountant.rdp, basic_eps, basic_delta, pure, len(leaves))
    curve.rdp.setflags(write=False)
    return curve


def _text(column: Any) -> Any:
    return cast(column, String)


def history_curve(session: Session, ds: DatasetRow, last_seq: int) -> Curve:
    """The RDP curve of ``ds``'s releases up to ``last_seq`` (one grouped query)."""
    rows = session.execute(
        select(_text(PrivacyEventRow.mechanisms), func.count())
        .where(PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq <= last_seq)
        .group_by(_text(PrivacyEventRow.mechanisms))
    ).all()
    total = _EMPTY
    for text, count in rows:
        total = total.plus(release_curve(str(text)).scaled(int(count)))
    return total


@dataclass(frozen=True)
class BurnPoint:
    """The budget spent up to (and with) release ``seq``."""

    seq: int
    at: datetime
    epsilon: float | None
    delta: float | None
    rho: float | None
    rdp_epsilon: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "epsilon": _finite(self.epsilon),
            "delta": self.delta,
            "rho": self.rho,
            "rdp_epsilon": _finite(self.rdp_epsilon),
        }


@dataclass(frozen=True)
class BudgetChange:
    """A budget set at ``at`` (the first is the dataset's first budget)."""

    at: datetime
    actor: str
    reason: str
    budget: Budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "budget": self.budget.to_dict(),
        }


@dataclass(frozen=True)
class BurnDown:
    """A dataset's budget over time.

    Attributes:
        points: Sample releases, oldest first (always the first and the last):
            the PLD spend stored with each (``epsilon`` at ``delta``, or
            ``rho``) and the RDP cross-check's epsilon at the current budget's
            delta (``rdp_epsilon``; ``None`` under a rho budget, without a
            budget, or where RDP gives no finite bound).
        budget: The budget now (``None``: none set).
        changes: Every budget change, oldest first.
        events: Releases recorded (the last point's ``seq``).
        rdp_delta: The delta the RDP figures are read at.
    """

    dataset: str
    budget: Budget | None
    events: int
    points: list[BurnPoint]
    changes: list[BudgetChange] = field(default_factory=list)
    rdp_delta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "events": self.events,
            "rdp_delta": self.rdp_delta,
            "points": [p.to_dict() for p in self.points],
            "changes": [c.to_dict() for c in self.changes],
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def check_points(points: int) -> int:
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_POINTS:  # noqa: PLR2004
        raise InvalidInputError(
            "a burn-down's number of points is out of range",
            expected=f"a whole number from 2 to {MAX_POINTS}",
            got=repr(points),
            fix="ask for about as many points as the chart is wide in pixels, e.g. 200",
        )
    return points


def bucket_width(events: int, points: int) -> int:
    """Events per bucket: the first release plus one point per bucket stay within ``points``."""
    return max(1, math.ceil(events / (points - 1)))


def sample_seqs(events: int, width: int) -> list[int]:
    """The first release, then the last of each bucket (the last release closes the last one)."""
    ends = list(range(width, events, width))
    return sorted({1, *ends, events}) if events else []


def bucket_curves(session: Session, ds: DatasetRow, last_seq: int, width: int) -> dict[int, Curve]:
    """Each bucket's RDP curve (bucket ``b``: events ``b*w+1 .. (b+1)*w``), one grouped query."""
    bucket = (PrivacyEventRow.seq - 1) // width
    rows = session.execute(
        select(bucket, _text(PrivacyEventRow.mechanisms), func.count())
        .where(PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq <= last_seq)
        .group_by(bucket, _text(PrivacyEventRow.mechanisms))
    ).all()
    curves: dict[int, Curve] = {}
    for index, text, count in rows:
        part = release_curve(str(text)).scaled(int(count))
        key = int(index)
        curves[key] = curves[key].plus(part) if key in curves else part
    return curves


def cumulative_curves(
    session: Session, ds: DatasetRow, last_seq: int, width: int
) -> dict[int, Curve]:
    """The history's RDP curve at each sample seq (:func:`sample_seqs`)."""
    if last_seq == 0:
        return {}
    per_bucket = bucket_curves(session, ds, last_seq, width)
    first = session.scalar(
        select(_text(PrivacyEventRow.mechanisms)).where(
            PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq == 1
        )
    )
    out: dict[int, Curve] = {1: _EMPTY if first is None else release_curve(str(first))}
    running = _EMPTY
    for b in range((last_seq - 1) // width + 1):
        running = running.plus(per_bucket.get(b, _EMPTY))
        out[min((b + 1) * width, last_seq)] = running
    return out


def burndown(
    session: Session,
    ds: DatasetRow,
    *,
    budget: Budget | None,
    last_seq: int,
    points: int,
    curves: dict[int, Curve],
) -> BurnDown:
    """Assemble the burn-down from the sample rows and the cumulative curves (cached or fresh)."""
    seqs = sample_seqs(last_seq, bucket_width(last_seq, points))
    rows: Sequence[Any] = []
    if seqs:
        rows = session.execute(
            select(
                PrivacyEventRow.seq,
                PrivacyEventRow.created_at,
                PrivacyEventRow.spent_epsilon,
                PrivacyEventRow.spent_delta,
                PrivacyEventRow.spent_rho,
            )
            .where(PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq.in_(seqs))
            .order_by(PrivacyEventRow.seq)
        ).all()
    delta = None if budget is None or budget.rho is not None else budget.delta
    sampled = []
    for seq, at, eps, dlt, rho in rows:
        curve = curves.get(int(seq))
        rdp = None if delta is None or curve is None else curve.epsilon(delta)
        sampled.append(BurnPoint(int(seq), at, eps, dlt, rho, rdp))
    changes = [
        BudgetChange(
            c.changed_at, c.actor, c.reason, Budget(epsilon=c.epsilon, delta=c.delta, rho=c.rho)
        )
        for c in session.scalars(
            select(BudgetChangeRow)
            .where(BudgetChangeRow.dataset_id == ds.id)
            .order_by(BudgetChangeRow.id)
        ).all()
    ]
    return BurnDown(ds.name, budget, last_seq, sampled, changes, delta)


class CurveCache:
    """Cumulative curves per (dataset, last seq, last chain, bucket width), for one process.

    Keyed by the last event's seq and chain value: a new release (or a history
    rewritten under the same seq) is a new key. Holds the last few only.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._held: dict[tuple[int, int, str, int], dict[int, Curve]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, str, int]) -> dict[int, Curve] | None:
        with self._lock:
            return self._held.get(key)

    def put(self, key: tuple[int, int, str, int], curves: dict[int, Curve]) -> None:
        with self._lock:
            self._held[key] = curves
            while len(self._held) > self.size:
                self._held.pop(next(iter(self._held)))

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
holds the releases ``b*w+1 .. (b+1)*w``, so the running sum at the end of each
bucket is the history's RDP curve up to that release, exactly (the same sum
:class:`~veil.ledger.RDPAccountant` makes, up to the order floats are added
in). ``w`` is a power of two, so a bucket complete once stays complete as the
history grows: its curve is kept (:class:`CurveCache`) and a later request
reads only the releases after the last complete bucket. The PLD figure at each
point is the spend stored with that release when it was charged
(``spent_epsilon``: the ledger's own accountant, at the budget's delta of that
time). The status's cross-check is the same sum over all the buckets.

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
from sqlalchemy import String, cast, func, select, type_coerce
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
    "bucket_width",
    "burndown",
    "epsilons",
    "history_curve",
    "release_curve",
    "sample_seqs",
]

# The most points one burn-down may ask for (each is one exact RDP conversion).
MAX_POINTS = 2000
# Distinct mechanism sets whose RDP curve a process keeps.
_CURVE_CACHE = 8192
# Kept buckets hold this many releases (a power of two); wider buckets are sums of them.
_BASE_WIDTH = 64


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
        return epsilons([self], delta)[0]


def epsilons(curves: Sequence[Curve], delta: float) -> list[float]:
    """Each curve's epsilon at ``delta``: :meth:`RDPAccountant.epsilon`'s reading, for many at once.

    The conversion is dp_accounting's ``compute_epsilon`` (the improved bound of
    Asoodeh et al., Proposition 12, minimised over the orders), evaluated on a
    matrix instead of one curve at a time in Python: 200 points cost one numpy
    expression, not 200 loops over the orders.
    """
    if not curves:
        return []
    out = [math.nan] * len(curves)
    rows: list[int] = []
    for i, curve in enumerate(curves):
        if not curve.leaves:
            out[i] = 0.0
        elif delta == 0:
            out[i] = curve.pure
        elif curve.basic_delta >= delta:
            out[i] = math.inf
        else:
            rows.append(i)
    if rows:
        rdp = np.stack([curves[i].rdp for i in rows])
        target = np.array([delta - curves[i].basic_delta for i in rows])[:, None]
        orders = _ORDERS[None, :]
        with np.errstate(all="ignore"):
            bound = rdp + np.log1p(-1 / orders) - np.log(target * orders) / (orders - 1)
        bound = np.where(orders > 1.01, bound, np.inf)  # noqa: PLR2004 - dp_accounting's cut-off
        bound = np.where((target**2 + np.expm1(-rdp) > 0) | (rdp < 0), 0.0, bound)
        best = np.maximum(0.0, bound.min(axis=1))
        for i, eps in zip(rows, best, strict=True):
            out[i] = float(eps) + curves[i].basic_epsilon
    return out


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


def _text(session: Session, column: Any) -> Any:
    """The stored JSON as text: PostgreSQL casts (json has no equality to group by); SQLite
    stores the text already, and a CAST would copy every value (a third of a grouped scan)."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        return type_coerce(column, String)
    return cast(column, String)


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
    """Events per bucket: a power of two, so a bucket complete once stays complete as the
    history grows (its curve is kept), and large enough that the first release, the end of
    each complete bucket and the last release make at most ``points`` points."""
    interior = points - 2
    need = events if interior <= 0 else math.ceil(max(events - 1, 1) / interior)
    return 1 << max(0, (max(need, 1) - 1).bit_length())


def sample_seqs(events: int, width: int) -> list[int]:
    """The first release, the end of each complete bucket, and the last release."""
    return sorted({1, *range(width, events, width), events}) if events else []


@dataclass(frozen=True)
class _Complete:
    """The curves of a dataset's complete buckets of ``width`` events, up to ``boundary``."""

    boundary: int
    chain: str
    curves: tuple[Curve, ...]


class CurveCache:
    """Complete buckets' RDP curves per (dataset, bucket width), for one process.

    A bucket's releases never change once it is complete (releases are only
    appended), so its curve is kept; a request reads only the releases after
    the last complete bucket. The chain value of the boundary's release is
    checked on every use: a history rewritten under it is read again.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._held: dict[tuple[int, int], _Complete] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> _Complete | None:
        with self._lock:
            return self._held.get(key)

    def put(self, key: tuple[int, int], complete: _Complete) -> None:
        with self._lock:
            self._held.pop(key, None)
            self._held[key] = complete
            while len(self._held) > self.size:
                self._held.pop(next(iter(self._held)))


# One per process, shared by every Ledger: the gateway keeps a Ledger per service key, and a
# cache per instance made each key's first page recompose the whole history (over a second at
# 100,000 releases). Sharing is sound across keys and databases alike: a kept entry is used
# only when the chain value of its boundary release matches, and equal chains mean equal
# accounting content, hence equal curves.
SHARED_CURVES = CurveCache(size=256)


def _chain_at(session: Session, ds: DatasetRow, seq: int) -> str:
    if seq == 0:
        return ""
    found = session.scalar(
        select(PrivacyEventRow.chain).where(
            PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq == seq
        )
    )
    return "" if found is None else str(found)


def bucket_curves(
    session: Session, ds: DatasetRow, last_seq: int, width: int, cache: CurveCache
) -> list[Curve]:
    """The curve of each bucket of ``width`` releases up to ``last_seq`` (the last may be
    partial). Wide buckets are sums of :data:`_BASE_WIDTH` ones, so every width (and the
    status's cross-check) shares one set of kept buckets: a process reads a dataset's
    whole history once, then only the releases after its last complete base bucket."""
    if width <= _BASE_WIDTH:
        return _own_buckets(session, ds, last_seq, width, cache)
    base = _own_buckets(session, ds, last_seq, _BASE_WIDTH, cache)
    group = width // _BASE_WIDTH
    curves = []
    for start in range(0, len(base), group):
        total = base[start]
        for curve in base[start + 1 : start + group]:
            total = total.plus(curve)
        curves.append(total)
    return curves


def _own_buckets(
    session: Session, ds: DatasetRow, last_seq: int, width: int, cache: CurveCache
) -> list[Curve]:
    """Buckets of ``width``: kept complete ones, and one grouped query over the rest."""
    key = (ds.id, width)
    held = cache.get(key)
    if (
        held is None
        or held.boundary > last_seq
        or _chain_at(session, ds, held.boundary) != held.chain
    ):
        held = _Complete(0, "", ())
    bucket = (PrivacyEventRow.seq - 1) // width
    text = _text(session, PrivacyEventRow.mechanisms)
    rows = session.execute(
        select(bucket, text, func.count())
        .where(
            PrivacyEventRow.dataset_id == ds.id,
            PrivacyEventRow.seq > held.boundary,
            PrivacyEventRow.seq <= last_seq,
        )
        .group_by(bucket, text)
    ).all()
    first = held.boundary // width
    fresh = _summed(rows, first, math.ceil(last_seq / width) - first)
    curves = [*held.curves, *fresh]
    complete = last_seq // width
    if complete * width > held.boundary:
        boundary = complete * width
        cache.put(
            key, _Complete(boundary, _chain_at(session, ds, boundary), tuple(curves[:complete]))
        )
    return curves


def _summed(rows: Sequence[Any], first: int, buckets: int) -> list[Curve]:
    """Each bucket's curve from (bucket, mechanisms, count) rows: a counts matrix times the
    distinct sets' curves (one matrix product, not a numpy call per row)."""
    sets: dict[str, int] = {}
    cells = [(int(b) - first, sets.setdefault(str(t), len(sets)), int(n)) for b, t, n in rows]
    if not sets:
        return [_EMPTY] * buckets
    curves = [release_curve(t) for t in sets]
    counts = np.zeros((buckets, len(sets)))
    for b, j, n in cells:
        counts[b, j] += n
    used = counts > 0
    # 0 x inf is nan: infinite entries (no pure epsilon, an order RDP cannot bound) are
    # summed as 0 and put back as inf wherever a bucket holds a set that has them.
    rdp = np.stack([c.rdp for c in curves])
    pure = np.array([c.pure for c in curves])
    sums = counts @ np.where(np.isinf(rdp), 0.0, rdp)
    sums[(used @ np.isinf(rdp)) > 0] = np.inf
    pures = counts @ np.where(np.isinf(pure), 0.0, pure)
    pures[(used @ np.isinf(pure)) > 0] = np.inf
    basic_eps = counts @ np.array([c.basic_epsilon for c in curves])
    basic_delta = counts @ np.array([c.basic_delta for c in curves])
    leaves = counts @ np.array([float(c.leaves) for c in curves])
    return [
        Curve(sums[b], float(basic_eps[b]), float(basic_delta[b]), float(pures[b]), int(leaves[b]))
        for b in range(buckets)
    ]


def history_curve(session: Session, ds: DatasetRow, last_seq: int, cache: CurveCache) -> Curve:
    """The RDP curve of ``ds``'s releases up to ``last_seq`` (the status's cross-check)."""
    total = _EMPTY
    for curve in bucket_curves(session, ds, last_seq, _BASE_WIDTH, cache):
        total = total.plus(curve)
    return total


def burndown(
    session: Session,
    ds: DatasetRow,
    *,
    budget: Budget | None,
    last_seq: int,
    points: int,
    cache: CurveCache,
) -> BurnDown:
    """The burn-down of ``ds`` up to release ``last_seq`` (see the module)."""
    width = bucket_width(last_seq, points)
    seqs = sample_seqs(last_seq, width)
    delta = None if budget is None or budget.rho is not None else budget.delta
    rdp: dict[int, float] = {}
    if seqs and delta is not None:
        running, cumulative = _EMPTY, {}
        for b, curve in enumerate(bucket_curves(session, ds, last_seq, width, cache)):
            running = running.plus(curve)
            cumulative[min((b + 1) * width, last_seq)] = running
        first = session.scalar(
            select(_text(session, PrivacyEventRow.mechanisms)).where(
                PrivacyEventRow.dataset_id == ds.id, PrivacyEventRow.seq == 1
            )
        )
        cumulative[1] = _EMPTY if first is None else release_curve(str(first))
        rdp = dict(zip(seqs, epsilons([cumulative[s] for s in seqs], delta), strict=True))
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
    sampled = [
        BurnPoint(int(seq), at, eps, dlt, rho, rdp.get(int(seq))) for seq, at, eps, dlt, rho in rows
    ]
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

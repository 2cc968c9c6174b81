"""Budgets, statuses, receipts, and the one check every charge passes.

:func:`check_charges` is the gate's arithmetic, shared by the workspace
ledger and :class:`~veil.ledger.LocalBudget`: it validates each event, refuses
a single release above :data:`MAX_RELEASE_EPSILON`, composes the event onto
the dataset's :class:`~veil.ledger.Composition` and refuses anything that
would exceed the budget. It writes nothing: the caller records the charges
only if every one of them passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dp_accounting import dp_event

from veil.errors import BudgetExceededError, InvalidInputError
from veil.ledger._codec import encode_leaves
from veil.ledger._composition import Composition
from veil.ledger._events import Mechanism, PrivacyEvent, validate_event
from veil.ledger.params import (
    MAX_RELEASE_EPSILON,
    check_budget_delta,
    check_delta,
    check_epsilon,
    check_rho,
)

__all__ = [
    "Budget",
    "BudgetStatus",
    "CheckedCharge",
    "Receipt",
    "Spent",
    "check_charges",
    "check_purpose",
    "non_private_mechanism",
    "spent_of",
    "status_of",
]

# Float slack when comparing a composed epsilon with the budget (the PLD is already pessimistic).
_SLACK = 1e-9


@dataclass(frozen=True)
class Budget:
    """A dataset's privacy budget: ``(epsilon, delta)`` or zero-concentrated ``rho``."""

    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None

    def __post_init__(self) -> None:
        if self.rho is not None:
            if self.epsilon is not None or self.delta is not None:
                raise InvalidInputError(
                    "a budget is either (epsilon, delta) or rho, not both",
                    expected="--epsilon [--delta] or --rho",
                    got=f"epsilon={self.epsilon}, delta={self.delta}, rho={self.rho}",
                    fix="choose one accounting: (epsilon, delta)-DP or zCDP",
                )
            object.__setattr__(self, "rho", check_rho(self.rho))
            return
        if self.epsilon is None:
            raise InvalidInputError(
                "a budget needs epsilon (with delta) or rho",
                expected="--epsilon E [--delta D] or --rho R",
                got="neither",
                fix="for example: veil budget set adult --epsilon 3 --delta 1e-6",
            )
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        object.__setattr__(self, "delta", check_delta(0.0 if self.delta is None else self.delta))

    @property
    def kind(self) -> str:
        return "zcdp" if self.rho is not None else "approx_dp"

    def to_dict(self) -> dict[str, Any]:
        if self.rho is not None:
            return {"kind": "zcdp", "rho": self.rho}
        return {"kind": "approx_dp", "epsilon": self.epsilon, "delta": self.delta}

    def __str__(self) -> str:
        if self.rho is not None:
            return f"rho={self.rho:g} (zCDP)"
        return f"epsilon={self.epsilon:g}, delta={self.delta:g}"


@dataclass(frozen=True)
class Spent:
    """What a history of events costs, in the budget's own terms."""

    epsilon: float | None = None
    delta: float | None = None
    rho: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.rho is not None:
            return {"rho": self.rho}
        return {"epsilon": _finite_or_none(self.epsilon), "delta": self.delta}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class BudgetStatus:
    """A dataset's budget, what its releases have spent, and what remains."""

    dataset: str
    budget: Budget | None
    spent: Spent
    events: int
    accountant: str
    cross_check: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> float | None:
        """Remaining epsilon (at the budget's delta) or rho; ``None`` without a budget."""
        if self.budget is None:
            return None
        if self.budget.rho is not None:
            return max(0.0, self.budget.rho - (self.spent.rho or 0.0))
        assert self.budget.epsilon is not None  # noqa: S101 - Budget guarantees it
        return max(0.0, self.budget.epsilon - (self.spent.epsilon or 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "budget": None if self.budget is None else self.budget.to_dict(),
            "spent": self.spent.to_dict(),
            "remaining": self.remaining,
            "events": self.events,
            "accountant": self.accountant,
            "cross_check": self.cross_check,
        }


@dataclass(frozen=True)
class Receipt:
    """Proof that a release was charged: give it back with the result."""

    event_id: int
    seq: int
    dataset: str
    epsilon: float | None
    rho: float | None
    status: BudgetStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "seq": self.seq,
            "dataset": self.dataset,
            "charged": {"epsilon": _finite_or_none(self.epsilon), "rho": self.rho},
            "budget": self.status.to_dict(),
        }


def spent_of(budget: Budget, composition: Composition) -> Spent:
    """What a composed history costs, in the budget's own terms."""
    if budget.rho is not None:
        return Spent(rho=composition.zcdp_rho())
    assert budget.delta is not None  # noqa: S101 - Budget guarantees it
    return Spent(epsilon=composition.epsilon(budget.delta), delta=budget.delta)


def status_of(
    dataset: str,
    budget: Budget | None,
    composition: Composition,
    *,
    events: int | None = None,
    cross_check: dict[str, Any] | None = None,
) -> BudgetStatus:
    """The status of a dataset whose history composes to ``composition``."""
    count = composition.events if events is None else events
    if budget is None:
        return BudgetStatus(
            dataset=dataset, budget=None, spent=Spent(), events=count, accountant="pld"
        )
    return BudgetStatus(
        dataset=dataset,
        budget=budget,
        spent=spent_of(budget, composition),
        events=count,
        accountant="zcdp" if budget.rho is not None else "pld",
        cross_check=dict(cross_check or {}),
    )


def check_purpose(purpose: str, *, non_private: bool = False) -> str:
    """A release's stated purpose, stripped; refused when empty."""
    if not isinstance(purpose, str) or not purpose.strip():
        what = "a non-private use" if non_private else "a release"
        raise InvalidInputError(
            f"{what} needs a purpose",
            expected="a short statement of why the data is used",
            got=repr(purpose),
            fix='pass --purpose "monthly cohort report" (it is recorded for the auditor)',
        )
    return purpose.strip()


def non_private_mechanism() -> Mechanism:
    """How a use without DP is recorded: shown in the history, never composed."""
    return Mechanism(
        "non_private",
        {"epsilon": "inf", "note": "NOT PRIVATE: no noise; not composed; do not release"},
        dp_event.NoOpDpEvent(),
    )


@dataclass(frozen=True)
class CheckedCharge:
    """One charge that passed the check: the state after it, and what it cost alone."""

    dataset: str
    event: PrivacyEvent
    alone: Spent
    after: Composition
    status: BudgetStatus
    leaves: bytes | None = None


def check_charges(
    charges: Sequence[tuple[str, PrivacyEvent]],
    *,
    budgets: Mapping[str, Budget | None],
    units: Mapping[str, int | None],
    compositions: Mapping[str, Composition],
    event_counts: Mapping[str, int] | None = None,
) -> list[CheckedCharge]:
    """Check ``charges`` in order against their budgets; refuse the first that does not fit.

    Several charges to one dataset compose one after the other. Nothing is
    written: the caller records the result only if this returns.

    Raises:
        InvalidInputError: A malformed event, a missing purpose, or one release
            above MAX_RELEASE_EPSILON.
        BudgetExceededError: A charge would exceed its budget, or the dataset
            has no budget.
    """
    if not charges:
        raise InvalidInputError("nothing to charge", expected="at least one charge", got="none")
    states = dict(compositions)
    counts = dict(event_counts or {})
    checked = []
    for dataset, event in charges:
        if not isinstance(event, PrivacyEvent):
            raise InvalidInputError(
                "a charge needs a PrivacyEvent",
                expected="PrivacyEvent(what, mechanisms)",
                got=type(event).__name__,
            )
        validate_event(event.dp_event)
        budget = budgets.get(dataset)
        if budget is None:
            raise BudgetExceededError(
                f"dataset '{dataset}' has no privacy budget, so nothing may be released from it",
                expected="a budget set by the data owner",
                got="no budget",
                fix=f"veil budget set {dataset} --epsilon 1.0 --delta 1e-6",
            )
        n = units.get(dataset)
        if budget.delta is not None and n and budget.delta >= 1.0 / n:
            # A budget set before the 1 / n rule: under it almost nothing costs any epsilon.
            check_budget_delta(budget.delta, n, "delta")
        alone = _alone(budget, event.dp_event)
        _check_release_size(dataset, alone)
        before = states[dataset]
        record: list[Any] = []
        after = before.add(event.dp_event, record=record)
        count = counts.get(dataset, before.events) + 1
        counts[dataset] = count
        status = status_of(dataset, budget, after, events=count)
        if not _fits(budget, status.spent):
            spent_before = spent_of(budget, before)
            current = status_of(dataset, budget, before, events=count - 1)
            raise BudgetExceededError(
                f"this release would exceed the privacy budget of '{dataset}'; nothing was "
                "computed or charged",
                expected=f"total spend within {budget}",
                got=f"{_describe(status.spent)} after this release ({_describe(alone)} for it "
                f"alone; {_describe(spent_before)} spent so far)",
                fix=_exceeded_fix(dataset, n, budget, alone),
                details={
                    "budget": budget.to_dict(),
                    "spent": spent_before.to_dict(),
                    "requested": alone.to_dict(),
                    "would_spend": status.spent.to_dict(),
                    "remaining": current.remaining,
                },
            )
        states[dataset] = after
        leaves = encode_leaves(record) if record else None
        checked.append(CheckedCharge(dataset, event, alone, after, status, leaves))
    return checked


def _alone(budget: Budget, event: dp_event.DpEvent) -> Spent:
    """What ``event`` costs on its own (a zCDP budget refuses a mechanism without zCDP)."""
    if budget.rho is not None:
        from veil.ledger._accountants import zcdp_rho  # noqa: PLC0415 - raises the clear error

        return Spent(rho=zcdp_rho([event]))
    return spent_of(budget, Composition().add(event))


def _check_release_size(dataset: str, alone: Spent) -> None:
    """Refuse one release that spends more than MAX_RELEASE_EPSILON (or its zCDP equivalent)."""
    limit_rho = MAX_RELEASE_EPSILON**2 / 2
    if alone.rho is not None:
        too_big, shown = alone.rho > limit_rho, f"rho={alone.rho:.6g} (limit {limit_rho:g})"
    else:
        # An infinite epsilon (no guarantee at the budget's delta) is the budget check's refusal.
        eps = alone.epsilon if alone.epsilon is not None else math.inf
        too_big = math.isfinite(eps) and eps > MAX_RELEASE_EPSILON * (1 + _SLACK)
        shown = f"epsilon={eps:.6g}"
    if too_big:
        raise InvalidInputError(
            f"one release from '{dataset}' may spend at most epsilon {MAX_RELEASE_EPSILON:g}; "
            "nothing was computed or charged",
            expected=f"a release of epsilon <= {MAX_RELEASE_EPSILON:g}",
            got=shown,
            fix="ask for a smaller --epsilon (beyond 100 a release protects nobody); a baseline "
            "without privacy is asked for explicitly (veil train --non-private)",
        )


def _fits(budget: Budget, spent: Spent) -> bool:
    if budget.rho is not None:
        return spent.rho is not None and spent.rho <= budget.rho * (1 + _SLACK)
    assert budget.epsilon is not None  # noqa: S101
    return spent.epsilon is not None and spent.epsilon <= budget.epsilon * (1 + _SLACK)


def _exceeded_fix(dataset: str, units: int | None, budget: Budget, alone: Spent) -> str:
    """How to get past a refusal; a release that needs a delta the budget lacks says so."""
    needs_delta = budget.rho is None and (alone.epsilon is None or not math.isfinite(alone.epsilon))
    if needs_delta:
        suggested = 10 ** math.floor(math.log10(0.1 / (units or 1_000_000)))
        return (
            f"this release needs a delta > 0 (Gaussian noise, as in DP-SGD), and the budget's "
            f"delta is {budget.delta:g}: have the data owner set one, below 1/n"
            + (f" = 1/{units:,}" if units else "")
            + ", "
            f"e.g. `veil budget set {dataset} --epsilon {budget.epsilon:g} --delta {suggested:g}`"
        )
    return (
        "ask for less (a smaller --epsilon), or have the data owner raise the budget with "
        "`veil budget set`"
    )


def _describe(spent: Spent) -> str:
    if spent.rho is not None:
        return f"rho={spent.rho:.6g}"
    eps = spent.epsilon
    shown = (
        "inf (the releases' deltas exceed the budget's delta)"
        if eps is None or not math.isfinite(eps)
        else f"{eps:.6g}"
    )
    return f"epsilon={shown} at delta={spent.delta:g}"

"""The privacy plan of a synthesis: every mechanism it will run, fixed before any row is read.

AIM and MST measure marginals with Gaussian noise and pick which ones with
the exponential mechanism. Veil fixes the whole schedule up front — how many
one-way measurements, how many rounds, each round's selection epsilon and
each measurement's sigma — so that the release's :class:`PrivacyEvent` lists
every mechanism that will touch the data, the gate checks and charges it
before anything runs, and a run that stops early has spent no more than the
charge. (The published AIM anneals: it halves sigma when a round changed the
model little, so its mechanisms depend on the data; such a schedule can only
be charged as a zCDP envelope. Veil's rounds are fixed instead: each costs
the same, and the number of rounds is the user's.)

Budget splits follow the AIM paper: 90% of the zCDP budget to measurements,
10% to selections, shared equally by the planned mechanisms (MST: a third
each to one-way measurements, selections and two-way measurements).

Calibration to an (epsilon, delta) release: the plan for a zCDP total
``rho`` is a function ``plan(rho)``; its epsilon at ``delta`` is the ledger's
own accountant (PLD) of the planned mechanisms; bisection finds the largest
``rho`` whose plan stays at or below the requested epsilon, always keeping
the feasible end (rounding *down*: the charge never exceeds what was asked,
and a valid budget is never refused by rounding up).

Measurements are counts (integers) with L2 sensitivity 1 under adding or
removing one person's row (one row per person: the release keeps one row per
privacy unit), so they use OpenDP's discrete Gaussian sampler
(:class:`~veil.ledger.DiscreteGaussianDpEvent`, sensitivity 1). A selection's
scores are weighted L1 errors, whose sensitivity is the largest weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from veil.errors import InvalidInputError
from veil.ledger import Mechanism, PLDAccountant, PrivacyEvent, zcdp_rho

__all__ = ["MEASURE_SHARE", "SynthPlan", "plan_for"]

Method = Literal["aim", "mst"]
MEASURE_SHARE = 0.9  # AIM: 90% of rho to measurements, 10% to selections
_BISECTION_STEPS = 40
_MIN_RHO = 1e-9
# The smallest noise a plan may use: below it a count is released nearly exactly, a sign that
# epsilon was set for a test, not a release. Not a privacy limit (the accountant is), a sanity one.
_MAX_RHO = 1e4


@dataclass(frozen=True)
class SynthPlan:
    """Every mechanism of one synthesis.

    Attributes:
        method: ``aim`` or ``mst``.
        rho: The zCDP total of the plan.
        oneway_sigma: Discrete Gaussian sigma of each one-way measurement.
        oneway: How many one-way measurements.
        rounds: Selections (each followed by one measurement).
        select_epsilon: Epsilon of each selection (exponential mechanism).
        select_sensitivity: Sensitivity of the selection scores.
        measure_sigma: Sigma of each selected measurement.
        epsilon, delta: The (epsilon, delta) the plan was calibrated to (None for a rho plan).
    """

    method: str
    rho: float
    oneway: int
    oneway_sigma: float
    rounds: int
    select_epsilon: float
    select_sensitivity: float
    measure_sigma: float
    candidates: int
    epsilon: float | None = None
    delta: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def mechanisms(self) -> tuple[Mechanism, ...]:
        """The mechanisms in the order they run (identical ones repeated)."""
        out: list[Mechanism] = []
        oneway = Mechanism.discrete_gaussian(self.oneway_sigma, 1, marginal="1-way")
        out.extend([oneway] * self.oneway)
        select = Mechanism.exponential(
            self.select_epsilon, self.select_sensitivity, candidates=self.candidates
        )
        measure = Mechanism.discrete_gaussian(
            self.measure_sigma, 1, marginal="2-way" if self.method == "mst" else "selected"
        )
        for _ in range(self.rounds):
            out.extend([select, measure])
        return tuple(out)

    def event(self, what: str, details: dict[str, Any] | None = None) -> PrivacyEvent:
        return PrivacyEvent(
            what,
            self.mechanisms(),
            operation="synthetic",
            details={**self.to_dict(), **(details or {})},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rho": self.rho,
            "oneway": self.oneway,
            "oneway_sigma": self.oneway_sigma,
            "rounds": self.rounds,
            "select_epsilon": self.select_epsilon,
            "select_sensitivity": self.select_sensitivity,
            "measure_sigma": self.measure_sigma,
            "candidates": self.candidates,
            "epsilon": self.epsilon,
            "delta": self.delta,
        }


def _plan_at(
    method: Method,
    rho: float,
    *,
    columns: int,
    rounds: int,
    candidates: int,
    sensitivity: float,
) -> SynthPlan:
    if method == "mst":
        third = rho / 3
        return SynthPlan(
            method,
            rho,
            oneway=columns,
            oneway_sigma=math.sqrt(columns / (2 * third)),
            rounds=rounds,
            select_epsilon=math.sqrt(8 * third / rounds) if rounds else 0.0,
            select_sensitivity=sensitivity,
            measure_sigma=math.sqrt(rounds / (2 * third)) if rounds else 0.0,
            candidates=candidates,
        )
    # AIM: one-way and selected measurements share 90% at one sigma; selections share 10%.
    sigma = math.sqrt((columns + rounds) / (2 * MEASURE_SHARE * rho))
    return SynthPlan(
        method,
        rho,
        oneway=columns,
        oneway_sigma=sigma,
        rounds=rounds,
        select_epsilon=math.sqrt(8 * (1 - MEASURE_SHARE) * rho / rounds) if rounds else 0.0,
        select_sensitivity=sensitivity,
        measure_sigma=sigma,
        candidates=candidates,
    )


def plan_for(
    method: Method,
    *,
    columns: int,
    rounds: int,
    candidates: int,
    sensitivity: float,
    epsilon: float | None = None,
    delta: float | None = None,
    rho: float | None = None,
) -> SynthPlan:
    """The plan that spends at most ``rho`` (zCDP) or at most (``epsilon``, ``delta``).

    Raises:
        InvalidInputError: Neither or both of rho and epsilon given, delta missing
            for an epsilon, or a budget too small to measure anything.
    """
    if method not in ("aim", "mst"):
        raise InvalidInputError("unknown synthesis method", expected="aim or mst", got=repr(method))
    if rounds < (1 if method == "aim" else 0) or columns < 1:
        raise InvalidInputError(
            "a synthesis needs at least one column and, for AIM, one round",
            expected="columns >= 1, rounds >= 1",
            got=f"{columns} columns, {rounds} rounds",
        )
    shape: dict[str, Any] = {
        "columns": columns,
        "rounds": rounds,
        "candidates": candidates,
        "sensitivity": sensitivity,
    }
    if rho is not None:
        if epsilon is not None:
            raise InvalidInputError(
                "give a zCDP rho or an (epsilon, delta), not both",
                expected="rho=... or epsilon=..., delta=...",
                got=f"rho={rho}, epsilon={epsilon}",
            )
        if not (math.isfinite(rho) and 0 < rho <= _MAX_RHO):
            raise InvalidInputError(
                "rho out of range", expected=f"0 < rho <= {_MAX_RHO:g}", got=repr(rho)
            )
        plan = _plan_at(method, rho, **shape)
        # The plan's rho, recomputed by the ledger's zCDP accountant, never above the request.
        spent = zcdp_rho([m.dp_event for m in plan.mechanisms()])
        if spent > rho * (1 + 1e-12):
            plan = _plan_at(method, rho * rho / spent * (1 - 1e-9), **shape)
        return plan
    if epsilon is None or not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInputError(
            "synthetic data needs a privacy budget",
            expected="epsilon > 0 (with delta), or rho > 0",
            got=repr(epsilon),
        )
    if delta is None or not 0 < delta < 1:
        raise InvalidInputError(
            "AIM and MST measure with Gaussian noise, which needs a delta above zero",
            expected="0 < delta < 1 (well below 1 / rows, e.g. 1e-6)",
            got=repr(delta),
            fix="pass --delta 1e-6, or give the dataset a zCDP (rho) budget",
        )
    lo = _calibrate(method, shape, epsilon, delta)
    plan = _plan_at(method, lo, **shape)
    return SynthPlan(**{**plan.__dict__, "epsilon": epsilon, "delta": delta})


def _calibrate(method: Method, shape: dict[str, Any], epsilon: float, delta: float) -> float:
    """The largest rho (to 0.1%) whose plan the ledger's PLD accountant puts at or below epsilon."""
    columns, rounds = shape["columns"], shape["rounds"]
    accountant = PLDAccountant()

    def spent(r: float) -> float:
        return accountant.epsilon(
            [m.dp_event for m in _plan_at(method, r, **shape).mechanisms()], delta
        )

    # Bracket: a rho whose plan is within epsilon (lo) and one beyond it (hi), starting where
    # the answer usually is (rho ~ epsilon^2 / 10) and moving by factors of four: a plan at a
    # far smaller rho has a huge sigma, whose discrete Gaussian PLD alone spans gigabytes.
    lo = hi = min(_MAX_RHO, epsilon * epsilon / 8)
    if spent(hi) <= epsilon:
        while hi < _MAX_RHO and spent(min(_MAX_RHO, hi * 4)) <= epsilon:
            hi = min(_MAX_RHO, hi * 4)
        lo, hi = hi, min(_MAX_RHO, hi * 4)
    else:
        while True:
            lo = hi / 4
            if spent(lo) <= epsilon:
                break
            hi = lo
            if lo < _MIN_RHO:
                raise InvalidInputError(
                    "the budget is too small for this synthesis",
                    expected=f"an epsilon that pays for {columns} one-way measurements and {rounds} rounds",
                    got=f"epsilon {epsilon:g} at delta {delta:g}",
                    fix="raise --epsilon or lower --rounds",
                )
    for _ in range(_BISECTION_STEPS):
        if hi / lo < 1 + 1e-3:
            break
        mid = math.sqrt(lo * hi)
        if spent(mid) <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo

"""Accountants: turn a history of privacy events into one guarantee.

* :class:`PLDAccountant` (the ledger's accountant): privacy-loss
  distributions from Google's ``dp_accounting``, tight up to its
  discretisation (pessimistic, so the reported epsilon is an upper bound).
* :class:`RDPAccountant` (the cross-check): Rényi DP, also from
  ``dp_accounting`` but an independent analysis. It is never tighter than
  PLD, so ``PLD <= RDP`` is checked on every charge's tests; mechanisms RDP
  cannot express exactly (pure epsilon, (epsilon, delta)) enter through
  their zCDP bound (epsilon^2 / 2) or, for delta > 0, basic composition.
* :func:`zcdp_rho`: zero-concentrated DP, for budgets declared as rho.
* :func:`gaussian_epsilon`: the exact epsilon of a Gaussian mechanism
  (Balle and Wang 2018, Theorem 8), a closed form to test the others against.

Why a subclass of ``dp_accounting``'s PLD accountant: it composes every
mechanism Veil runs except two it has no event for (:mod:`._events`); the
subclass adds them and defers everything else to the library.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

from dp_accounting import dp_event
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.privacy_accountant import UnsupportedEventError
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import optimize, stats

from veil.errors import InvalidInputError
from veil.ledger._events import DiscreteGaussianDpEvent, EpsilonDeltaDpEvent, flatten

__all__ = ["PLDAccountant", "RDPAccountant", "gaussian_epsilon", "pure_epsilon", "zcdp_rho"]

# Discretisation of privacy-loss values (dp_accounting defaults to 1e-4). 1e-3 is 10x faster,
# still an upper bound (pessimistic estimates), and moved 100 Gaussian releases by 3e-7.
PLD_DISCRETIZATION = 1e-3


class _VeilPLD(pld_privacy_accountant.PLDAccountant):  # type: ignore[misc]
    """dp_accounting's PLD accountant plus Veil's two extra events."""

    def _maybe_compose(self, event: dp_event.DpEvent, count: int, do_compose: bool) -> object:
        if isinstance(event, EpsilonDeltaDpEvent):
            if do_compose:
                params = pld_common.DifferentialPrivacyParameters(event.epsilon, event.delta)
                pld = pld_lib.from_privacy_parameters(
                    params, value_discretization_interval=self._value_discretization_interval
                )
                self._pld = self._pld.compose(pld.self_compose(count) if count > 1 else pld)  # type: ignore[has-type]
            return None
        if isinstance(event, DiscreteGaussianDpEvent):
            if do_compose:
                pld = pld_lib.from_discrete_gaussian_mechanism(
                    event.sigma,
                    sensitivity=event.sensitivity,
                    value_discretization_interval=self._value_discretization_interval,
                )
                self._pld = self._pld.compose(pld.self_compose(count) if count > 1 else pld)
            return None
        return super()._maybe_compose(event, count, do_compose)


class PLDAccountant:
    """Tight composition by privacy-loss distributions (the ledger's accountant)."""

    name = "pld"

    def __init__(self, discretization: float = PLD_DISCRETIZATION) -> None:
        self.discretization = discretization

    def epsilon(self, events: Sequence[dp_event.DpEvent], delta: float) -> float:
        """The smallest epsilon such that the composition of ``events`` is (epsilon, delta)-DP."""
        leaves = flatten(events)
        if not leaves:
            return 0.0
        if delta == 0:
            # Pure DP: epsilons add, and that is tight; anything with delta > 0 has no pure bound.
            return float(sum(count * pure_epsilon(event) for event, count in leaves))
        composed = float(self._compose(leaves).get_epsilon(delta))
        # Pure-epsilon events compose with anything by adding their epsilon at no delta. PLD's
        # pessimistic tails give them a sliver of delta, which matters when another event uses
        # the whole delta (a query asking for the budget's delta): take the better valid bound.
        pure = [(e, c) for e, c in leaves if math.isfinite(pure_epsilon(e))]
        rest = [(e, c) for e, c in leaves if not math.isfinite(pure_epsilon(e))]
        if pure:
            split = float(self._compose(rest).get_epsilon(delta)) if rest else 0.0
            composed = min(composed, split + sum(c * pure_epsilon(e) for e, c in pure))
        return composed

    def _compose(self, leaves: list[tuple[dp_event.DpEvent, int]]) -> _VeilPLD:
        accountant = _VeilPLD(value_discretization_interval=self.discretization)
        for event, count in leaves:
            try:
                accountant.compose(event, count)
            except UnsupportedEventError as exc:  # pragma: no cover - guarded by EVENT_TYPES
                raise InvalidInputError(
                    "the PLD accountant cannot compose this event", got=str(exc)
                ) from exc
        return accountant

    def delta(self, events: Sequence[dp_event.DpEvent], epsilon: float) -> float:
        """The smallest delta such that the composition is (epsilon, delta)-DP."""
        leaves = flatten(events)
        if not leaves:
            return 0.0
        return float(self._compose(leaves).get_delta(epsilon))


def pure_epsilon(event: dp_event.DpEvent) -> float:
    """The pure-DP epsilon of one leaf event (infinite when it has none)."""
    if isinstance(event, dp_event.LaplaceDpEvent):
        return 1.0 / float(event.noise_multiplier)
    if isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        return float(event.noise_parameter * event.sensitivity)
    if isinstance(event, EpsilonDeltaDpEvent) and event.delta == 0:
        return float(event.epsilon)
    return math.inf


def _rdp_form(event: dp_event.DpEvent) -> tuple[dp_event.DpEvent | None, float, float]:
    """An RDP-composable event, or (None, epsilon, delta) for basic composition."""
    if isinstance(event, EpsilonDeltaDpEvent):
        if event.delta == 0:
            return dp_event.ZCDpEvent(event.epsilon**2 / 2), 0.0, 0.0
        return None, event.epsilon, event.delta
    if isinstance(event, DiscreteGaussianDpEvent):
        return dp_event.ZCDpEvent(event.sensitivity**2 / (2 * event.sigma**2)), 0.0, 0.0
    if isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        eps = event.noise_parameter * event.sensitivity
        return dp_event.ZCDpEvent(eps**2 / 2), 0.0, 0.0
    return event, 0.0, 0.0


class RDPAccountant:
    """Rényi-DP composition (the independent cross-check; never tighter than PLD)."""

    name = "rdp"

    def epsilon(self, events: Sequence[dp_event.DpEvent], delta: float) -> float:
        leaves = flatten(events)
        if not leaves:
            return 0.0
        if delta == 0:
            return float(sum(count * pure_epsilon(event) for event, count in leaves))
        accountant = rdp_privacy_accountant.RdpAccountant()
        basic_eps = basic_delta = 0.0
        for event, count in leaves:
            rdp_event, eps, dlt = _rdp_form(event)
            if rdp_event is None:
                basic_eps += eps * count
                basic_delta += dlt * count
            else:
                with _quiet_absl():
                    accountant.compose(rdp_event, count)
        if basic_delta >= delta:
            return math.inf
        rdp_eps = float(accountant.get_epsilon(delta - basic_delta)) if leaves else 0.0
        return rdp_eps + basic_eps


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Hold back dp_accounting's log lines about RDP orders it could not compute.

    For large sampling rates some fractional orders do not converge; they are
    left out of the minimum over orders, which can only loosen this cross-check.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def zcdp_rho(events: Sequence[dp_event.DpEvent]) -> float:
    """Total rho of ``events`` under zero-concentrated DP (Bun and Steinke 2016).

    Gaussian: rho = 1 / (2 noise_multiplier^2); pure epsilon-DP (Laplace,
    randomized response, exponential mechanism): rho = epsilon^2 / 2. Events
    with delta > 0 or subsampling have no zCDP guarantee and are refused.
    """
    total = 0.0
    for event, count in flatten(events):
        total += count * _rho(event)
    return total


def _rho(event: dp_event.DpEvent) -> float:
    if isinstance(event, dp_event.GaussianDpEvent):
        return 1.0 / (2 * float(event.noise_multiplier) ** 2)
    if isinstance(event, DiscreteGaussianDpEvent):
        return float(event.sensitivity**2 / (2 * event.sigma**2))
    if isinstance(event, dp_event.ZCDpEvent) and event.xi == 0:
        return float(event.rho)
    if isinstance(event, dp_event.LaplaceDpEvent):
        return 1.0 / (2 * float(event.noise_multiplier) ** 2)
    if isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        return float((event.noise_parameter * event.sensitivity) ** 2 / 2)
    if isinstance(event, EpsilonDeltaDpEvent) and event.delta == 0:
        return float(event.epsilon**2 / 2)
    raise InvalidInputError(
        "this mechanism has no zero-concentrated DP guarantee",
        expected="Gaussian, Laplace, randomized response or a pure-epsilon mechanism",
        got=f"{type(event).__name__} {event}",
        fix="give the dataset an (epsilon, delta) budget instead of rho",
    )


def gaussian_epsilon(noise_multiplier: float, delta: float, compositions: int = 1) -> float:
    """Exact epsilon of ``compositions`` Gaussian mechanisms (analytic Gaussian mechanism).

    ``k`` Gaussian mechanisms with noise multiplier ``s`` are exactly one with
    ``mu = sqrt(k) / s``, and (Balle and Wang 2018, Theorem 8)
    ``delta(eps) = Phi(-eps/mu + mu/2) - exp(eps) Phi(-eps/mu - mu/2)``;
    this solves that equation for ``eps``.
    """
    mu = math.sqrt(compositions) / noise_multiplier

    def excess(eps: float) -> float:
        return float(
            stats.norm.cdf(-eps / mu + mu / 2)
            - math.exp(eps + float(stats.norm.logcdf(-eps / mu - mu / 2)))
            - delta
        )

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-12))

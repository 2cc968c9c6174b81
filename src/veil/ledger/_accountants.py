"""Accountants: turn a history of privacy events into one guarantee.

* :class:`PLDAccountant` (the ledger's accountant): privacy-loss
  distributions from Google's ``dp_accounting``, tight up to its
  discretisation (pessimistic, so the reported epsilon is an upper bound).
* :class:`RDPAccountant` (the cross-check): Rényi DP, also from
  ``dp_accounting`` but an independent analysis. It is never tighter than
  PLD, so ``PLD <= RDP`` is checked on every charge's tests; mechanisms RDP
  cannot express exactly (pure epsilon, (epsilon, delta)) enter through
  their zCDP bound (epsilon^2 / 2) or, for delta > 0, basic composition.
  The exponential mechanism enters through its bounded-range zCDP bound
  (epsilon^2 / 8), while PLD composes it as a generic epsilon-DP mechanism:
  for histories of many selections RDP is then the tighter of the two, and
  ``PLD <= RDP`` holds only for histories without them.
* :func:`zcdp_rho`: zero-concentrated DP, for budgets declared as rho.
* :func:`gaussian_epsilon`: the exact epsilon of a Gaussian mechanism
  (Balle and Wang 2018, Theorem 8), a closed form to test the others against.

Why a subclass of ``dp_accounting``'s PLD accountant: it composes every
mechanism Veil runs except three it has no event for (:mod:`._events`); the
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
from veil.ledger._events import (
    DiscreteGaussianDpEvent,
    EpsilonDeltaDpEvent,
    ExponentialDpEvent,
    flatten,
)

__all__ = ["PLDAccountant", "RDPAccountant", "gaussian_epsilon", "pure_epsilon", "zcdp_rho"]

# Discretisation of privacy-loss values (dp_accounting defaults to 1e-4). 1e-3 is 10x faster,
# still an upper bound (pessimistic estimates), and moved 100 Gaussian releases by 3e-7.
PLD_DISCRETIZATION = 1e-3
# The most privacy-loss points the distinct events of one history may span together. A history
# whose events span more (an event of epsilon 1e4 spans 2e4 / 1e-3 = 2e7 points, gigabytes once
# composed) is discretised more coarsely: still an upper bound, with bounded work.
PLD_MAX_POINTS = 100_000
# Events beyond this epsilon are not turned into distributions (see PLDAccountant.epsilon).
PLD_MAX_EVENT_EPSILON = 100.0
PLD_MAX_EVENT_SPAN = 2_000.0
# dp_accounting truncates a Gaussian privacy-loss distribution this many standard deviations out.
_GAUSSIAN_TAIL_SD = 10.0


class _VeilPLD(pld_privacy_accountant.PLDAccountant):  # type: ignore[misc]
    """dp_accounting's PLD accountant plus Veil's three extra events.

    An :class:`ExponentialDpEvent` composes as the worst-case (epsilon, 0)-DP
    distribution: an upper bound (its bounded range is not used here).
    """

    def _maybe_compose(self, event: dp_event.DpEvent, count: int, do_compose: bool) -> object:
        if isinstance(event, (EpsilonDeltaDpEvent, ExponentialDpEvent)):
            if do_compose:
                delta = event.delta if isinstance(event, EpsilonDeltaDpEvent) else 0.0
                params = pld_common.DifferentialPrivacyParameters(event.epsilon, delta)
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

    def __init__(
        self, discretization: float = PLD_DISCRETIZATION, max_points: int = PLD_MAX_POINTS
    ) -> None:
        self.discretization = discretization
        self.max_points = max_points
        # The size (points) of the last composed distribution: the work an answer took.
        self.last_points = 0

    def interval_for(self, leaves: Sequence[tuple[dp_event.DpEvent, int]]) -> float:
        """The discretisation interval for ``leaves``: the default, or coarser for huge losses.

        The distinct events' privacy-loss ranges, added up, are covered by at most
        ``max_points`` points. Any interval gives an upper bound on epsilon
        (dp_accounting's pessimistic discretisation rounds every loss up); a
        coarser one is only less tight.
        """
        span = sum(_loss_span(event) for event, _ in leaves)
        return max(self.discretization, span / self.max_points)

    def epsilon(self, events: Sequence[dp_event.DpEvent], delta: float) -> float:
        """The smallest epsilon such that the composition of ``events`` is (epsilon, delta)-DP."""
        leaves = flatten(events)
        if not leaves:
            return 0.0
        if delta == 0:
            # Pure DP: epsilons add, and that is tight; anything with delta > 0 has no pure bound.
            return float(sum(count * pure_epsilon(event) for event, count in leaves))
        self.last_points = 0
        # An (epsilon, delta) event beyond PLD_MAX_EVENT_EPSILON (only an old ledger can hold one:
        # releases are capped at MAX_RELEASE_EPSILON) composes by basic composition, a valid
        # upper bound: dp_accounting's worst-case distribution for it overflows.
        big = [
            (e, c)
            for e, c in leaves
            if isinstance(e, EpsilonDeltaDpEvent)
            and e.delta > 0
            and e.epsilon > PLD_MAX_EVENT_EPSILON
        ]
        big_epsilon = sum(c * float(e.epsilon) for e, c in big)
        delta -= sum(c * float(e.delta) for e, c in big)
        if delta <= 0:
            return math.inf
        # Likewise a Gaussian-type event with a loss range too wide to discretise (sigma far
        # below its sensitivity) composes through zCDP (Bun and Steinke 2016, Proposition 1.3).
        wide = [
            (e, c)
            for e, c in leaves
            if not math.isfinite(pure_epsilon(e))
            and not isinstance(e, EpsilonDeltaDpEvent)
            and _loss_span(e) > PLD_MAX_EVENT_SPAN
        ]
        if wide:
            delta /= 2
            rho = sum(c * _rho(_unsampled(e)) for e, c in wide)
            big_epsilon += rho + 2 * math.sqrt(rho * math.log(1 / delta))
        leaves = [(e, c) for e, c in leaves if (e, c) not in big and (e, c) not in wide]
        if not leaves:
            return big_epsilon
        # Pure-epsilon events compose with anything by adding their epsilon at no delta. PLD's
        # pessimistic tails give them a sliver of delta, which matters when another event uses
        # the whole delta (a query asking for the budget's delta): take the better valid bound.
        pure = [(e, c) for e, c in leaves if math.isfinite(pure_epsilon(e))]
        rest = [(e, c) for e, c in leaves if not math.isfinite(pure_epsilon(e))]
        best = math.inf
        if all(pure_epsilon(e) <= PLD_MAX_EVENT_EPSILON for e, _ in pure):
            # Composing them as distributions is tighter; a huge one would only cost work.
            best = float(self._compose(leaves).get_epsilon(delta))
        if pure:
            split = float(self._compose(rest).get_epsilon(delta)) if rest else 0.0
            best = min(best, split + sum(c * pure_epsilon(e) for e, c in pure))
        return big_epsilon + best

    def _compose(self, leaves: list[tuple[dp_event.DpEvent, int]]) -> _VeilPLD:
        accountant = _VeilPLD(value_discretization_interval=self.interval_for(leaves))
        for event, count in leaves:
            try:
                accountant.compose(event, count)
            except UnsupportedEventError as exc:  # pragma: no cover - guarded by EVENT_TYPES
                raise InvalidInputError(
                    "the PLD accountant cannot compose this event", got=str(exc)
                ) from exc
        pmf = getattr(accountant._pld, "_pmf_remove", None)  # noqa: SLF001 - its size only
        self.last_points = max(self.last_points, int(getattr(pmf, "size", 0) or 0))
        return accountant

    def delta(self, events: Sequence[dp_event.DpEvent], epsilon: float) -> float:
        """The smallest delta such that the composition is (epsilon, delta)-DP."""
        leaves = flatten(events)
        if not leaves:
            return 0.0
        self.last_points = 0
        return float(self._compose(leaves).get_delta(epsilon))


def _loss_span(event: dp_event.DpEvent) -> float:
    """The width of the range of privacy losses dp_accounting discretises for one leaf event."""
    pure = pure_epsilon(event)
    if math.isfinite(pure):
        return 2 * pure
    if isinstance(event, EpsilonDeltaDpEvent):
        return 2 * float(event.epsilon)
    if isinstance(event, dp_event.GaussianDpEvent):
        return _gaussian_span(1.0 / float(event.noise_multiplier))
    if isinstance(event, DiscreteGaussianDpEvent):
        return _gaussian_span(float(event.sensitivity) / float(event.sigma))
    if isinstance(
        event, (dp_event.PoissonSampledDpEvent, dp_event.SampledWithoutReplacementDpEvent)
    ):
        inner = _loss_span(event.event) / 2
        if isinstance(event, dp_event.PoissonSampledDpEvent):
            rate = float(event.sampling_probability)
        else:
            rate = float(event.sample_size) / float(event.source_dataset_size)
        # A subsampled loss is log(1 + q (e^L - 1)) for the inner loss L.
        return _log1p_q_expm1(rate, inner) - _log1p_q_expm1(rate, -inner)
    return 0.0


def _unsampled(event: dp_event.DpEvent) -> dp_event.DpEvent:
    """The mechanism inside a subsampling event: its zCDP bound also bounds the subsampled one."""
    if isinstance(
        event, (dp_event.PoissonSampledDpEvent, dp_event.SampledWithoutReplacementDpEvent)
    ):
        return event.event
    return event


def _gaussian_span(mu: float) -> float:
    # The loss of a Gaussian mechanism is N(mu^2 / 2, mu^2) (add) or N(-mu^2 / 2, mu^2) (remove).
    return mu * mu + 2 * _GAUSSIAN_TAIL_SD * mu


def _log1p_q_expm1(rate: float, loss: float) -> float:
    if loss > 700:  # noqa: PLR2004 - exp would overflow; log(1 + q (e^L - 1)) <= log(q) + L + 1
        return math.log(max(rate, 1e-300)) + loss + 1
    return math.log1p(max(rate * math.expm1(loss), -1 + 1e-16))


def pure_epsilon(event: dp_event.DpEvent) -> float:
    """The pure-DP epsilon of one leaf event (infinite when it has none)."""
    if isinstance(event, dp_event.LaplaceDpEvent):
        return 1.0 / float(event.noise_multiplier)
    if isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        return float(event.noise_parameter * event.sensitivity)
    if isinstance(event, EpsilonDeltaDpEvent) and event.delta == 0:
        return float(event.epsilon)
    if isinstance(event, ExponentialDpEvent):
        return float(event.epsilon)
    return math.inf


def _rdp_form(event: dp_event.DpEvent) -> tuple[dp_event.DpEvent | None, float, float]:
    """An RDP-composable event, or (None, epsilon, delta) for basic composition."""
    if isinstance(event, EpsilonDeltaDpEvent):
        if event.delta == 0:
            return dp_event.ZCDpEvent(event.epsilon**2 / 2), 0.0, 0.0
        return None, event.epsilon, event.delta
    if isinstance(event, ExponentialDpEvent):
        return dp_event.ZCDpEvent(_rho(event)), 0.0, 0.0
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
    randomized response, report-noisy-max): rho = epsilon^2 / 2; the
    exponential mechanism (:class:`ExponentialDpEvent`, epsilon-bounded-range):
    rho = epsilon^2 / 8 (Cesar and Rogers 2021). Events
    with delta > 0 or subsampling have no zCDP guarantee and are refused.
    """
    total = 0.0
    for event, count in flatten(events):
        total += count * _rho(event)
    return total


def _rho(event: dp_event.DpEvent) -> float:  # noqa: PLR0911 - one return per event type
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
    if isinstance(event, ExponentialDpEvent):
        return float(event.epsilon**2 / 8)
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

"""One noise calibration and one accounting report for the Poisson-subsampled Gaussian.

DP-SGD (a record drawn with probability ``q`` per step, ``steps`` steps) and
DP-FedAvg (a client drawn with probability ``q`` per round, ``rounds``
rounds) release the same mechanism: ``steps`` self-compositions of a
Poisson-subsampled Gaussian with noise multiplier ``z``. So both are
calibrated by one search, :func:`calibrate_noise`, and reported in one shape,
:class:`SubsampledGaussianAccounting`:

* **PLD** (:class:`~veil.ledger.PLDAccountant`, pessimistic discretisation):
  the figure the ledger charges, and the one the calibration meets;
* **RDP** (:class:`~veil.ledger.RDPAccountant`): an independent analysis,
  never tighter, cheap at any ``z``: it brackets the search and is reported;
* ``cross_checks``: further accountants a caller runs on the same mechanism
  (Opacus's PRV for DP-SGD, Flower's RDP for federated averaging), reported,
  never charged.

A public submodule: :mod:`veil.train` and :mod:`veil.federated` calibrate through it,
and a user may call it to size the noise of either before a run.

>>> z = calibrate_noise(3.0, 1e-5, 256 / 60000, 2340)
>>> report = account_subsampled_gaussian(256 / 60000, z, 2340, 1e-5)
>>> report.epsilon <= 3.0 < account_subsampled_gaussian(256 / 60000, z / 1.001, 2340, 1e-5).epsilon
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Self

from dp_accounting import dp_event

from veil._validate import whole_number
from veil.errors import InvalidInputError
from veil.ledger._accountants import PLDAccountant, RDPAccountant
from veil.ledger._events import Mechanism
from veil.ledger.params import check_delta, check_positive, check_release_epsilon

__all__ = [
    "CALIBRATION_TOLERANCE",
    "MAX_NOISE_MULTIPLIER",
    "MIN_NOISE_MULTIPLIER",
    "SubsampledGaussianAccounting",
    "account_subsampled_gaussian",
    "calibrate_noise",
    "check_sampling_rate",
    "pld_epsilon",
    "rdp_epsilon",
]

# A noise multiplier above this drowns any signal in the clipped updates: asking for more is
# refused, with the knobs to change (fewer steps, a smaller sampling rate, a bigger epsilon).
MAX_NOISE_MULTIPLIER = 50.0
# The floor of the search: below it every PLD evaluation grows with 1 / z^2 (24 GB at a target
# of epsilon 1e4), for a run that is private in name only. A target whose answer would lie
# below it gets the floor.
MIN_NOISE_MULTIPLIER = 0.05
# The answer z is the smallest to this relative tolerance: z / (1 + tolerance) overshoots.
CALIBRATION_TOLERANCE = 1e-3
_RDP_TOLERANCE = 1e-2
_STEP_DOWN = 0.85  # PLD's z for a target is 70-95 % of RDP's in practice
_DEFAULT_FIX = "take fewer steps, sample a smaller fraction per step, or allow a larger epsilon"


# ----------------------------------------------------------------------------- validation


_SAMPLING_FIX = (
    "pass the probability that one unit is drawn per step, such as 0.01 "
    "(DP-SGD: batch size / dataset size; federated: the fraction of clients per round)"
)


def check_sampling_rate(value: object, *, fix: str = _SAMPLING_FIX) -> float:
    """A Poisson sampling rate ``0 < q <= 1`` (``fix`` says, in the caller's words, what q is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(
            "sampling rate must be a number", expected="0 < q <= 1", got=repr(value), fix=fix
        )
    rate = float(value)
    if not (math.isfinite(rate) and 0 < rate <= 1):
        raise InvalidInputError(
            "sampling rate out of range", expected="0 < q <= 1", got=repr(value), fix=fix
        )
    return rate


def _steps(value: object) -> int:
    return whole_number(value, "steps", expected="an int >= 1 (DP-SGD steps, or federated rounds)")


def _event(sampling_rate: float, noise_multiplier: float, steps: int) -> dp_event.DpEvent:
    return Mechanism.subsampled_gaussian(sampling_rate, noise_multiplier, steps).dp_event


# ----------------------------------------------------------------------------- accountants


def pld_epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon by PLD (the charged figure) of ``steps`` Poisson-subsampled Gaussians."""
    return PLDAccountant().epsilon([_event(sampling_rate, noise_multiplier, steps)], delta)


def rdp_epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon by RDP (never tighter than PLD) of ``steps`` Poisson-subsampled Gaussians."""
    return RDPAccountant().epsilon([_event(sampling_rate, noise_multiplier, steps)], delta)


@dataclass(frozen=True)
class SubsampledGaussianAccounting:
    """What ``steps`` Poisson-subsampled Gaussians cost, by each accountant.

    Attributes:
        sampling_rate: ``q``, the probability that one unit (a record, a client) is drawn.
        noise_multiplier: ``z``, the noise standard deviation over the sensitivity.
        steps: DP-SGD steps, or federated rounds.
        delta: The delta every epsilon is stated at.
        epsilon: By PLD: the charged figure.
        epsilon_rdp: By RDP: the cross-check, never tighter.
        cross_checks: Further accountants by name (``"prv"``, ``"flower"``),
            ``None`` where one could not run; :meth:`to_dict` writes each as
            ``epsilon_<name>``.
    """

    sampling_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    epsilon: float
    epsilon_rdp: float
    cross_checks: dict[str, float | None] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in self.cross_checks:
            if not (isinstance(name, str) and name.isidentifier() and name.islower()):
                raise InvalidInputError(
                    "a cross-check needs a lower-case name",
                    expected="a name such as 'prv' or 'flower'",
                    got=repr(name),
                )
            if name in ("rdp", "pld"):
                raise InvalidInputError(
                    f"'{name}' is reported already",
                    expected="a cross-check other than PLD and RDP",
                    got=repr(name),
                )
        object.__setattr__(self, "cross_checks", dict(self.cross_checks))  # a private copy

    @classmethod
    def compute(
        cls,
        sampling_rate: float,
        noise_multiplier: float,
        steps: int,
        delta: float,
        *,
        cross_checks: Mapping[str, float | None] | None = None,
    ) -> Self:
        """PLD and RDP of the mechanism, with the caller's ``cross_checks`` attached.

        Raises:
            InvalidInputError: A parameter is out of range.
        """
        rate = check_sampling_rate(sampling_rate)
        z = check_positive(noise_multiplier, "noise_multiplier")
        steps = _steps(steps)
        delta = check_delta(delta, allow_zero=False)
        return cls(
            sampling_rate=rate,
            noise_multiplier=z,
            steps=steps,
            delta=delta,
            epsilon=pld_epsilon(rate, z, steps, delta),
            epsilon_rdp=rdp_epsilon(rate, z, steps, delta),
            cross_checks=dict(cross_checks or {}),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: the parameters, ``epsilon``, ``epsilon_rdp`` and ``epsilon_<cross check>``."""
        return {
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier,
            "steps": self.steps,
            "delta": self.delta,
            "epsilon": self.epsilon,
            "epsilon_rdp": self.epsilon_rdp,
            **{f"epsilon_{name}": value for name, value in self.cross_checks.items()},
        }


def account_subsampled_gaussian(
    sampling_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    *,
    cross_checks: Mapping[str, float | None] | None = None,
) -> SubsampledGaussianAccounting:
    """The :class:`SubsampledGaussianAccounting` of ``steps`` Poisson-subsampled Gaussians.

    Raises:
        InvalidInputError: A parameter is out of range.
    """
    return SubsampledGaussianAccounting.compute(
        sampling_rate, noise_multiplier, steps, delta, cross_checks=cross_checks
    )


# ----------------------------------------------------------------------------- calibration


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    *,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
    fix: str = _DEFAULT_FIX,
) -> float:
    """The smallest noise multiplier (to 0.1 %) whose PLD epsilon is at most ``target_epsilon``.

    The answer ``z`` satisfies ``epsilon(z) <= target_epsilon`` and
    ``epsilon(z / 1.001) > target_epsilon``, or ``z`` is the floor 0.05 (a
    target that needs less noise gets the floor). The work is bounded for any
    target: targets above ``MAX_RELEASE_EPSILON`` (100) are refused before any
    accounting runs, the search never evaluates a noise multiplier below the
    floor, and it takes at most 57 PLD evaluations (RDP, cheap and never
    tighter, gives the upper end; then a step-down of 15 % per evaluation
    to the floor at most, then at most 12 to close in to 0.1 %: four aimed
    along the curve, then bisection; five to eight in all in practice).

    Args:
        target_epsilon: The epsilon to meet, in (0, 100].
        delta: The delta to meet it at, in (0, 1).
        sampling_rate: ``q`` in (0, 1].
        steps: DP-SGD steps or federated rounds, >= 1.
        max_noise_multiplier: The largest ``z`` to consider.
        fix: How to make an unreachable target reachable, in the caller's
            words (the knobs: fewer steps, a smaller rate, a larger epsilon).

    Raises:
        InvalidInputError: The target needs more noise than ``max_noise_multiplier``
            (the message says which knob to turn, ``fix``), is above epsilon
            100, or a parameter is out of range.
    """
    target = check_release_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta, allow_zero=False)
    rate = check_sampling_rate(sampling_rate)
    steps = _steps(steps)
    high = check_positive(max_noise_multiplier, "max_noise_multiplier")
    if high < MIN_NOISE_MULTIPLIER:
        raise InvalidInputError(
            "max_noise_multiplier is below the floor of the search",
            expected=f"max_noise_multiplier >= {MIN_NOISE_MULTIPLIER:g}",
            got=repr(max_noise_multiplier),
        )

    def pld(z: float) -> float:
        return pld_epsilon(rate, z, steps, delta)

    at_high = pld(high)
    if at_high > target:
        raise InvalidInputError(
            f"epsilon {target:g} is out of reach for {steps} steps at sampling rate {rate:.3g}",
            expected=f"a target that noise multiplier <= {high:g} can meet",
            got=f"epsilon {at_high:.3g} even at noise multiplier {high:g}",
            fix=fix,
            details={"epsilon_at_max_noise": at_high, "steps": steps, "sampling_rate": rate},
        )
    # PLD is slow at small z (10 s and more below 0.1), RDP is cheap everywhere and never
    # tighter than PLD: so RDP's z for the target is a valid upper end, and PLD only runs
    # near the answer. Step down from there until PLD overshoots, then close in with PLD.
    rdp_z = _smallest_fitting(
        lambda z: rdp_epsilon(rate, z, steps, delta),
        target,
        (MIN_NOISE_MULTIPLIER, math.inf),
        (high, rdp_epsilon(rate, high, steps, delta)),
        tolerance=_RDP_TOLERANCE,
        aimed=8,
    )
    fitting = (high, at_high)
    at_rdp = pld(rdp_z)
    if at_rdp <= target:
        fitting = (rdp_z, at_rdp)
    while fitting[0] > MIN_NOISE_MULTIPLIER:
        low = max(fitting[0] * _STEP_DOWN, MIN_NOISE_MULTIPLIER)
        at_low = pld(low)
        if at_low > target:
            return _smallest_fitting(pld, target, (low, at_low), fitting)
        fitting = (low, at_low)
    return fitting[0]  # the floor itself meets the target


def _smallest_fitting(
    epsilon: Callable[[float], float],
    target: float,
    over: tuple[float, float],
    fits: tuple[float, float],
    *,
    tolerance: float = CALIBRATION_TOLERANCE,
    aimed: int = 4,
) -> float:
    """The smallest z (to ``tolerance``) with ``epsilon(z) <= target``, between two known points.

    ``over`` is ``(z, epsilon(z))`` with epsilon above the target (``inf`` where
    unknown), ``fits`` one at or below it, ``over[0] < fits[0]``; epsilon falls
    as z grows. The answer ``z`` fits and ``z / (1 + tolerance)`` does not (or
    lies below ``over[0]``, taken to overshoot).

    Epsilon against z is a smooth, convex curve on log-log axes, so the first
    ``aimed`` probes go where the chord through the two ends meets the target
    (regula falsi, with the Illinois rule: an end kept twice has its value
    halved, so that the convex curve cannot hold one end still), shifted a
    quarter of the tolerance towards the side that fits; once the fitting end
    is within the tolerance of that aim, the probe is ``fits / (1 + tolerance)``,
    which closes the search when it overshoots. After ``aimed`` probes, plain
    bisection in log z: the work is bounded as bisection's is, plus ``aimed``.
    """
    (low, at_low), (high, at_high) = over, fits
    log_target = math.log(target)
    shift = 0.25 * math.log1p(tolerance)
    f_low = f_high = math.nan  # the (Illinois-scaled) log-excess of each end
    last_kept = ""
    while high / low > 1 + tolerance:
        closing = high / (1 + tolerance * 0.999)
        if aimed > 0 and math.isfinite(at_low) and at_high > 0:
            aimed -= 1
            if math.isnan(f_low):
                f_low = math.log(at_low) - log_target
            if math.isnan(f_high):
                f_high = math.log(at_high) - log_target
            a, b = math.log(low), math.log(high)
            z = min(math.exp(b - f_high * (b - a) / (f_high - f_low) + shift), closing)
            z = max(z, low * (1 + tolerance * 1e-3))  # strictly inside the bracket
        else:
            z = math.sqrt(low * high)
        at_z = epsilon(z)
        if at_z <= target:
            high, at_high, f_high = z, at_z, math.nan
            kept = "low"
        else:
            low, at_low, f_low = z, at_z, math.nan
            kept = "high"
        if kept == last_kept:  # the Illinois rule
            if kept == "low" and not math.isnan(f_low):
                f_low /= 2
            elif kept == "high" and not math.isnan(f_high):
                f_high /= 2
        last_kept = kept
    return high

"""DP-SGD accounting: the noise for a target epsilon, and epsilon by three accountants.

A DP-SGD run with Poisson sampling rate ``q``, noise multiplier ``sigma`` and
``steps`` steps is one ledger event, ``steps`` self-compositions of a
Poisson-subsampled Gaussian. Its epsilon is computed by

* **PLD** (Google ``dp_accounting``, the ledger's own accountant, pessimistic
  discretisation): the figure that is charged and printed on the privacy card;
* **RDP** (``dp_accounting``): the independent cross-check, never tighter;
* **PRV** (Opacus's accountant, Gopi et al. 2021): a second tight accountant
  from another code base.

:func:`calibrate_noise` searches the smallest ``sigma`` whose PLD epsilon is at
most the target, so the charged epsilon never overshoots it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from veil.errors import InvalidInputError
from veil.ledger import (
    Mechanism,
    PLDAccountant,
    RDPAccountant,
    check_delta,
    check_release_epsilon,
)

__all__ = ["PrivacyAccounting", "account", "calibrate_noise", "pld_epsilon", "prv_epsilon"]

# A noise multiplier above this drowns any signal in the clipped gradients: asking for
# more is refused, with the knobs to change (fewer epochs, more data, a bigger epsilon).
MAX_NOISE_MULTIPLIER = 50.0
# The floor of the search (and of a noise multiplier given directly): below it every PLD and
# PRV evaluation grows with 1 / sigma^2 (24 GB at a target of epsilon 1e4), for a run that is
# private in name only. A target whose answer would lie below it gets the floor.
MIN_NOISE_MULTIPLIER = 0.05
_MIN_NOISE_MULTIPLIER = MIN_NOISE_MULTIPLIER
_RDP_TOLERANCE = 1e-2
_STEP_DOWN = 0.85  # PLD's sigma for a target is 70-95% of RDP's in practice


def pld_epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    event = Mechanism.subsampled_gaussian(sample_rate, noise_multiplier, steps).dp_event
    return PLDAccountant().epsilon([event], delta)


def _rdp_epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    event = Mechanism.subsampled_gaussian(sample_rate, noise_multiplier, steps).dp_event
    return RDPAccountant().epsilon([event], delta)


def prv_epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon by Opacus's PRV accountant (for the cross-check)."""
    from opacus.accountants import PRVAccountant  # noqa: PLC0415 - heavy import

    accountant = PRVAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        # PRV sizes its domain with Opacus's RDP analysis, which warns when its order grid
        # is too small (and NumPy warns at q = 1); the PRV figure carries its own error bound.
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


@dataclass(frozen=True)
class PrivacyAccounting:
    """What a DP-SGD run costs, by each accountant."""

    sample_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    epsilon: float  # PLD: the charged figure
    epsilon_rdp: float
    epsilon_prv: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "steps": self.steps,
            "delta": self.delta,
            "epsilon": self.epsilon,
            "epsilon_rdp": self.epsilon_rdp,
            "epsilon_prv": self.epsilon_prv,
        }


def account(
    sample_rate: float, noise_multiplier: float, steps: int, delta: float, *, prv: bool = True
) -> PrivacyAccounting:
    """Epsilon of a DP-SGD run by PLD (charged), RDP and (optionally) PRV."""
    event = Mechanism.subsampled_gaussian(sample_rate, noise_multiplier, steps).dp_event
    prv_eps: float | None = None
    if prv:
        try:
            prv_eps = prv_epsilon(sample_rate, noise_multiplier, steps, delta)
        except (ValueError, RuntimeError):  # PRV's domain can be too small at extreme settings
            prv_eps = None
    return PrivacyAccounting(
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=steps,
        delta=delta,
        epsilon=PLDAccountant().epsilon([event], delta),
        epsilon_rdp=RDPAccountant().epsilon([event], delta),
        epsilon_prv=prv_eps,
    )


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """The smallest noise multiplier (to 0.1%) whose PLD epsilon is at most ``target_epsilon``.

    The answer is at least 0.05 (a target that needs less noise gets 0.05). The
    work is bounded for any target: targets above ``MAX_RELEASE_EPSILON`` (100)
    are refused before any accounting runs, the search never evaluates a noise
    multiplier below the floor, and it takes at most 55 PLD evaluations
    (a step-down of 15% per evaluation from RDP's answer to the floor, then a
    bisection to 0.1%).

    Raises:
        InvalidInputError: The target needs more noise than ``max_noise_multiplier``
            (the message says which knob to turn), is above epsilon 100 (the
            message points at a non-private baseline), or a parameter is out of range.
    """
    target = check_release_epsilon(target_epsilon)
    delta = check_delta(delta, allow_zero=False)
    if not 0 < sample_rate <= 1:
        raise InvalidInputError(
            "sampling rate out of range",
            expected="0 < batch size / dataset size <= 1",
            got=repr(sample_rate),
            fix="use a batch size no larger than the dataset",
        )
    high = max_noise_multiplier
    at_high = pld_epsilon(sample_rate, high, steps, delta)
    if at_high > target:
        raise InvalidInputError(
            f"epsilon {target:g} is out of reach for {steps} steps at sampling rate "
            f"{sample_rate:.3g}",
            expected=f"a target that noise multiplier <= {max_noise_multiplier:g} can meet",
            got=f"epsilon {at_high:.3g} even at noise multiplier {max_noise_multiplier:g}",
            fix="train fewer epochs (--epochs), use a smaller batch (--batch-size), "
            "or allow a larger --epsilon",
            details={"epsilon_at_max_noise": at_high, "steps": steps, "sample_rate": sample_rate},
        )
    # PLD is slow at small sigma (10 s and more below 0.1), RDP is cheap everywhere and never
    # tighter than PLD: so RDP's sigma for the target is a valid upper end, and PLD only runs
    # near the answer. Step down from there until PLD overshoots, then bisect with PLD.
    rdp_sigma = _bisect(
        lambda s: _rdp_epsilon(sample_rate, s, steps, delta) <= target,
        _MIN_NOISE_MULTIPLIER,
        high,
        tolerance=_RDP_TOLERANCE,
    )
    if pld_epsilon(sample_rate, rdp_sigma, steps, delta) <= target:
        high = rdp_sigma
    low = high * _STEP_DOWN
    while pld_epsilon(sample_rate, low, steps, delta) <= target:
        high = low
        if low <= _MIN_NOISE_MULTIPLIER:
            return high
        low = max(low * _STEP_DOWN, _MIN_NOISE_MULTIPLIER)
    return _bisect(lambda s: pld_epsilon(sample_rate, s, steps, delta) <= target, low, high)


def _bisect(
    fits: Callable[[float], bool], low: float, high: float, *, tolerance: float = 1e-3
) -> float:
    """The smallest sigma in [low, high] (to ``tolerance``) with ``fits``; ``fits(high)`` holds."""
    while high / low > 1 + tolerance:
        mid = math.sqrt(low * high)
        if fits(mid):
            high = mid
        else:
            low = mid
    return high

"""DP-SGD accounting: the noise for a target epsilon, and epsilon by three accountants.

A DP-SGD run with Poisson sampling rate ``q``, noise multiplier ``sigma`` and
``steps`` steps is one ledger event, ``steps`` self-compositions of a
Poisson-subsampled Gaussian: the mechanism DP-FedAvg runs over its rounds. The
search and the report are the ledger's (:mod:`veil.ledger.calibrate`), shared
with :mod:`veil.federated`; its epsilon is computed by

* **PLD** (Google ``dp_accounting``, the ledger's own accountant, pessimistic
  discretisation): the figure that is charged and printed on the privacy card;
* **RDP** (``dp_accounting``): the independent cross-check, never tighter;
* **PRV** (Opacus's accountant, Gopi et al. 2021): a second tight accountant
  from another code base, this module's cross-check (``cross_checks["prv"]``).

:func:`calibrate_noise` searches the smallest ``sigma`` whose PLD epsilon is at
most the target, so the charged epsilon never overshoots it.
"""

from __future__ import annotations

import warnings

from veil.ledger.calibrate import (
    MAX_NOISE_MULTIPLIER,
    MIN_NOISE_MULTIPLIER,
    SubsampledGaussianAccounting,
    pld_epsilon,
)
from veil.ledger.calibrate import calibrate_noise as _calibrate

__all__ = [
    "MAX_NOISE_MULTIPLIER",
    "MIN_NOISE_MULTIPLIER",
    "PrivacyAccounting",
    "account",
    "calibrate_noise",
    "pld_epsilon",
    "prv_epsilon",
]

_FIX = (
    "train fewer epochs (--epochs), use a smaller batch (--batch-size), or allow a larger --epsilon"
)


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


class PrivacyAccounting(SubsampledGaussianAccounting):
    """What a DP-SGD run costs: the shared report, read in DP-SGD's words.

    The fields and :meth:`to_dict` are :class:`~veil.ledger.calibrate.SubsampledGaussianAccounting`'s
    (``sampling_rate``, ``steps``, ``epsilon`` by PLD, ``epsilon_rdp``,
    ``epsilon_prv`` from ``cross_checks``).
    """

    @property
    def sample_rate(self) -> float:
        """``q = batch size / dataset size`` (DP-SGD's name for :attr:`sampling_rate`)."""
        return self.sampling_rate

    @property
    def epsilon_prv(self) -> float | None:
        """By Opacus's PRV accountant; ``None`` when not computed or out of its domain."""
        return self.cross_checks.get("prv")


def account(
    sample_rate: float, noise_multiplier: float, steps: int, delta: float, *, prv: bool = True
) -> PrivacyAccounting:
    """Epsilon of a DP-SGD run by PLD (charged), RDP and (optionally) PRV."""
    prv_eps: float | None = None
    if prv:
        try:
            prv_eps = prv_epsilon(sample_rate, noise_multiplier, steps, delta)
        except (ValueError, RuntimeError):  # PRV's domain can be too small at extreme settings
            prv_eps = None
    return PrivacyAccounting.compute(
        sample_rate, noise_multiplier, steps, delta, cross_checks={"prv": prv_eps}
    )


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """The smallest noise multiplier (to 0.1 %) whose PLD epsilon is at most ``target_epsilon``.

    :func:`veil.ledger.calibrate.calibrate_noise` (the one search, shared with
    federated averaging), with the knobs of an unreachable target named as
    ``veil train``'s options. The answer is at least 0.05; targets above
    epsilon 100 are refused before any accounting runs; at most 57 PLD evaluations.

    Raises:
        InvalidInputError: The target needs more noise than ``max_noise_multiplier``
            (the message says which knob to turn), is above epsilon 100 (the
            message points at a non-private baseline), or a parameter is out of range.
    """
    return _calibrate(
        target_epsilon,
        delta,
        sample_rate,
        steps,
        max_noise_multiplier=max_noise_multiplier,
        fix=_FIX,
    )

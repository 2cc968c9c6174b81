"""User-level differential privacy for federated averaging: DP-FedAvg, adaptive clipping, local DP.

The privacy unit is a **client** (a user and all of their data), not a record.
Each round the server samples every client independently with probability
``q`` (Poisson sampling), each sampled client's model update is clipped to L2
norm ``C``, and the server releases

    (sum of clipped updates + N(0, (z C)^2 I)) / (q N)

(McMahan et al. 2018, "Learning differentially private recurrent language
models", ICLR, Algorithm 1 with the fixed-denominator estimator). The
denominator is the *expected* number of clients ``q N``, not the number that
answered, so adding or removing one client moves the average by at most
``C / (q N)`` whoever takes part. ``rounds`` such rounds are one ledger event,
``rounds`` self-compositions of a Poisson-subsampled Gaussian with noise
multiplier ``z``, and its epsilon is computed by

* **PLD** (the ledger's :class:`~veil.ledger.PLDAccountant`): the charged figure;
* **RDP** (:class:`~veil.ledger.RDPAccountant`): the cross-check, never tighter
  (measured 8-15 % above PLD at epsilon 2-8, 70 % above at epsilon 0.7);
* **Flower's** ``flwr.serverapp.RdpAccountant`` (Poisson sampling,
  add-or-remove-one): the figure Flower itself would report. It wraps the same
  ``dp_accounting`` RDP analysis with the same default orders, at sampling rate
  ``sample_size / population_size`` with ``sample_size = round(q N)``; so it
  equals the RDP figure whenever ``q N`` is a whole number. Otherwise the
  rounding (half to even) can lower the rate, and Flower's figure is then
  below the true RDP figure (``q N = 10.5`` accounts 10 clients): it is
  reported, never charged.

The guarantee holds for what the server *releases* (the sequence of models)
and assumes the sampling is secret: a party that sees who took part in each
round gets no amplification by subsampling (for it, each round a client takes
part in is a plain Gaussian mechanism).

**Adaptive clipping** (Andrew et al. 2021, "Differentially private learning
with adaptive clipping", NeurIPS) replaces the fixed ``C`` by an estimate of
the ``gamma``-quantile of the update norms: each client also reports the bit
``b_i = 1[norm <= C]``, the server releases the noised fraction
``b~ = (sum(b_i - 1/2) + N(0, sigma_b^2)) / (q N) + 1/2`` and moves the clip
geometrically, ``C <- C exp(-eta (b~ - gamma))``. The centred bits have
sensitivity 1/2, so the count query is a Gaussian mechanism with noise
multiplier ``2 sigma_b``; composed with the update query (noise multiplier
``z_delta``) the pair is exactly one Gaussian mechanism on the concatenated
vector, with ``z^-2 = z_delta^-2 + (2 sigma_b)^-2`` (their Theorem 1). So a
run planned for noise multiplier ``z`` noises the updates with

    z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)  (> z; needs 2 sigma_b > z)

and is accounted as one Poisson-subsampled Gaussian with ``z``
(:func:`adaptive_update_noise`). The default ``sigma_b = q N / 20`` is the
paper's (and Flower's ``DifferentialPrivacyServerSideAdaptiveClipping``).

The aggregator that runs a plan is :class:`~veil.federated._dpfedavg.DPFedAvgAggregator`;
local and distributed DP are in :mod:`veil.federated._local_dp`; the noise and
the clip in :mod:`veil.federated._noise`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from veil.errors import InvalidInputError, require
from veil.federated._noise import flag, whole
from veil.ledger import (
    Mechanism,
    PrivacyEvent,
)
from veil.ledger.calibrate import MAX_NOISE_MULTIPLIER as _MAX_NOISE_MULTIPLIER
from veil.ledger.calibrate import (
    SubsampledGaussianAccounting,
    account_subsampled_gaussian,
    calibrate_noise,
    check_sampling_rate,
)
from veil.ledger.params import check_delta, check_positive

__all__ = [
    "DEFAULT_CLIP_LEARNING_RATE",
    "DEFAULT_TARGET_QUANTILE",
    "MAX_NOISE_MULTIPLIER",
    "UserDPPlan",
    "adaptive_update_noise",
    "calibrate_user_noise",
    "count_noise",
    "plan_user_dp",
]

# Defaults of Andrew et al. 2021 (section 3): median, learning rate 0.2, sigma_b = m / 20.
DEFAULT_TARGET_QUANTILE = 0.5
DEFAULT_CLIP_LEARNING_RATE = 0.2
_COUNT_NOISE_FRACTION = 1.0 / 20.0
# Calibration: the ledger's one search for the Poisson-subsampled Gaussian (DP-SGD's too).
MAX_NOISE_MULTIPLIER = _MAX_NOISE_MULTIPLIER
_FIX = "run fewer rounds, sample fewer clients per round, or allow a larger epsilon"


# ----------------------------------------------------------------------------- validation


def _sampling_rate(value: object) -> float:
    return check_sampling_rate(
        value, fix="pass the probability that a client takes part in a round, such as 0.1"
    )


def count_noise(count_noise_multiplier: float | None, expected_clients: float) -> float:
    if count_noise_multiplier is None:
        return expected_clients * _COUNT_NOISE_FRACTION
    return check_positive(count_noise_multiplier, "count_noise_multiplier")


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Hold back dp_accounting's log lines about RDP orders it could not compute.

    Orders that do not converge are left out of RDP's minimum over orders,
    which can only loosen the cross-check.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ----------------------------------------------------------------------------- accounting


def adaptive_update_noise(noise_multiplier: float, count_noise_multiplier: float) -> float:
    """The noise multiplier on the updates that keeps adaptive clipping at ``noise_multiplier``.

    Andrew et al. 2021, Theorem 1: the update query with noise multiplier
    ``z_delta`` and the centred count query (sensitivity 1/2, noise standard
    deviation ``sigma_b``, so noise multiplier ``2 sigma_b``) together are one
    Gaussian mechanism with ``z = (z_delta^-2 + (2 sigma_b)^-2)^(-1/2)``. This
    solves that for ``z_delta``.

    Args:
        noise_multiplier: ``z``, the noise multiplier the run is accounted at.
        count_noise_multiplier: ``sigma_b``, the standard deviation of the noise
            on the number of unclipped clients (that count has sensitivity 1,
            so this is also its noise multiplier before centring).

    Raises:
        InvalidInputError: ``2 sigma_b <= z`` (the count alone would spend the budget).
    """
    z = check_positive(noise_multiplier, "noise_multiplier")
    sigma_b = check_positive(count_noise_multiplier, "count_noise_multiplier")
    if 2 * sigma_b <= z:
        raise InvalidInputError(
            "the noise on the clipped count is too small for this noise multiplier",
            expected=f"count noise sigma_b > noise_multiplier / 2 = {z / 2:g}",
            got=f"sigma_b = {sigma_b:g}",
            fix="sample more clients per round (the default sigma_b is clients per round / 20), "
            "pass a larger count_noise_multiplier, or use a fixed clip",
        )
    return float((z**-2 - (2 * sigma_b) ** -2) ** -0.5)


def _flower_epsilon(
    population: int, sample_size: int, noise_multiplier: float, rounds: int, delta: float
) -> float:
    """Epsilon by Flower's RDP accountant (Poisson sampling, add-or-remove-one)."""
    flwr = require("flwr.serverapp", extra="federated", purpose="Flower's privacy accountant")
    config = flwr.PrivacyConfig(
        target_delta=delta,
        population_size=population,
        neighboring_relation=flwr.NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=flwr.SamplingMethod.POISSON,
    )
    accountant = flwr.RdpAccountant(config)
    event = flwr.GaussianPrivacyEvent(
        noise_multiplier=noise_multiplier, sample_size=sample_size, population_size=population
    )
    with _quiet_absl():  # dp_accounting computes the RDP orders when composing
        accountant.compose(event, rounds)
        return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class UserDPPlan:
    """What a DP-FedAvg run costs each client, by three accountants.

    The epsilon figures are one :class:`~veil.ledger.calibrate.SubsampledGaussianAccounting`
    (the report DP-SGD's runs have too): PLD charged, RDP and Flower's
    accountant (``cross_checks["flower"]``) as cross-checks. The properties
    read it in federated words.

    Attributes:
        population: Clients the server samples from (``N``).
        accounting: The run's accounting: ``rounds`` steps at sampling rate
            ``q`` and noise multiplier ``z``.
        adaptive: Whether the clip adapts (Andrew et al. 2021).
        count_noise_multiplier: ``sigma_b`` for adaptive clipping, else ``None``.
        update_noise_multiplier: The noise multiplier on the updates: ``z``
            with a fixed clip, ``z_delta`` (larger) with adaptive clipping.
        expected_clients: ``q N``, the denominator of every average.
        flower_sampling_rate: The rate Flower accounted, ``round(q N) / N``.
    """

    population: int
    accounting: SubsampledGaussianAccounting
    adaptive: bool
    count_noise_multiplier: float | None
    update_noise_multiplier: float
    expected_clients: float
    flower_sampling_rate: float

    @property
    def sampling_rate(self) -> float:
        """``q``: the probability that a client takes part in a round."""
        return self.accounting.sampling_rate

    @property
    def rounds(self) -> int:
        """Rounds of federated averaging (the accounting's steps)."""
        return self.accounting.steps

    @property
    def noise_multiplier(self) -> float:
        """``z``, the noise multiplier the run is accounted at."""
        return self.accounting.noise_multiplier

    @property
    def delta(self) -> float:
        """The delta every epsilon is stated at."""
        return self.accounting.delta

    @property
    def epsilon(self) -> float:
        """By PLD: the charged figure."""
        return self.accounting.epsilon

    @property
    def epsilon_rdp(self) -> float:
        """By RDP (``dp_accounting``): the cross-check."""
        return self.accounting.epsilon_rdp

    @property
    def epsilon_flower(self) -> float:
        """By Flower's ``RdpAccountant`` (at :attr:`flower_sampling_rate`)."""
        flower = self.accounting.cross_checks["flower"]
        assert flower is not None  # noqa: S101 - plan_user_dp always runs Flower's accountant
        return flower

    def mechanism(self) -> Mechanism:
        """The run as one ledger mechanism: ``rounds`` Poisson-subsampled Gaussians with ``z``."""
        extra: dict[str, Any] = {
            "privacy_unit": "client",
            "population": self.population,
            "expected_clients": self.expected_clients,
            "adaptive_clipping": self.adaptive,
            "update_noise_multiplier": self.update_noise_multiplier,
        }
        if self.adaptive:
            extra["count_noise_multiplier"] = self.count_noise_multiplier
        return Mechanism.subsampled_gaussian(
            self.sampling_rate, self.noise_multiplier, self.rounds, **extra
        )

    def privacy_event(self, what: str, details: Mapping[str, Any] | None = None) -> PrivacyEvent:
        """The ledger event of the whole run (``operation="federated"``)."""
        return PrivacyEvent(
            what=what,
            mechanisms=(self.mechanism(),),
            operation="federated",
            details={
                "privacy_unit": "client",
                "delta": self.delta,
                "epsilon_rdp": self.epsilon_rdp,
                "epsilon_flower": self.epsilon_flower,
                **dict(details or {}),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the accounting's figures (``epsilon``, ``epsilon_rdp``,
        ``epsilon_flower``, ...) with ``rounds`` for its steps, and the plan's own fields."""
        figures = self.accounting.to_dict()
        figures["rounds"] = figures.pop("steps")
        return {
            "population": self.population,
            **figures,
            "adaptive": self.adaptive,
            "count_noise_multiplier": self.count_noise_multiplier,
            "update_noise_multiplier": self.update_noise_multiplier,
            "expected_clients": self.expected_clients,
            "flower_sampling_rate": self.flower_sampling_rate,
        }


def _check_expected_clients(population: int, sampling_rate: float) -> float:
    expected = sampling_rate * population
    if expected < 1:
        raise InvalidInputError(
            "fewer than one client is expected per round",
            expected="sampling rate x population >= 1",
            got=f"{sampling_rate:g} x {population} = {expected:g}",
            fix="raise the sampling rate or add clients",
        )
    return expected


def plan_user_dp(
    *,
    population: int,
    sampling_rate: float,
    rounds: int,
    noise_multiplier: float,
    delta: float,
    adaptive: bool = False,
    count_noise_multiplier: float | None = None,
) -> UserDPPlan:
    """The client-level epsilon of a DP-FedAvg run, checked before it starts.

    Args:
        population: Clients the server samples from.
        sampling_rate: Probability that each client takes part in a round
            (Poisson sampling; the server must draw it secretly, see
            :class:`~veil.federated._noise.GaussianNoise`).
        rounds: Rounds of federated averaging.
        noise_multiplier: ``z``: the server adds ``N(0, (z C)^2)`` to the sum
            of updates clipped to ``C`` (with adaptive clipping, ``z`` is the
            accounted multiplier and the updates get ``z_delta``, see
            :func:`adaptive_update_noise`).
        delta: The delta to state epsilon at (required; well below 1 / population).
        adaptive: Adaptive clipping (Andrew et al. 2021).
        count_noise_multiplier: ``sigma_b`` for adaptive clipping (default
            ``sampling_rate * population / 20``); only with ``adaptive``.

    Raises:
        InvalidInputError: A parameter is out of range (``delta`` missing or 0,
            ``q`` outside (0, 1], ``rounds < 1``, fewer than one client per
            round, a count noise without adaptive clipping or too small for ``z``).
    """
    population = whole(population, "population")
    rate = _sampling_rate(sampling_rate)
    rounds = whole(rounds, "rounds")
    z = check_positive(noise_multiplier, "noise_multiplier")
    delta = check_delta(delta, allow_zero=False)
    adaptive = flag(adaptive, "adaptive")
    expected = _check_expected_clients(population, rate)
    sigma_b: float | None = None
    update_z = z
    if adaptive:
        sigma_b = count_noise(count_noise_multiplier, expected)
        update_z = adaptive_update_noise(z, sigma_b)
    elif count_noise_multiplier is not None:
        raise InvalidInputError(
            "a count noise is only used with adaptive clipping",
            expected="count_noise_multiplier=None with a fixed clip",
            got=repr(count_noise_multiplier),
            fix="pass adaptive=True, or drop count_noise_multiplier",
        )
    sample_size = round(rate * population)
    flower = _flower_epsilon(population, sample_size, z, rounds, delta)
    return UserDPPlan(
        population=population,
        accounting=account_subsampled_gaussian(
            rate, z, rounds, delta, cross_checks={"flower": flower}
        ),
        adaptive=adaptive,
        count_noise_multiplier=sigma_b,
        update_noise_multiplier=update_z,
        expected_clients=expected,
        flower_sampling_rate=sample_size / population,
    )


def calibrate_user_noise(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    rounds: int,
    *,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """The smallest noise multiplier (to 0.1 %) whose client-level PLD epsilon is at most the target.

    :func:`veil.ledger.calibrate.calibrate_noise` (the one search, shared with
    DP-SGD: a round is a step), with the knobs of an unreachable target named
    in federated words. The answer ``z`` satisfies ``epsilon(z) <= target_epsilon``
    and ``epsilon(z / 1.001) > target_epsilon`` (or ``z`` is the floor 0.05).
    With adaptive clipping pass ``z`` to :func:`plan_user_dp`; the updates then
    get :func:`adaptive_update_noise`.

    Raises:
        InvalidInputError: The target needs more noise than
            ``max_noise_multiplier`` (the message says which knob to turn), is
            above epsilon 100, or a parameter is out of range.
    """
    return calibrate_noise(
        target_epsilon,
        delta,
        sampling_rate,
        rounds,
        max_noise_multiplier=max_noise_multiplier,
        fix=_FIX,
    )

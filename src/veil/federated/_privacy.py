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

**Local DP** (:class:`LocalGaussianDP`): each client clips its own update and
adds ``N(0, (z C)^2 I)`` before it leaves the device, so not even the server
sees an un-noised update. Any two clipped updates differ by up to ``2 C``
(local DP compares every pair of inputs), so each round is a Gaussian
mechanism with noise multiplier ``z / 2``, composed over the rounds the client
takes part in, with no amplification (the server sees who took part).
Flower's ``LocalDpMod`` takes the sensitivity as an argument; the figure here
is the one for the standard local-DP definition.

**Distributed noise** (:func:`distributed_noise_std`): under secure
aggregation the server sees only the sum, so the noise can be split between
the clients; each adds ``N(0, (z C)^2 / m)`` and any ``m`` survivors together
carry the central noise.

Noise comes only from :class:`GaussianNoise`, a wrapper of
:class:`veil._random.SecureRandom` (AES-256-CTR under a key from ``os.urandom``;
NumPy out, no torch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dp_accounting import dp_event

from veil._random import SecureRandom
from veil.errors import InvalidInputError, PrivacyLeakWarning, require
from veil.federated._aggregate import check_whole
from veil.ledger import (
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
)
from veil.ledger.calibrate import MAX_NOISE_MULTIPLIER as _MAX_NOISE_MULTIPLIER
from veil.ledger.calibrate import (
    SubsampledGaussianAccounting,
    account_subsampled_gaussian,
    calibrate_noise,
    check_sampling_rate,
)
from veil.ledger.params import check_delta, check_positive, check_probability

__all__ = [
    "DPFedAvgAggregator",
    "GaussianNoise",
    "LocalGaussianDP",
    "UserDPPlan",
    "adaptive_update_noise",
    "calibrate_user_noise",
    "clip_update",
    "distributed_noise_std",
    "local_dp_epsilon",
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


def _whole(value: object, name: str, *, minimum: int = 1) -> int:
    return check_whole(value, name, minimum=minimum)


def _sampling_rate(value: object) -> float:
    return check_sampling_rate(
        value, fix="pass the probability that a client takes part in a round, such as 0.1"
    )


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False", expected="a bool", got=repr(value))
    return value


def _array(value: object, name: str) -> np.ndarray:
    """A finite float64 copy of ``value`` (NaN would slip through a norm comparison)."""
    if not isinstance(value, np.ndarray):
        raise InvalidInputError(
            f"{name} must be a NumPy array",
            expected="a numpy.ndarray of real numbers",
            got=type(value).__name__,
            fix="flatten the model's parameters into one array (numpy.concatenate)",
        )
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise InvalidInputError(
            f"{name} must hold real numbers",
            expected="a float or integer dtype",
            got=str(value.dtype),
        )
    array = np.array(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(
            f"{name} contains NaN or infinite values",
            expected="finite numbers",
            got=f"{int(np.sum(~np.isfinite(array)))} non-finite entries",
            fix="check the client's training for divergence (a smaller learning rate)",
        )
    return array


def _count_noise(count_noise_multiplier: float | None, expected_clients: float) -> float:
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
            :class:`GaussianNoise`).
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
    population = _whole(population, "population")
    rate = _sampling_rate(sampling_rate)
    rounds = _whole(rounds, "rounds")
    z = check_positive(noise_multiplier, "noise_multiplier")
    delta = check_delta(delta, allow_zero=False)
    adaptive = _flag(adaptive, "adaptive")
    expected = _check_expected_clients(population, rate)
    sigma_b: float | None = None
    update_z = z
    if adaptive:
        sigma_b = _count_noise(count_noise_multiplier, expected)
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


# ----------------------------------------------------------------------------- noise and clipping


class GaussianNoise:
    """Gaussian noise for federated DP from :class:`veil._random.SecureRandom` (AES-256-CTR).

    The same source serves the server's Poisson sampling of clients
    (:attr:`random`, ``bernoulli``): amplification by subsampling assumes
    nobody can predict who is drawn. Drawing needs NumPy and ``cryptography``
    only, not torch.

    Args:
        seed: ``None`` (default) keys the stream from the operating system's
            CSPRNG. An integer makes the noise a function of the seed:
            reproducible, **not private**, and a
            :class:`~veil.errors.PrivacyLeakWarning` says so (tests and demos only).
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            self.random = SecureRandom()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrivacyLeakWarning)
                self.random = SecureRandom(seed)  # validates the seed
            warnings.warn(
                "seeded federated DP noise is reproducible but not private: the noise is a "
                "function of the seed (use it for tests and demos only)",
                PrivacyLeakWarning,
                stacklevel=2,
            )
        self.secure = seed is None

    def sample(self, shape: int | tuple[int, ...], std: float) -> np.ndarray:
        """Independent N(0, std^2) values (float64) of ``shape``."""
        std = check_positive(std, "noise standard deviation")
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        for dim in dims:
            _whole(dim, "shape dimension", minimum=0)
        count = math.prod(int(d) for d in dims)
        values = self.random.normal(count, std).astype(np.float64)
        return values.reshape(tuple(int(d) for d in dims))


def _check_noise(noise: object) -> None:
    if noise is not None and not isinstance(noise, GaussianNoise):
        raise InvalidInputError(
            "noise must be a GaussianNoise",
            expected="a GaussianNoise (secure when built without a seed), or None",
            got=type(noise).__name__,
        )


def clip_update(update: np.ndarray, clip: float) -> tuple[np.ndarray, bool]:
    """``update`` scaled to L2 norm at most ``clip`` (a float64 copy), and whether it was scaled.

    The norm is over all entries (flatten the model's tensors into one array
    first). An update within the clip is returned unchanged; a longer one
    keeps its direction. After scaling the norm is checked again and the
    factor nudged down, so rounding never leaves it above ``clip``.

    Raises:
        InvalidInputError: ``clip`` is not positive and finite, or ``update``
            is not a finite real array.
    """
    clip = check_positive(clip, "clip")
    array = _array(update, "update")
    norm = float(np.linalg.norm(array))
    if norm <= clip:
        return array, False
    factor = clip / norm
    clipped = array * factor
    while float(np.linalg.norm(clipped)) > clip:
        factor = float(np.nextafter(factor, 0.0))
        clipped = array * factor
    return clipped, True


# ----------------------------------------------------------------------------- central DP


class DPFedAvgAggregator:
    """The server side of DP-FedAvg: noised fixed-denominator averages and the adaptive clip.

    Each round, call :meth:`aggregate` with the sum of the clients' clipped
    updates (from secure aggregation, where each client clips to :attr:`clip`
    itself) or :meth:`aggregate_updates` with the updates (the server clips).
    With adaptive clipping each client also contributes its bit
    ``b_i = 1[norm <= clip]``; under secure aggregation it is one more entry of
    the masked vector, and the server passes the summed bits as
    ``unclipped_count`` and the number of survivors as ``participants``.
    Broadcast :attr:`clip` to the clients of the next round.

    Args:
        clip: ``C``, the L2 clip of each update (the initial clip when adaptive).
        noise_multiplier: ``z``, the multiplier the run is accounted at (as
            given to :func:`plan_user_dp`).
        expected_clients: ``q N``, the denominator of every average.
        noise: The noise source (default: a fresh secure :class:`GaussianNoise`).
        adaptive: Adaptive clipping (Andrew et al. 2021).
        target_quantile: ``gamma``, the fraction of updates to leave unclipped.
        clip_learning_rate: ``eta`` of the geometric update.
        count_noise_multiplier: ``sigma_b`` (default ``expected_clients / 20``).

    Raises:
        InvalidInputError: A parameter is out of range.
    """

    def __init__(
        self,
        *,
        clip: float,
        noise_multiplier: float,
        expected_clients: float,
        noise: GaussianNoise | None = None,
        adaptive: bool = False,
        target_quantile: float = DEFAULT_TARGET_QUANTILE,
        clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE,
        count_noise_multiplier: float | None = None,
    ) -> None:
        self.clip = check_positive(clip, "clip")
        self.noise_multiplier = check_positive(noise_multiplier, "noise_multiplier")
        self.expected_clients = check_positive(expected_clients, "expected_clients")
        self.adaptive = _flag(adaptive, "adaptive")
        self.target_quantile = check_probability(target_quantile, "target_quantile")
        self.clip_learning_rate = check_positive(clip_learning_rate, "clip_learning_rate")
        _check_noise(noise)
        self.count_noise_multiplier: float | None = None
        self.update_noise_multiplier = self.noise_multiplier
        self._count_std = 0.0
        if self.adaptive:
            self._count_std = _count_noise(count_noise_multiplier, self.expected_clients)
            self.count_noise_multiplier = self._count_std
            self.update_noise_multiplier = adaptive_update_noise(
                self.noise_multiplier, self._count_std
            )
        elif count_noise_multiplier is not None:
            raise InvalidInputError(
                "a count noise is only used with adaptive clipping",
                expected="count_noise_multiplier=None with a fixed clip",
                got=repr(count_noise_multiplier),
                fix="pass adaptive=True, or drop count_noise_multiplier",
            )
        self._noise = noise if noise is not None else GaussianNoise()
        self.rounds = 0
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def from_plan(
        cls,
        plan: UserDPPlan,
        *,
        clip: float,
        noise: GaussianNoise | None = None,
        target_quantile: float = DEFAULT_TARGET_QUANTILE,
        clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE,
    ) -> DPFedAvgAggregator:
        """The aggregator that runs ``plan`` (same ``z``, ``q N`` and count noise)."""
        return cls(
            clip=clip,
            noise_multiplier=plan.noise_multiplier,
            expected_clients=plan.expected_clients,
            noise=noise,
            adaptive=plan.adaptive,
            target_quantile=target_quantile,
            clip_learning_rate=clip_learning_rate,
            count_noise_multiplier=plan.count_noise_multiplier,
        )

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise on each entry of the next average."""
        return self.update_noise_multiplier * self.clip / self.expected_clients

    def aggregate(
        self,
        clipped_sum: np.ndarray,
        unclipped_count: float | None = None,
        *,
        participants: int | None = None,
    ) -> np.ndarray:
        """``(clipped_sum + N(0, (z C)^2 I)) / expected_clients``, then the clip's update.

        Args:
            clipped_sum: The sum of the round's updates, each clipped to :attr:`clip`.
            unclipped_count: With adaptive clipping, ``sum(b_i)``: how many of
                the summed updates had norm at most :attr:`clip` (required then).
            participants: With adaptive clipping, how many updates are in the
                sum (required then; 0 when nobody answered).

        With adaptive clipping the noised fraction
        ``b~ = (unclipped_count - participants / 2 + N(0, sigma_b^2)) / expected + 1/2``
        moves the clip to ``C exp(-eta (b~ - gamma))`` for the next round.
        """
        total = _array(clipped_sum, "clipped_sum")
        clip = self.clip
        std = self.update_noise_multiplier * clip
        average: np.ndarray = (total + self._noise.sample(total.shape, std)) / self.expected_clients
        stats: dict[str, Any] = {
            "round": self.rounds + 1,
            "clip": clip,
            "noise_std": std / self.expected_clients,
        }
        if not self.adaptive:
            if unclipped_count is not None or participants is not None:
                self._check_count(unclipped_count, participants)  # refuse nonsense all the same
        else:
            count, survivors = self._check_count(unclipped_count, participants)
            noise = float(self._noise.sample(1, self._count_std)[0])
            centred = count - survivors / 2 + noise
            fraction = centred / self.expected_clients + 0.5
            self.clip = clip * math.exp(
                -self.clip_learning_rate * (fraction - self.target_quantile)
            )
            stats["unclipped_fraction"] = fraction  # noised: safe to log
            stats["next_clip"] = self.clip
        self.rounds += 1
        self.last_stats = stats
        return average

    def _check_count(
        self, unclipped_count: float | None, participants: int | None
    ) -> tuple[float, int]:
        if unclipped_count is None or participants is None:
            raise InvalidInputError(
                "adaptive clipping needs the count of unclipped updates and of participants",
                expected="unclipped_count (sum of the bits norm <= clip) and participants",
                got=f"unclipped_count={unclipped_count!r}, participants={participants!r}",
                fix="have each client append 1.0 (norm <= clip) or 0.0 to its masked vector, "
                "and pass the summed entry and the number of survivors",
            )
        survivors = _whole(participants, "participants", minimum=0)
        if isinstance(unclipped_count, bool) or not isinstance(
            unclipped_count, (int, float, np.integer, np.floating)
        ):
            raise InvalidInputError(
                "unclipped_count must be a number",
                expected=f"0 <= unclipped_count <= participants = {survivors}",
                got=repr(unclipped_count),
            )
        count = float(unclipped_count)
        if not (math.isfinite(count) and 0 <= count <= survivors):
            raise InvalidInputError(
                "unclipped_count out of range",
                expected=f"0 <= unclipped_count <= participants = {survivors}",
                got=repr(unclipped_count),
                fix="sum the clients' 0/1 bits (1 when the update was not clipped)",
            )
        return count, survivors

    def aggregate_updates(
        self, updates: list[np.ndarray], *, unclipped: Sequence[float] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Clip each update to :attr:`clip`, sum and :meth:`aggregate` (no secure aggregation).

        ``unclipped`` are the clients' own bits ``b_i`` (1.0 when the update's
        norm was at most the clip *before* the client clipped it). Pass them
        when clients clip: an update clipped to ``C`` has norm ``C`` up to
        rounding, so the server cannot tell from it whether it was clipped (the
        count would then follow float rounding, not the norms). Without them the
        count is taken from the server's own clipping (updates sent unclipped).

        Returns:
            The noised average and the round's statistics: ``clip`` (used this
            round), ``noise_std``, ``clients`` and ``clipped`` (how many
            updates were scaled down: **not** noised, for the operator's log
            only), and with adaptive clipping ``unclipped_fraction`` (noised)
            and ``next_clip``.
        """
        if not isinstance(updates, list) or not updates:
            raise InvalidInputError(
                "no updates to aggregate",
                expected="a non-empty list of arrays",
                got=repr(updates) if not isinstance(updates, list) else "an empty list",
                fix="when no client answered, call aggregate(numpy.zeros(size), 0, participants=0)",
            )
        first = _array(updates[0], "update")
        total = np.zeros_like(first)
        clipped = 0
        for index, update in enumerate(updates):
            if not isinstance(update, np.ndarray) or update.shape != first.shape:
                raise InvalidInputError(
                    "updates differ in shape",
                    expected=f"every update of shape {first.shape}",
                    got=f"update {index}: {getattr(update, 'shape', type(update).__name__)}",
                )
            scaled, was_clipped = clip_update(update, self.clip)
            total += scaled
            clipped += was_clipped
        clients = len(updates)
        count: float = clients - clipped
        if unclipped is not None:
            bits = [float(b) for b in unclipped]
            if len(bits) != clients or any(b not in (0.0, 1.0) for b in bits):
                raise InvalidInputError(
                    "the clients' unclipped bits do not match their updates",
                    expected=f"{clients} values, each 0.0 or 1.0",
                    got=f"{len(bits)} values: {bits[:5]}",
                )
            count = sum(bits)
        average = self.aggregate(total, count, participants=clients)
        return average, {**self.last_stats, "clients": clients, "clipped": clipped}


# ----------------------------------------------------------------------------- local and distributed DP


def _local_mechanism(noise_multiplier: float, clip: float, rounds: int) -> Mechanism:
    # Any two clipped updates differ by up to 2C (local DP compares every pair of inputs).
    single = Mechanism.gaussian(sigma=noise_multiplier * clip, sensitivity=2 * clip)
    return Mechanism(
        name="composed_gaussian",
        parameters={
            **single.parameters,
            "compositions": rounds,
            "privacy_unit": "client",
            "model": "local",
            "neighbouring": "replace-one",
        },
        dp_event=dp_event.SelfComposedDpEvent(single.dp_event, rounds),
    )


def local_dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """A client's local-DP epsilon (PLD) after ``rounds`` rounds of :class:`LocalGaussianDP`.

    Each round is a Gaussian mechanism with noise ``z C`` on an input of L2
    diameter ``2 C``, i.e. noise multiplier ``z / 2``; no amplification.
    """
    z = check_positive(noise_multiplier, "noise_multiplier")
    rounds = _whole(rounds, "rounds")
    delta = check_delta(delta, allow_zero=False)
    return PLDAccountant().epsilon([_local_mechanism(z, 1.0, rounds).dp_event], delta)


class LocalGaussianDP:
    """The client side of local DP: clip to ``C``, add ``N(0, (z C)^2 I)`` before sending.

    :meth:`privatize` returns only the noised update: the clipping bit must
    not leave the client un-noised. :attr:`rounds` counts the rounds the
    client took part in, the number its guarantee composes.

    Args:
        clip: ``C``.
        noise_multiplier: ``z``.
        noise: The noise source (default: a fresh secure :class:`GaussianNoise`).
    """

    def __init__(
        self, *, clip: float, noise_multiplier: float, noise: GaussianNoise | None = None
    ) -> None:
        self.clip = check_positive(clip, "clip")
        self.noise_multiplier = check_positive(noise_multiplier, "noise_multiplier")
        _check_noise(noise)
        self._noise = noise if noise is not None else GaussianNoise()
        self.rounds = 0

    def privatize(self, update: np.ndarray) -> np.ndarray:
        """The clipped, noised update (float64); counts one more round."""
        clipped, _ = clip_update(update, self.clip)
        noisy: np.ndarray = clipped + self._noise.sample(
            clipped.shape, self.noise_multiplier * self.clip
        )
        self.rounds += 1
        return noisy

    def _rounds(self, rounds: int | None) -> int:
        return _whole(self.rounds if rounds is None else rounds, "rounds")

    def epsilon(self, delta: float, rounds: int | None = None) -> float:
        """The client's epsilon at ``delta`` after ``rounds`` (default: :attr:`rounds`)."""
        return local_dp_epsilon(self.noise_multiplier, self._rounds(rounds), delta)

    def privacy_event(
        self, what: str, details: Mapping[str, Any] | None = None, *, rounds: int | None = None
    ) -> PrivacyEvent:
        """The ledger event of this client's releases (``operation="federated"``)."""
        mechanism = _local_mechanism(self.noise_multiplier, self.clip, self._rounds(rounds))
        return PrivacyEvent(
            what=what,
            mechanisms=(mechanism,),
            operation="federated",
            details={"privacy_unit": "client", "model": "local", **dict(details or {})},
        )


def distributed_noise_std(
    noise_multiplier: float, clip: float, expected_clients: float, min_clients: int
) -> float:
    """Each client's noise standard deviation ``z C / sqrt(min_clients)`` under secure aggregation.

    Any ``n >= min_clients`` survivors together add noise of variance
    ``n (z C)^2 / min_clients >= (z C)^2``, at least the central mechanism's,
    so the server (which sees only the masked sum) never sees a less noised
    aggregate, and the accounting of :func:`plan_user_dp` holds for the
    released model. The price: when the expected ``q N`` clients answer, the
    average carries ``sqrt(q N / min_clients)`` times the central noise; and a
    single client's message, were it unmasked, has only noise multiplier
    ``z / sqrt(min_clients)`` on its own. Rounds with fewer than
    ``min_clients`` survivors must be dropped, not released. Against the
    server, which knows who took part, there is no amplification by sampling.

    Raises:
        InvalidInputError: A parameter is out of range, or ``min_clients``
            exceeds the expected number of clients per round.
    """
    z = check_positive(noise_multiplier, "noise_multiplier")
    clip = check_positive(clip, "clip")
    expected = check_positive(expected_clients, "expected_clients")
    minimum = _whole(min_clients, "min_clients")
    if minimum > expected:
        raise InvalidInputError(
            "min_clients exceeds the clients expected per round",
            expected=f"min_clients <= expected clients = {expected:g}",
            got=repr(min_clients),
            fix="lower min_clients or sample more clients per round (most rounds would be dropped)",
        )
    return z * clip / math.sqrt(minimum)

"""DP-FedAvg's server side: the noised fixed-denominator average and the adaptive clip.

The mechanism and its accounting are described in :mod:`veil.federated._user_dp`
(McMahan et al. 2018; adaptive clipping by Andrew et al. 2021). This module
runs a plan: it noises the sum of the clipped updates, divides by the
*expected* number of clients and, when adaptive, moves the clip by the noised
fraction of unclipped updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from veil.errors import InvalidInputError
from veil.federated._noise import GaussianNoise, check_noise, clip_update, finite_array, flag, whole
from veil.federated._user_dp import (
    DEFAULT_CLIP_LEARNING_RATE,
    DEFAULT_TARGET_QUANTILE,
    UserDPPlan,
    adaptive_update_noise,
    count_noise,
)
from veil.ledger.params import check_positive, check_probability

__all__ = ["DPFedAvgAggregator"]


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
        self.adaptive = flag(adaptive, "adaptive")
        self.target_quantile = check_probability(target_quantile, "target_quantile")
        self.clip_learning_rate = check_positive(clip_learning_rate, "clip_learning_rate")
        check_noise(noise)
        self.count_noise_multiplier: float | None = None
        self.update_noise_multiplier = self.noise_multiplier
        self._count_std = 0.0
        if self.adaptive:
            self._count_std = count_noise(count_noise_multiplier, self.expected_clients)
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
        total = finite_array(clipped_sum, "clipped_sum")
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
        survivors = whole(participants, "participants", minimum=0)
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
        first = finite_array(updates[0], "update")
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

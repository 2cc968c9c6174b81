"""Local and distributed DP for federated averaging: noise added on the client.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from dp_accounting import dp_event

from veil.errors import InvalidInputError
from veil.federated._noise import GaussianNoise, check_noise, clip_update, whole
from veil.ledger import (
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
)
from veil.ledger.params import check_delta, check_positive

__all__ = ["LocalGaussianDP", "distributed_noise_std", "local_dp_epsilon"]


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
    rounds = whole(rounds, "rounds")
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
        check_noise(noise)
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
        return whole(self.rounds if rounds is None else rounds, "rounds")

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
    minimum = whole(min_clients, "min_clients")
    if minimum > expected:
        raise InvalidInputError(
            "min_clients exceeds the clients expected per round",
            expected=f"min_clients <= expected clients = {expected:g}",
            got=repr(min_clients),
            fix="lower min_clients or sample more clients per round (most rounds would be dropped)",
        )
    return z * clip / math.sqrt(minimum)

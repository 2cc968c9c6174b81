"""The noise and the clip of federated DP: one secure Gaussian source, one L2 clip.

Noise comes only from :class:`GaussianNoise`, a wrapper of
:class:`veil._random.SecureRandom` (AES-256-CTR under a key from ``os.urandom``;
NumPy out, no torch).

The update checks every DP module here shares (a whole number, a flag, a
finite real array) sit with the clip, which is their first user.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from veil._random import SecureRandom
from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.federated._aggregate import check_whole
from veil.ledger.params import check_positive

__all__ = ["GaussianNoise", "check_noise", "clip_update", "finite_array", "flag", "whole"]


# ----------------------------------------------------------------------------- validation


def whole(value: object, name: str, *, minimum: int = 1) -> int:
    return check_whole(value, name, minimum=minimum)


def flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False", expected="a bool", got=repr(value))
    return value


def finite_array(value: object, name: str) -> np.ndarray:
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
            whole(dim, "shape dimension", minimum=0)
        count = math.prod(int(d) for d in dims)
        values = self.random.normal(count, std).astype(np.float64)
        return values.reshape(tuple(int(d) for d in dims))


def check_noise(noise: object) -> None:
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
    array = finite_array(update, "update")
    norm = float(np.linalg.norm(array))
    if norm <= clip:
        return array, False
    factor = clip / norm
    clipped = array * factor
    while float(np.linalg.norm(clipped)) > clip:
        factor = float(np.nextafter(factor, 0.0))
        clipped = array * factor
    return clipped, True

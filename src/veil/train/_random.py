"""Randomness for DP-SGD: Gaussian noise and Poisson sampling as torch tensors, from Veil's CSPRNG.

The generator is :class:`veil._random.SecureRandom` (AES-256-CTR under a key
from ``os.urandom``; its docstring says why not ``torch.randn`` and how the
normals reach 8.5 standard deviations). This class is its torch face: the same
stream, the same seed semantics, each array handed over as a tensor without a
copy. Poisson sampling draws from the same stream as the noise: amplification
by subsampling assumes the adversary cannot predict which records were drawn.

A ``seed`` makes the run reproducible and **not private** (tests and demos
only; the privacy card says ``"secure_rng": false``).
"""

from __future__ import annotations

import warnings

import torch

from veil._random import SecureRandom as _Stream
from veil.errors import PrivacyLeakWarning

__all__ = ["SecureRandom"]


class SecureRandom:
    """A stream of random tensors from AES-256-CTR (:class:`veil._random.SecureRandom`).

    Args:
        seed: ``None`` (default) keys the stream from the operating system's
            CSPRNG. An integer derives the key from it: reproducible, not
            private, and a :class:`~veil.errors.PrivacyLeakWarning` says so.
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            self.stream = _Stream()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrivacyLeakWarning)
                self.stream = _Stream(seed)  # validates the seed
            warnings.warn(
                "a seeded DP-SGD run is reproducible but not private: its noise and "
                "sampling are a function of the seed (use it for tests and demos only)",
                PrivacyLeakWarning,
                stacklevel=2,
            )
        self.secure = self.stream.secure

    def uniform(self, count: int) -> torch.Tensor:
        """``count`` uniforms on (0, 1) with 53 random bits each (float64)."""
        return torch.from_numpy(self.stream.uniform(count))

    def bernoulli(self, count: int, probability: float) -> torch.Tensor:
        """``count`` independent coins that are ``True`` with ``probability`` (32-bit resolution)."""
        return torch.from_numpy(self.stream.bernoulli(count, probability))

    def normal(self, count: int, std: float = 1.0) -> torch.Tensor:
        """``count`` independent N(0, std^2) values (float32)."""
        return torch.from_numpy(self.stream.normal(count, std))

    def permutation(self, n: int) -> torch.Tensor:
        """A uniformly random permutation of ``range(n)`` (for non-private baselines only)."""
        return torch.from_numpy(self.stream.permutation(n))

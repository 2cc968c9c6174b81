"""Randomness for DP-SGD: Gaussian noise and Poisson sampling from a CSPRNG.

Why not ``torch.randn``: PyTorch's CPU generator is a Mersenne Twister, whose
state an observer can recover, and Opacus's ``secure_mode`` needs
``torchcsprng``, which no longer builds for current PyTorch. OpenDP's exact
samplers (used by :mod:`veil.dp`) draw one value at a time, about 90 us each:
DP-SGD needs ~10^5 values per step. So this module draws its bits from
AES-256 in counter mode (``cryptography``, AES-NI: ~2 GB/s here) under a key
from ``os.urandom``, and turns them into normals by the Box-Muller transform:

* the radius ``sqrt(-2 ln u)`` uses a 53-bit uniform in float64, so the noise
  reaches 8.5 standard deviations (a 24-bit uniform would stop at 5.9, and a
  truncated Gaussian leaks on the outputs only one neighbour can produce);
* the angle uses a 24-bit uniform in float32 (precision, not the tail, matters
  there), and each pair of uniforms gives two normals.

Poisson sampling draws one 32-bit uniform per record per step from the same
stream: amplification by subsampling assumes the adversary cannot predict
which records were drawn.

A ``seed`` turns the key into a function of the seed: the run is then
reproducible and **not private** (tests and demos only; the privacy card says
``"secure_rng": false``).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings

import torch

from veil.errors import InvalidInputError, PrivacyLeakWarning, require

__all__ = ["SecureRandom"]

_U53 = 2.0**-53
_MASK53 = (1 << 53) - 1
_U24 = 2.0**-24


class SecureRandom:
    """A stream of random tensors from AES-256-CTR.

    Args:
        seed: ``None`` (default) keys the stream from the operating system's
            CSPRNG. An integer derives the key from it: reproducible, not
            private, and a :class:`~veil.errors.PrivacyLeakWarning` says so.
    """

    def __init__(self, seed: int | None = None) -> None:
        ciphers = require(
            "cryptography.hazmat.primitives.ciphers", extra="train", purpose="DP-SGD noise"
        )
        if seed is None:
            key, nonce = os.urandom(32), os.urandom(16)
        else:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise InvalidInputError(
                    "seed must be an integer or None",
                    expected="None (private) or an int (reproducible, not private)",
                    got=repr(seed),
                )
            warnings.warn(
                "a seeded DP-SGD run is reproducible but not private: its noise and "
                "sampling are a function of the seed (use it for tests and demos only)",
                PrivacyLeakWarning,
                stacklevel=2,
            )
            digest = hashlib.sha512(f"veil-dpsgd-seed:{seed}".encode()).digest()
            key, nonce = digest[:32], digest[32:48]
        self.secure = seed is None
        self._zeros = bytearray()
        self._encryptor = ciphers.Cipher(
            ciphers.algorithms.AES(key), ciphers.modes.CTR(nonce)
        ).encryptor()

    def _bits(self, count: int, dtype: torch.dtype) -> torch.Tensor:
        """``count`` random integers of ``dtype`` (fresh memory, read straight from the cipher)."""
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        if len(self._zeros) < nbytes:
            self._zeros = bytearray(nbytes)
        out = bytearray(nbytes + 16)  # update_into wants room for a block
        self._encryptor.update_into(memoryview(self._zeros)[:nbytes], out)
        return torch.frombuffer(out, dtype=dtype, count=count)

    def uniform(self, count: int) -> torch.Tensor:
        """``count`` uniforms on (0, 1) with 53 random bits each (float64)."""
        bits = self._bits(count, torch.int64) & _MASK53
        return bits.to(torch.float64).add_(0.5).mul_(_U53)

    def bernoulli(self, count: int, probability: float) -> torch.Tensor:
        """``count`` independent coins that are ``True`` with ``probability`` (32-bit resolution)."""
        if not 0.0 <= probability <= 1.0:
            raise InvalidInputError(
                "probability out of range", expected="0 <= p <= 1", got=repr(probability)
            )
        threshold = math.floor(probability * 2**32)  # never above the recorded rate
        if threshold >= 2**32:
            return torch.ones(count, dtype=torch.bool)
        # A signed 32-bit value v stands for the unsigned v + 2^31: compare on the signed side.
        return self._bits(count, torch.int32) < threshold - 2**31

    def normal(self, count: int, std: float = 1.0) -> torch.Tensor:
        """``count`` independent N(0, std^2) values (float32)."""
        if count <= 0:
            return torch.zeros(0)
        half = (count + 1) // 2
        raw = self._bits(2 * half, torch.int64)
        # Radius from a 53-bit uniform (the tail reaches sqrt(2 * 53 ln 2) = 8.57 sd); float32
        # keeps its magnitude exactly, so small uniforms (large radii) are not rounded to 0.
        radius = ((raw[:half] >> 11) & _MASK53).to(torch.float32).add_(0.5).mul_(_U53)
        radius = radius.log_().mul_(-2.0).sqrt_()
        if std != 1.0:
            radius.mul_(std)
        angle = ((raw[half:] >> 40) & 0xFFFFFF).to(torch.float32).add_(0.5).mul_(_U24 * 2 * math.pi)
        out = torch.empty(2 * half)
        torch.mul(radius, torch.cos(angle), out=out[:half])
        torch.mul(radius, angle.sin_(), out=out[half:])
        return out[:count]

    def permutation(self, n: int) -> torch.Tensor:
        """A uniformly random permutation of ``range(n)`` (for non-private baselines only)."""
        return torch.argsort(self.uniform(n))

"""One CSPRNG for every noise Veil draws by the array: AES-256-CTR, NumPy out, no torch.

Why by hand: NumPy's and PyTorch's generators (PCG64, Mersenne Twister) are
not cryptographic, so an observer can recover their state and predict the
noise; Opacus's ``secure_mode`` needs ``torchcsprng``, which no longer builds
for current PyTorch. OpenDP's exact samplers (used by :mod:`veil.dp`) draw one
value at a time, about 90 us each: DP-SGD needs ~10^5 values per step and a
federated round one per model weight. So this module draws its bits from
AES-256 in counter mode (``cryptography``, AES-NI: ~2 GB/s) under a key from
``os.urandom``, and turns them into normals by the Box-Muller transform:

* the radius ``sqrt(-2 ln u)`` uses a 53-bit uniform, so the noise reaches
  8.5 standard deviations (a 24-bit uniform would stop at 5.9, and a truncated
  Gaussian leaks on the outputs only one neighbour can produce);
* the angle uses a 24-bit uniform in float32 (precision, not the tail, matters
  there), and each pair of uniforms gives two normals.

Poisson sampling (DP-SGD's records, federated averaging's clients) draws one
32-bit uniform per candidate from the same stream: amplification by
subsampling assumes the adversary cannot predict who was drawn.

A ``seed`` turns the key into a function of the seed: the stream is then
reproducible and **not private** (tests and demos only), and a
:class:`~veil.errors.PrivacyLeakWarning` says so.

>>> rng = SecureRandom()
>>> rng.normal(4).shape, rng.normal(4).dtype.name, rng.secure
((4,), 'float32', True)
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veil._validate import whole_number
from veil.errors import InvalidInputError, PrivacyLeakWarning

__all__ = ["SecureRandom"]

_U53 = 2.0**-53
_MASK53 = (1 << 53) - 1
_U24 = 2.0**-24
# The seed's key derivation: unchanged since DP-SGD introduced it, so a seeded stream repeats
# across versions (the label names its first user, not a restriction).
_SEED_LABEL = "veil-dpsgd-seed"


def _count(value: object, name: str = "count") -> int:
    return whole_number(value, name, minimum=0, expected="an int >= 0", numpy=True)


class SecureRandom:
    """A stream of random NumPy arrays from AES-256-CTR.

    Args:
        seed: ``None`` (default) keys the stream from the operating system's
            CSPRNG. An integer derives the key from it: reproducible, not
            private, and a :class:`~veil.errors.PrivacyLeakWarning` says so.

    Attributes:
        secure: ``True`` when the stream is keyed from ``os.urandom``.
    """

    def __init__(self, seed: int | None = None) -> None:
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
                "seeded randomness is reproducible but not private: the noise and sampling "
                "are a function of the seed (use it for tests and demos only)",
                PrivacyLeakWarning,
                stacklevel=2,
            )
            digest = hashlib.sha512(f"{_SEED_LABEL}:{seed}".encode()).digest()
            key, nonce = digest[:32], digest[32:48]
        self.secure = seed is None
        self._zeros = bytearray()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def bits(self, count: int, dtype: npt.DTypeLike = np.uint64) -> npt.NDArray[Any]:
        """``count`` random integers of the integer ``dtype`` (fresh memory, straight from the cipher)."""
        count = _count(count)
        kind = np.dtype(dtype)
        if kind.kind not in "iu":
            raise InvalidInputError(
                "raw bits come as integers", expected="an integer dtype", got=str(kind)
            )
        nbytes = count * kind.itemsize
        if len(self._zeros) < nbytes:
            self._zeros = bytearray(nbytes)
        out = bytearray(nbytes + 16)  # update_into wants room for a block
        self._encryptor.update_into(memoryview(self._zeros)[:nbytes], out)
        return np.frombuffer(out, dtype=kind, count=count)

    def uniform(self, count: int) -> npt.NDArray[np.float64]:
        """``count`` uniforms on (0, 1) with 53 random bits each (float64)."""
        bits = self.bits(count, np.int64) & _MASK53
        values = bits.astype(np.float64)
        values += 0.5
        values *= _U53
        return values

    def bernoulli(self, count: int, probability: float) -> npt.NDArray[np.bool_]:
        """``count`` independent coins that are ``True`` with ``probability`` (32-bit resolution)."""
        if isinstance(probability, bool) or not (
            isinstance(probability, (int, float, np.integer, np.floating))
            and 0.0 <= probability <= 1.0
        ):
            raise InvalidInputError(
                "probability out of range", expected="0 <= p <= 1", got=repr(probability)
            )
        threshold = math.floor(probability * 2**32)  # never above the recorded rate
        if threshold >= 2**32:
            return np.ones(_count(count), dtype=np.bool_)
        # A signed 32-bit value v stands for the unsigned v + 2^31: compare on the signed side.
        coins: npt.NDArray[np.bool_] = self.bits(count, np.int32) < threshold - 2**31
        return coins

    def normal(self, count: int, std: float = 1.0) -> npt.NDArray[np.float32]:
        """``count`` independent N(0, std^2) values (float32)."""
        count = _count(count)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        half = (count + 1) // 2
        raw = self.bits(2 * half, np.int64)
        # Radius from a 53-bit uniform (the tail reaches sqrt(2 * 53 ln 2) = 8.57 sd); float32
        # keeps its magnitude exactly, so small uniforms (large radii) are not rounded to 0.
        radius = ((raw[:half] >> 11) & _MASK53).astype(np.float32)
        radius += np.float32(0.5)
        radius *= np.float32(_U53)
        np.log(radius, out=radius)
        radius *= np.float32(-2.0)
        np.sqrt(radius, out=radius)
        if std != 1.0:
            radius *= np.float32(std)
        angle = ((raw[half:] >> 40) & 0xFFFFFF).astype(np.float32)
        angle += np.float32(0.5)
        angle *= np.float32(_U24 * 2 * math.pi)
        out = np.empty(2 * half, dtype=np.float32)
        np.multiply(radius, np.cos(angle), out=out[:half])
        np.multiply(radius, np.sin(angle, out=angle), out=out[half:])
        return out[:count]

    def permutation(self, n: int) -> npt.NDArray[np.int64]:
        """A uniformly random permutation of ``range(n)`` (for non-private baselines only)."""
        order: npt.NDArray[np.int64] = np.argsort(self.uniform(n), kind="stable")
        return order

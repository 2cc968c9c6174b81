"""Secret-sharing primitives: fixed-point encoding, additive sharing over Z_2^64, Shamir over GF(p).

Everything here is local arithmetic on NumPy arrays; the network protocols that
use it live in :mod:`veil.mpc._party` and :mod:`veil.mpc._mpc`.

* **Fixed point** (:class:`FixedPoint`): a real ``x`` is the signed integer
  ``round(x * 2**frac_bits)``; in the ring Z_2^64 it is stored in two's
  complement (``int64`` viewed as ``uint64``), in the field as ``v mod p``.
  Values whose encoding (or whose sum over the parties) would leave the signed
  range are refused up front with :class:`~veil.errors.InvalidInputError`;
  nothing silently wraps.
* **Additive sharing** (n-of-n) over Z_2^64: ``n - 1`` uniformly random
  ``uint64`` vectors and one that makes the sum (mod 2^64, NumPy wraps for free)
  equal to the secret. Any ``n - 1`` shares are uniform and independent of it.
* **Shamir sharing** (t-of-n) over GF(p), ``p = 2**61 - 1`` (a Mersenne prime,
  so reduction is a shift and an add): a random polynomial of degree ``t - 1``
  with the secret as constant term, evaluated at ``1..n``; any ``t`` shares give
  the secret back by Lagrange interpolation at 0, any ``t - 1`` are uniform.
  :func:`mulmod` multiplies two vectors of field elements without overflow by
  splitting them into 32-bit limbs.
* **Beaver triples** (:func:`beaver_triples`): ``a, b`` uniform and
  ``c = a * b``, shared by a dealer; :func:`beaver_open_masks` and
  :func:`beaver_finish` are each party's local steps of one multiplication.

Randomness comes from ``os.urandom`` (the kernel's CSPRNG). ``seed=`` exists for
reproducible tests and demos only: seeded shares come from NumPy's PCG64 and
are **not private**.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError

__all__ = [
    "PRIME",
    "Domain",
    "FixedPoint",
    "additive_reconstruct",
    "additive_share",
    "beaver_finish",
    "beaver_open_masks",
    "beaver_triples",
    "field_add",
    "field_neg",
    "field_sub",
    "field_sum",
    "lagrange_at_zero",
    "mulmod",
    "product_limit",
    "random_field",
    "random_ring",
    "shamir_reconstruct",
    "shamir_share",
]

U64 = npt.NDArray[np.uint64]
Domain = Literal["ring", "field"]

PRIME = (1 << 61) - 1
"""The Mersenne prime 2^61 - 1: the field of Shamir sharing."""
_P = np.uint64(PRIME)
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK29 = np.uint64((1 << 29) - 1)
RING_MAX = (1 << 63) - 1
FIELD_MAX = (PRIME - 1) // 2


def _signed_max(domain: Domain) -> int:
    return RING_MAX if domain == "ring" else FIELD_MAX


# ---------------------------------------------------------------- randomness


def _random_words(count: int, seed: int | np.random.Generator | None) -> U64:
    if seed is None:
        return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).copy()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(np.uint64).max, size=count, dtype=np.uint64, endpoint=True)


def random_ring(
    shape: int | tuple[int, ...], *, seed: int | np.random.Generator | None = None
) -> U64:
    """Uniform elements of Z_2^64 (from ``os.urandom`` unless a test passes ``seed``)."""
    size = (shape,) if isinstance(shape, int) else shape
    return _random_words(math.prod(size), seed).reshape(size)


def random_field(
    shape: int | tuple[int, ...], *, seed: int | np.random.Generator | None = None
) -> U64:
    """Uniform elements of GF(2^61 - 1): 61 random bits, redrawn where they equal p."""
    size = (shape,) if isinstance(shape, int) else shape
    words = _random_words(math.prod(size), seed) >> np.uint64(3)
    bad = words == _P
    while bad.any():  # probability 2^-61 per element
        words[bad] = _random_words(int(bad.sum()), seed) >> np.uint64(3)
        bad = words == _P
    return words.reshape(size)


# ---------------------------------------------------------------- field arithmetic


def _fold(value: U64) -> U64:
    """Reduce values below 2^64 - 1 modulo p = 2^61 - 1 (2^61 = 1 mod p)."""
    folded = (value & _P) + (value >> np.uint64(61))
    return np.where(folded >= _P, folded - _P, folded)


def field_add(a: U64, b: U64) -> U64:
    """``(a + b) mod p`` for reduced inputs."""
    total = a + b
    return np.where(total >= _P, total - _P, total)


def field_neg(a: U64) -> U64:
    """``-a mod p`` for reduced inputs."""
    return np.where(a == 0, a, _P - a)


def field_sub(a: U64, b: U64) -> U64:
    """``(a - b) mod p`` for reduced inputs."""
    return field_add(a, field_neg(b))


def field_sum(values: U64, axis: int | None = None) -> U64:
    """Sum of reduced field elements along ``axis``, mod p, without overflow.

    Each element is split into 32-bit halves; a sum of up to 2^32 halves fits
    in 64 bits, and the halves are recombined with :func:`mulmod`.
    """
    keep = axis is None
    low = np.asarray(np.sum(values & _MASK32, axis=axis, dtype=np.uint64, keepdims=keep))
    high = np.asarray(np.sum(values >> np.uint64(32), axis=axis, dtype=np.uint64, keepdims=keep))
    shifted = mulmod(_fold(high), np.full_like(high, 1 << 32))
    total = field_add(shifted, _fold(low))
    return total.reshape(()) if axis is None else total


def mulmod(a: U64, b: U64) -> U64:
    """``(a * b) mod (2^61 - 1)`` element-wise for reduced inputs, vectorised.

    With ``a = a1 2^32 + a0`` and ``b = b1 2^32 + b0`` (``a1, b1 < 2^29``), the
    product is ``a1 b1 2^64 + (a1 b0 + a0 b1) 2^32 + a0 b0``; every partial
    product fits in 64 bits, ``2^64 = 8`` and ``2^61 = 1`` modulo p, and the
    folded terms add up to less than 2^63.
    """
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    a1, a0 = a >> np.uint64(32), a & _MASK32
    b1, b0 = b >> np.uint64(32), b & _MASK32
    high = a1 * b1  # < 2^58; times 2^64 = 8 mod p
    middle = a1 * b0 + a0 * b1  # < 2^62; times 2^32
    low = a0 * b0  # < 2^64
    total = (
        (high << np.uint64(3))
        + (middle >> np.uint64(29))
        + ((middle & _MASK29) << np.uint64(32))
        + (low & _P)
        + (low >> np.uint64(61))
    )
    return _fold(total)


# ---------------------------------------------------------------- fixed point


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of reals as signed integers scaled by ``2**frac_bits``.

    Attributes:
        frac_bits: Fractional bits ``f``; the resolution is ``2**-f`` and each
            value is rounded to the nearest multiple of it (error at most
            ``2**-(f + 1)`` per value). ``0`` encodes integers exactly.
        domain: ``"ring"`` (Z_2^64, signed range ``±(2^63 - 1)``) or
            ``"field"`` (GF(2^61 - 1), signed range ``±(p - 1) / 2``).
    """

    frac_bits: int = 16
    domain: Domain = "ring"

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 30:  # noqa: PLR2004 - 30 leaves 2^30 of integer range in the field
            raise InvalidInputError(
                "frac_bits out of range",
                expected="an integer between 0 and 30 (16 is a good default)",
                got=str(self.frac_bits),
                fix="pass frac_bits=16, or 0 for integers",
            )
        if self.domain not in ("ring", "field"):
            raise InvalidInputError(
                "unknown fixed-point domain",
                expected="'ring' or 'field'",
                got=repr(self.domain),
                fix="use domain='ring' (additive) or 'field' (Shamir)",
            )

    @property
    def scale(self) -> int:
        """``2**frac_bits``."""
        return 1 << self.frac_bits

    @property
    def resolution(self) -> float:
        """The smallest representable step, ``2**-frac_bits``."""
        return 1.0 / self.scale

    def max_encoded(self, *, terms: int = 1) -> int:
        """The largest ``|encoding|`` a value may have so that ``terms`` of them add up safely."""
        return _signed_max(self.domain) // max(1, terms)

    def max_value(self, *, terms: int = 1) -> float:
        """The largest ``|x|`` accepted when ``terms`` such values are summed."""
        return self.max_encoded(terms=terms) / self.scale

    def to_integers(
        self, values: Any, *, terms: int = 1, what: str = "values"
    ) -> npt.NDArray[np.int64]:
        """Round ``values`` to signed fixed-point integers, refusing NaN, inf and overflow.

        Args:
            values: Real numbers (any array-like).
            terms: How many such values will be added up; each must stay under
                ``max_encoded(terms=terms)`` so that no sum can overflow.
            what: How the values are named in an error message.
        """
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            bad = array[~np.isfinite(array)]
            raise InvalidInputError(
                f"{what} contain NaN or infinite numbers",
                expected="finite real numbers",
                got=f"{bad.size} non-finite value(s), first {float(bad.flat[0])!r}",
                fix="drop or impute the missing values before the secure computation",
            )
        limit = self.max_encoded(terms=terms)
        scaled = np.rint(array * self.scale)
        worst = float(np.max(np.abs(scaled))) if scaled.size else 0.0
        if worst > limit:
            raise InvalidInputError(
                f"{what} are out of the fixed-point range",
                expected=(
                    f"|x| <= {limit / self.scale:.6g} ({self.frac_bits} fractional bits in the "
                    f"{self.domain}, {terms} term(s) summed)"
                ),
                got=f"|x| up to {worst / self.scale:.6g}",
                fix="rescale the values (for example to thousands) or use fewer fractional bits",
            )
        return scaled.astype(np.int64)

    def encode(self, values: Any, *, terms: int = 1, what: str = "values") -> U64:
        """Encode reals as ring or field elements (see :meth:`to_integers`)."""
        return self.lift(self.to_integers(values, terms=terms, what=what))

    def lift(self, integers: npt.NDArray[np.int64]) -> U64:
        """Map signed integers (already range-checked) into the ring or the field."""
        if self.domain == "ring":
            return integers.astype(np.int64).view(np.uint64)
        shifted = np.where(integers < 0, integers + np.int64(PRIME), integers)
        return shifted.astype(np.uint64)

    def signed(self, elements: U64) -> npt.NDArray[np.int64]:
        """Ring or field elements back to signed integers (two's complement / centred)."""
        elements = np.asarray(elements, dtype=np.uint64)
        if self.domain == "ring":
            return elements.view(np.int64)
        big = elements > np.uint64(FIELD_MAX)
        return np.where(big, elements.astype(np.int64) - np.int64(PRIME), elements.astype(np.int64))

    def decode(self, elements: U64, *, frac_bits: int | None = None) -> npt.NDArray[np.float64]:
        """Ring or field elements back to reals (``frac_bits`` overrides, e.g. ``2f`` after a product)."""
        bits = self.frac_bits if frac_bits is None else frac_bits
        return self.signed(elements).astype(np.float64) / float(1 << bits)


def product_limit(domain: Domain, parties: int, terms: int) -> int:
    """The largest ``|encoding|`` of a party's factor in a product or a dot product.

    Each secret factor is the sum of the parties' contributions (``|X| <= n
    max |x_i|``), the opened result carries ``2 f`` fractional bits and sums
    ``terms`` products: ``terms (n L)^2`` must stay in the signed range.
    """
    return math.isqrt(_signed_max(domain) // max(1, terms)) // parties


# ---------------------------------------------------------------- additive sharing


def additive_share(
    secret: U64, parties: int, *, seed: int | np.random.Generator | None = None
) -> U64:
    """Split ring elements into ``parties`` additive shares (shape ``(parties, *secret.shape)``).

    ``seed`` is for tests only: seeded shares are not private.
    """
    _check_parties(parties)
    secret = np.asarray(secret, dtype=np.uint64)
    shares = random_ring((parties, *secret.shape), seed=seed)
    shares[-1] = secret - shares[:-1].sum(axis=0, dtype=np.uint64)
    return shares


def additive_reconstruct(shares: U64 | Sequence[U64]) -> U64:
    """The secret: the sum of all shares modulo 2^64."""
    return np.asarray(np.asarray(shares, dtype=np.uint64).sum(axis=0, dtype=np.uint64))


# ---------------------------------------------------------------- Shamir sharing


def _check_parties(parties: int) -> None:
    if parties < 2:  # noqa: PLR2004 - a secret needs at least two holders
        raise InvalidInputError(
            "secret sharing needs at least 2 parties",
            expected="parties >= 2",
            got=str(parties),
            fix="run the computation with 2 or more parties",
        )


def check_threshold(threshold: int, parties: int) -> None:
    """Refuse a Shamir threshold outside ``2 <= t <= n``."""
    _check_parties(parties)
    if not 2 <= threshold <= parties:  # noqa: PLR2004 - t = 1 would hand out the secret itself
        raise InvalidInputError(
            "Shamir threshold out of range",
            expected=f"2 <= threshold <= parties ({parties})",
            got=f"threshold {threshold}",
            fix=f"pass a threshold between 2 and {parties}, for example {parties // 2 + 1}",
        )


def shamir_share(
    secret: U64,
    parties: int,
    threshold: int,
    *,
    seed: int | np.random.Generator | None = None,
) -> U64:
    """Shamir shares of field elements, shape ``(parties, *secret.shape)``; share ``i`` is f(i + 1).

    ``seed`` is for tests only: seeded shares are not private.
    """
    check_threshold(threshold, parties)
    secret = np.asarray(secret, dtype=np.uint64)
    if (secret >= _P).any():
        raise InvalidInputError(
            "Shamir secrets must be reduced field elements",
            expected=f"integers in [0, {PRIME})",
            got=f"a value of {int(secret.max())}",
            fix="encode reals with FixedPoint(domain='field').encode first",
        )
    rng = np.random.default_rng(seed) if isinstance(seed, int) else seed
    coefficients = random_field((threshold - 1, *secret.shape), seed=rng)
    shares = np.empty((parties, *secret.shape), dtype=np.uint64)
    for i in range(parties):
        point = np.full(secret.shape, i + 1, dtype=np.uint64)
        value = np.zeros(secret.shape, dtype=np.uint64)
        for coefficient in coefficients[::-1]:  # Horner, highest degree first
            value = mulmod(field_add(value, coefficient), point)
        shares[i] = field_add(value, secret)
    return shares


def lagrange_at_zero(points: Sequence[int]) -> list[int]:
    """Lagrange coefficients that interpolate at 0 from the shares at ``points`` (1-based)."""
    if len(set(points)) != len(points) or any(not 0 < p < PRIME for p in points):
        raise InvalidInputError(
            "Shamir points must be distinct and non-zero",
            expected="distinct party points 1..n",
            got=str(list(points)),
            fix="pass each share once, with its party's point",
        )
    coefficients = []
    for j, xj in enumerate(points):
        numerator, denominator = 1, 1
        for m, xm in enumerate(points):
            if m != j:
                numerator = numerator * xm % PRIME
                denominator = denominator * (xm - xj) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return coefficients


def shamir_reconstruct(shares: U64 | Sequence[U64], points: Sequence[int]) -> U64:
    """The secret from shares at ``points`` (party ``i`` has point ``i + 1``).

    Pass at least the threshold's number of shares: with fewer, the result is a
    uniformly random field element, not the secret.
    """
    stacked = np.asarray(shares, dtype=np.uint64)
    if len(stacked) != len(points):
        raise InvalidInputError(
            "one point per share is needed",
            expected=f"{len(stacked)} points",
            got=f"{len(points)}",
            fix="pass the 1-based point of every share",
        )
    total = np.zeros(stacked.shape[1:], dtype=np.uint64)
    for share, coefficient in zip(stacked, lagrange_at_zero(points), strict=True):
        total = field_add(total, mulmod(share, np.full_like(share, coefficient)))
    return total


# ---------------------------------------------------------------- Beaver triples


def beaver_triples(
    shape: int | tuple[int, ...],
    parties: int,
    *,
    domain: Domain,
    threshold: int | None = None,
    seed: int | np.random.Generator | None = None,
) -> tuple[U64, U64, U64]:
    """The dealer's job: shares of uniform ``a``, ``b`` and of ``c = a * b``.

    Returns three arrays of shape ``(parties, *shape)``: party ``i`` gets
    ``(a[i], b[i], c[i])``. Additive shares in the ring, Shamir shares (degree
    ``threshold - 1``) in the field. The dealer knows ``a, b, c`` and must not
    collude with any party (see docs/mpc.md).
    """
    size = (shape,) if isinstance(shape, int) else shape
    rng = np.random.default_rng(seed) if isinstance(seed, int) else seed
    if domain == "ring":
        a, b = random_ring(size, seed=rng), random_ring(size, seed=rng)
        c = a * b
        return (
            additive_share(a, parties, seed=rng),
            additive_share(b, parties, seed=rng),
            additive_share(c, parties, seed=rng),
        )
    t = parties if threshold is None else threshold
    a, b = random_field(size, seed=rng), random_field(size, seed=rng)
    c = mulmod(a, b)
    return (
        shamir_share(a, parties, t, seed=rng),
        shamir_share(b, parties, t, seed=rng),
        shamir_share(c, parties, t, seed=rng),
    )


def beaver_open_masks(x: U64, y: U64, a: U64, b: U64, *, domain: Domain) -> tuple[U64, U64]:
    """A party's shares of ``d = x - a`` and ``e = y - b``, which all parties then open."""
    if domain == "ring":
        return x - a, y - b
    return field_sub(x, a), field_sub(y, b)


def beaver_finish(
    d: U64, e: U64, a: U64, b: U64, c: U64, *, domain: Domain, add_constant: bool
) -> U64:
    """A party's share of ``x * y = c + d b + e a + d e`` from the opened ``d`` and ``e``.

    ``add_constant``: whether this party adds the public term ``d e`` (exactly
    one party with additive shares; every party with Shamir shares).
    """
    if domain == "ring":
        share: U64 = np.asarray(c + d * b + e * a, dtype=np.uint64)
        return np.asarray(share + d * e, dtype=np.uint64) if add_constant else share
    share = field_add(field_add(c, mulmod(d, b)), mulmod(e, a))
    return field_add(share, mulmod(d, e)) if add_constant else share

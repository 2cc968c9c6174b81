"""Noise from OpenDP's samplers: the only source of randomness in a private path.

OpenDP samples Laplace and Gaussian noise exactly (on integers, and on floats
by sampling on a fine grid and rounding), from the operating system's CSPRNG.
That defends against the floating-point attacks on textbook samplers (Mironov
2012). NumPy's generators are never used for privacy noise.

The measurements are cached per (scale, type): building one costs a few
hundred microseconds, sampling a value about 10 us (integers) to 90 us
(Gaussian floats).

OpenDP's own modules are imported, not ``opendp.prelude``: the prelude loads
OpenDP's extras too (scikit-learn, Polars, mbi and others), about 1.5 CPU-s in
every process that draws noise (each gateway worker, each ``veil query``),
against 0.17 s for these.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from opendp import domains, measurements, measures, metrics, mod

from veil.errors import InvalidInputError

__all__ = [
    "bitvector_response",
    "categorical_response",
    "gaussian_noise",
    "gumbel_max",
    "laplace_noise",
    "noisy_max",
]

mod.enable_features("contrib")


def _array(values: Any, integer: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64 if integer else np.float64)
    if not integer and not np.all(np.isfinite(arr)):
        raise InvalidInputError(
            "noise can only be added to finite values",
            expected="finite numbers",
            got="NaN or infinity",
            fix="clamp to declared bounds and impute missing values first",
        )
    return arr


@functools.lru_cache(maxsize=256)
def _laplace(scale: float, integer: bool) -> mod.Measurement:
    kind = int if integer else float
    atom = domains.atom_domain(T=kind) if integer else domains.atom_domain(T=kind, nan=False)
    return measurements.make_laplace(
        domains.vector_domain(atom), metrics.l1_distance(T=kind), scale
    )


@functools.lru_cache(maxsize=256)
def _gaussian(sigma: float, integer: bool) -> mod.Measurement:
    kind = int if integer else float
    atom = domains.atom_domain(T=kind) if integer else domains.atom_domain(T=kind, nan=False)
    return measurements.make_gaussian(
        domains.vector_domain(atom), metrics.l2_distance(T=kind), sigma
    )


def laplace_noise(values: Any, scale: float, *, integer: bool = False) -> np.ndarray:
    """``values`` plus independent Laplace noise of ``scale`` (discrete Laplace on integers)."""
    arr = _array(values, integer)
    if arr.size == 0:
        return arr.copy()
    noisy = _laplace(float(scale), integer)(arr.ravel().tolist())
    return np.asarray(noisy, dtype=arr.dtype).reshape(arr.shape)


def gaussian_noise(values: Any, sigma: float, *, integer: bool = False) -> np.ndarray:
    """``values`` plus independent N(0, sigma^2) noise (discrete Gaussian on integers)."""
    arr = _array(values, integer)
    if arr.size == 0:
        return arr.copy()
    noisy = _gaussian(float(sigma), integer)(arr.ravel().tolist())
    return np.asarray(noisy, dtype=arr.dtype).reshape(arr.shape)


@functools.lru_cache(maxsize=64)
def _noisy_max(scale: float, monotonic: bool) -> mod.Measurement:
    return measurements.make_noisy_max(
        domains.vector_domain(domains.atom_domain(T=float, nan=False)),
        metrics.linf_distance(T=float, monotonic=monotonic),
        measures.max_divergence(),
        scale,
    )


def noisy_max(
    scores: Sequence[float] | np.ndarray, scale: float, *, monotonic: bool = False
) -> int:
    """Index of the largest score after exponential noise of ``scale`` (permute-and-flip).

    Epsilon is ``sensitivity / scale`` for monotonic scores and twice that otherwise.
    """
    arr = _array(scores, integer=False)
    return int(_noisy_max(float(scale), monotonic)(arr.tolist()))


@functools.lru_cache(maxsize=64)
def _gumbel_max(scale: float) -> mod.Measurement:
    # Under zero_concentrated_divergence OpenDP's noisy max adds Gumbel noise (the exponential
    # mechanism's softmax exactly); under max_divergence it adds exponential noise instead.
    return measurements.make_noisy_max(
        domains.vector_domain(domains.atom_domain(T=float, nan=False)),
        metrics.linf_distance(T=float),
        measures.zero_concentrated_divergence(),
        scale,
    )


def gumbel_max(scores: Sequence[float] | np.ndarray, scale: float) -> int:
    """Index of the largest score after Gumbel noise of ``scale``: the exponential mechanism.

    Index ``i`` wins with probability proportional to ``exp(scores[i] / scale)``;
    for scores of sensitivity ``s`` (non-monotonic) this is epsilon-DP with
    ``epsilon = 2 s / scale`` and OpenDP's map gives ``rho = epsilon^2 / 8``.
    """
    arr = _array(scores, integer=False)
    return int(_gumbel_max(float(scale))(arr.tolist()))


@functools.lru_cache(maxsize=64)
def _categorical(categories: tuple[str, ...], truth_probability: float) -> mod.Measurement:
    return measurements.make_randomized_response(list(categories), truth_probability)


def categorical_response(value: str, categories: tuple[str, ...], truth_probability: float) -> str:
    """k-ary randomized response: ``value`` with ``truth_probability``, else another category uniformly."""
    return str(_categorical(categories, truth_probability)(value))


@functools.lru_cache(maxsize=64)
def _bitvector(width: int, flip: float) -> mod.Measurement:
    del width  # the domain does not fix the width; cached per width to keep entries distinct
    return measurements.make_randomized_response_bitvec(
        domains.bitvector_domain(max_weight=1), metrics.discrete_distance(), flip
    )


def bitvector_response(index: int, width: int, flip: float) -> np.ndarray:
    """RAPPOR-style randomized response of the one-hot vector ``e_index`` of ``width`` bits.

    Each bit is kept with probability ``1 - flip`` and replaced by a fair coin
    otherwise (OpenDP's ``make_randomized_response_bitvec``).
    """
    bits = np.zeros(((width + 7) // 8) * 8, dtype=bool)
    bits[index] = True
    out = _bitvector(width, flip)(np.packbits(bits).tobytes())
    return np.unpackbits(np.frombuffer(out, dtype=np.uint8))[:width].astype(bool)

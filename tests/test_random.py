"""The one CSPRNG (veil._random): exact distributions, the AES-CTR construction, seeding that says it is not private.

Every statistical test fixes ALPHA and uses an exact or conservative bound (KS
critical values, Clopper-Pearson with Bonferroni over its intervals): each
fails a correct generator with probability at most ALPHA.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats
from tests._dpstats import clopper_pearson, ks_critical_value, ks_statistic

from veil._random import SecureRandom
from veil.errors import InvalidInputError, PrivacyLeakWarning

ALPHA = 1e-6


def _seeded(seed: int) -> SecureRandom:
    with pytest.warns(PrivacyLeakWarning, match="not private"):
        return SecureRandom(seed)


# ----------------------------------------------------------------------------- the construction


def test_seeded_bits_are_aes256_ctr_under_the_documented_key(seed):
    """Oracle: AES-256-CTR over zeros, key and nonce from SHA-512("veil-dpsgd-seed:<seed>")."""
    digest = hashlib.sha512(f"veil-dpsgd-seed:{seed}".encode()).digest()
    encryptor = Cipher(algorithms.AES(digest[:32]), modes.CTR(digest[32:48])).encryptor()
    expected = np.frombuffer(encryptor.update(bytes(8 * 1000 + 4 * 10)), dtype=np.uint8)
    rng = _seeded(seed)
    got = np.concatenate(
        [rng.bits(1000, np.uint64).view(np.uint8), rng.bits(10, np.int32).view(np.uint8)]
    )
    np.testing.assert_array_equal(got, expected)


def test_every_bit_of_the_stream_is_a_fair_coin():
    n, width = 200_000, 64
    words = SecureRandom().bits(n, np.uint64)
    ones = [int(((words >> np.uint64(b)) & np.uint64(1)).sum()) for b in range(width)]
    for position, count in enumerate(ones):
        lo, hi = clopper_pearson(count, n, ALPHA / width)
        assert lo <= 0.5 <= hi, f"bit {position}: {count}/{n} ones (type I error <= {ALPHA})"


def test_unseeded_streams_differ_and_seeded_ones_repeat_with_a_warning(seed):
    assert SecureRandom().secure
    assert not np.array_equal(SecureRandom().bits(4), SecureRandom().bits(4))
    first, second = _seeded(seed), _seeded(seed)
    assert not first.secure
    np.testing.assert_array_equal(first.normal(17, 2.0), second.normal(17, 2.0))
    np.testing.assert_array_equal(first.bernoulli(50, 0.3), second.bernoulli(50, 0.3))
    # the stream moves on: a second draw is not the first again
    assert not np.array_equal(first.normal(17), _seeded(seed).normal(17))


@pytest.mark.parametrize("bad", [1.5, "7", True, b"7"])
def test_bad_seeds_are_refused(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrivacyLeakWarning)  # refused before any warning
        with pytest.raises(InvalidInputError, match="seed"):
            SecureRandom(bad)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: r.bits(-1), "count"),
        (lambda r: r.bits(2, np.float64), "integer dtype"),
        (lambda r: r.normal(1.5), "count"),
        (lambda r: r.uniform(count=True), "count"),
        (lambda r: r.bernoulli(3, 1.5), "probability"),
        (lambda r: r.bernoulli(3, float("nan")), "probability"),
        (lambda r: r.bernoulli(3, "0.5"), "probability"),
        (lambda r: r.bernoulli(3, probability=True), "probability"),
    ],
)
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(SecureRandom())


def test_arrays_have_their_documented_types_and_sizes():
    rng = SecureRandom()
    assert rng.normal(5).dtype == np.float32 and rng.normal(5).shape == (5,)  # odd count
    assert rng.normal(0).shape == (0,)
    assert rng.uniform(3).dtype == np.float64
    assert rng.bernoulli(4, 0.5).dtype == np.bool_
    assert rng.bits(3, np.int16).dtype == np.int16
    for array in (rng.normal(4), rng.uniform(4), rng.bernoulli(4, 0.5), rng.permutation(4)):
        assert array.flags.writeable  # torch.from_numpy shares them without a warning


# ----------------------------------------------------------------------------- distributions


def test_normal_has_its_scale_by_ks():
    # Zero signal: the draws are pure noise of std 2.5; the KS test has the power to see a
    # 5 % error of scale (distance ~0.012 against a critical value of 0.0043).
    n, std = 400_000, 2.5
    sample = SecureRandom().normal(n, std=std).astype(np.float64)
    critical = ks_critical_value(n, ALPHA)
    distance = ks_statistic(sample, stats.norm(scale=std).cdf)
    assert distance <= critical, f"KS {distance:.5f} > {critical:.5f}: type I error <= {ALPHA}"
    assert ks_statistic(sample, stats.norm(scale=1.05 * std).cdf) > critical


def test_box_muller_pairs_are_independent_by_ks():
    # The two halves share their radii: were they dependent, x + y would not be N(0, 2).
    n = 200_000
    sample = SecureRandom().normal(2 * n).astype(np.float64)
    total = sample[:n] + sample[n:]
    distance = ks_statistic(total, stats.norm(scale=math.sqrt(2)).cdf)
    assert distance <= ks_critical_value(n, ALPHA), f"KS {distance:.5f}: type I error <= {ALPHA}"


def test_normal_reaches_its_tails():
    # 53-bit radius uniforms: |z| up to 8.5 sd is possible; P(|z| > 4.5) = 6.8e-6, so in 2e6
    # draws the count is Poisson(13.6); P(count < 1) = 1.2e-6 (type I error <= ~1e-6).
    sample = SecureRandom().normal(2_000_000)
    assert (np.abs(sample) > 4.5).sum() >= 1
    assert np.isfinite(sample).all()


def test_uniform_is_uniform_by_ks_and_inside_the_open_interval():
    n = 200_000
    sample = SecureRandom().uniform(n)
    assert sample.min() > 0.0 and sample.max() < 1.0
    distance = ks_statistic(sample, stats.uniform.cdf)
    assert distance <= ks_critical_value(n, ALPHA), f"KS {distance:.5f}: type I error <= {ALPHA}"


@pytest.mark.parametrize("p", [0.0043, 0.5, 0.97])
def test_bernoulli_frequency_within_clopper_pearson(p):
    n = 1_000_000
    hits = int(SecureRandom().bernoulli(n, p).sum())
    lo, hi = clopper_pearson(hits, n, ALPHA)
    assert lo <= p <= hi, f"{hits}/{n} at p = {p}: type I error <= {ALPHA}"


def test_bernoulli_extremes_are_certain():
    rng = SecureRandom()
    assert rng.bernoulli(1000, 1.0).all()
    assert not rng.bernoulli(1000, 0.0).any()
    assert rng.bernoulli(0, 0.5).shape == (0,)


def test_permutation_is_a_uniform_permutation():
    rng = SecureRandom()
    perm = rng.permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    # Where element 0 lands in a permutation of 5 is uniform: each place with probability 1/5.
    trials, size = 20_000, 5
    places = np.array([int(np.flatnonzero(rng.permutation(size) == 0)[0]) for _ in range(trials)])
    for place in range(size):
        count = int((places == place).sum())
        lo, hi = clopper_pearson(count, trials, ALPHA / size)
        assert lo <= 1 / size <= hi, f"place {place}: {count}/{trials} (type I error <= {ALPHA})"

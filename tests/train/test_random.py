"""The CSPRNG behind DP-SGD: exact distributions (KS, binomial), and seeding that says it is not private."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from tests._dpstats import clopper_pearson, ks_critical_value, ks_statistic

from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.train import SecureRandom

ALPHA = 1e-6


def test_normal_is_standard_normal_by_ks():
    n = 400_000
    sample = SecureRandom().normal(n, std=2.5).double().numpy() / 2.5
    d = ks_statistic(sample, stats.norm.cdf)
    assert d <= ks_critical_value(n, ALPHA), f"KS {d:.5f}: type I error <= {ALPHA}"


def test_normal_reaches_its_tails():
    # 53-bit radius uniforms: |z| up to 8.5 sd is possible; P(|z| > 4.5) = 6.8e-6, so in 2e6
    # draws the count is Poisson(13.6); P(count < 1) = 1.2e-6 (type I error <= ~1e-6).
    sample = SecureRandom().normal(2_000_000).numpy()
    assert (np.abs(sample) > 4.5).sum() >= 1
    assert np.isfinite(sample).all()


def test_bernoulli_frequency_within_clopper_pearson():
    n, p = 1_000_000, 0.0043
    hits = int(SecureRandom().bernoulli(n, p).sum())
    lo, hi = clopper_pearson(hits, n, ALPHA)
    assert lo <= p <= hi, f"{hits}/{n}: type I error <= {ALPHA}"
    assert bool(SecureRandom().bernoulli(10, 1.0).all())
    assert not bool(SecureRandom().bernoulli(10, 0.0).any())


def test_uniform_is_uniform_by_ks():
    n = 200_000
    sample = SecureRandom().uniform(n).numpy()
    assert ks_statistic(sample, stats.uniform.cdf) <= ks_critical_value(n, ALPHA)


def test_unseeded_streams_differ_and_seeded_ones_repeat_with_a_warning():
    assert not np.array_equal(SecureRandom().normal(8).numpy(), SecureRandom().normal(8).numpy())
    with pytest.warns(PrivacyLeakWarning, match="not private"):
        a = SecureRandom(seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        b = SecureRandom(seed=7)
    assert not a.secure
    assert np.array_equal(a.normal(16).numpy(), b.normal(16).numpy())
    assert SecureRandom().secure


@pytest.mark.parametrize("bad", [1.5, "7", True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(InvalidInputError):
        SecureRandom(seed=bad)


def test_permutation_is_a_permutation():
    perm = SecureRandom().permutation(1000).numpy()
    assert sorted(perm.tolist()) == list(range(1000))
    assert not math.isclose(float(np.corrcoef(perm, np.arange(1000))[0, 1]), 1.0)

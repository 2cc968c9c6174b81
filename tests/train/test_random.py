"""DP-SGD's SecureRandom: the torch face of veil._random (its distributions are tested in tests/test_random.py).

What is left to test here: the same stream handed over as tensors of the
documented types, the DP-SGD warning on a seed, and one distributional check
through the adapter (type I error <= ALPHA).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from tests._dpstats import clopper_pearson, ks_critical_value, ks_statistic

from veil import _random
from veil.errors import InvalidInputError, PrivacyLeakWarning
from veil.train import SecureRandom

ALPHA = 1e-6


def test_tensors_are_the_ground_floor_stream(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyLeakWarning)
        torch_face, numpy_face = SecureRandom(seed), _random.SecureRandom(seed)
    for draw in (
        lambda r: r.normal(11, 2.0),
        lambda r: r.uniform(7),
        lambda r: r.bernoulli(9, 0.4),
        lambda r: r.permutation(13),
    ):
        tensor, array = draw(torch_face), draw(numpy_face)
        assert isinstance(tensor, torch.Tensor)
        np.testing.assert_array_equal(tensor.numpy(), array)
    assert torch_face.normal(3).dtype == torch.float32
    assert torch_face.uniform(3).dtype == torch.float64
    assert torch_face.bernoulli(3, 0.5).dtype == torch.bool
    assert torch_face.permutation(3).dtype == torch.int64


def test_normal_is_standard_normal_by_ks():
    n = 400_000
    sample = SecureRandom().normal(n, std=2.5).double().numpy() / 2.5
    d = ks_statistic(sample, stats.norm.cdf)
    assert d <= ks_critical_value(n, ALPHA), f"KS {d:.5f}: type I error <= {ALPHA}"


def test_bernoulli_frequency_within_clopper_pearson():
    n, p = 1_000_000, 0.0043
    hits = int(SecureRandom().bernoulli(n, p).sum())
    lo, hi = clopper_pearson(hits, n, ALPHA)
    assert lo <= p <= hi, f"{hits}/{n}: type I error <= {ALPHA}"


def test_unseeded_streams_differ_and_seeded_ones_repeat_with_a_warning():
    assert not np.array_equal(SecureRandom().normal(8).numpy(), SecureRandom().normal(8).numpy())
    with pytest.warns(PrivacyLeakWarning, match="seeded DP-SGD run .* not private"):
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

"""Client partitions: disjoint and complete, skewed as each scheme promises, reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import InvalidInputError
from veil.federated._partition import SCHEMES, describe_partition, partition

MNIST_LIKE = np.repeat(np.arange(10), 600)


def _skew(labels, parts, share=0.05):
    """The mean number of classes holding more than ``share`` of a client's data."""
    counts = np.asarray(describe_partition(labels, parts)["class_counts"], dtype=np.float64)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    return float((fractions > share).sum(axis=1).mean())


def _assert_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert joined.size == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))
    for part in parts:
        assert part.dtype == np.int64
        assert (np.diff(part) > 0).all()  # sorted, no repeats


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("clients", [1, 7, 20])
def test_parts_are_disjoint_and_cover_every_sample(scheme, clients, seed):
    labels = np.random.default_rng(seed).integers(0, 10, size=3000)
    # Ten shards per client, so that even one client can hold all ten classes.
    parts = partition(labels, clients, scheme, seed=seed, min_size=5, classes_per_client=10)
    assert len(parts) == clients
    _assert_exact_cover(parts, labels.size)
    assert min(part.size for part in parts) >= 5
    summary = describe_partition(labels, parts)
    assert summary["disjoint"]
    assert summary["covers_all"]


def test_iid_sizes_differ_by_at_most_one(seed):
    parts = partition(MNIST_LIKE, 7, "iid", seed=seed)
    sizes = [part.size for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert _skew(MNIST_LIKE, parts) == 10.0


@pytest.mark.parametrize(("clients", "k"), [(10, 2), (100, 2), (20, 1), (30, 3)])
def test_pathological_gives_at_most_k_classes(clients, k, seed):
    parts = partition(MNIST_LIKE, clients, "pathological", classes_per_client=k, seed=seed)
    summary = describe_partition(MNIST_LIKE, parts)
    assert summary["max_classes"] <= k
    _assert_exact_cover(parts, MNIST_LIKE.size)


def test_pathological_shards_follow_mcmahan_on_balanced_labels(seed):
    # 100 clients x 2 shards of 30: every shard one class, every client 60 samples.
    parts = partition(MNIST_LIKE, 100, "pathological", classes_per_client=2, seed=seed)
    assert {part.size for part in parts} == {60}


def test_pathological_stays_within_k_on_unbalanced_classes(seed):
    # Class sizes that are not multiples of the shard size: a sort-and-cut split would let
    # shards straddle two classes; cutting inside each class never does.
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), rng.integers(50, 700, size=10))
    parts = partition(labels, 13, "pathological", classes_per_client=2, seed=seed)
    assert describe_partition(labels, parts)["max_classes"] <= 2
    _assert_exact_cover(parts, labels.size)


def test_small_dirichlet_alpha_is_more_skewed_than_large(seed):
    skewed = partition(MNIST_LIKE, 20, "dirichlet", alpha=0.1, seed=seed)
    even = partition(MNIST_LIKE, 20, "dirichlet", alpha=100.0, seed=seed)
    assert _skew(MNIST_LIKE, skewed) < 6.0
    # alpha = 100: each client's share of a class is within a few sd of 10 %, far above 5 %.
    assert _skew(MNIST_LIKE, even) == 10.0


def test_dirichlet_honours_min_size(seed):
    parts = partition(MNIST_LIKE, 20, "dirichlet", alpha=0.3, seed=seed, min_size=100)
    assert min(part.size for part in parts) >= 100


def test_quantity_skews_sizes_not_labels(seed):
    labels = MNIST_LIKE
    uneven = partition(labels, 10, "quantity", alpha=0.5, seed=seed, min_size=20)
    sizes = np.array([part.size for part in uneven])
    assert sizes.min() >= 20
    assert sizes.max() > 2 * sizes.min()
    # The largest client's labels are an IID sample: all ten classes are there.
    biggest = uneven[int(np.argmax(sizes))]
    assert np.unique(labels[biggest]).size == 10
    flat = partition(labels, 10, "quantity", alpha=1e6, seed=seed)
    assert np.ptp([part.size for part in flat]) <= 0.05 * labels.size / 10


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_seed_decides_the_split(scheme):
    first = partition(MNIST_LIKE, 10, scheme, seed=3)
    again = partition(MNIST_LIKE, 10, scheme, seed=3)
    other = partition(MNIST_LIKE, 10, scheme, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_string_and_whole_float_labels_work():
    labels = np.array(["<=50K", ">50K"] * 50)
    parts = partition(labels, 4, "pathological", classes_per_client=1)
    assert describe_partition(labels, parts)["max_classes"] == 1
    assert describe_partition(labels, parts)["classes"] == ["<=50K", ">50K"]
    floats = np.repeat([0.0, 1.0, 2.0], 10)
    _assert_exact_cover(partition(floats, 3, "dirichlet"), 30)


def test_describe_partition_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    summary = describe_partition(labels, [np.array([0, 1, 2]), np.array([3, 4, 5])])
    assert summary == {
        "clients": 2,
        "samples": 6,
        "sizes": [3, 3],
        "min_size": 3,
        "max_size": 3,
        "classes": [0, 1, 2],
        "classes_per_client": [2, 2],
        "min_classes": 2,
        "max_classes": 2,
        "class_counts": [[2, 1, 0], [0, 1, 2]],
        "disjoint": True,
        "covers_all": True,
    }
    overlapping = describe_partition(labels, [np.array([0, 1]), np.array([1, 2])])
    assert not overlapping["disjoint"]
    assert not overlapping["covers_all"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: partition(MNIST_LIKE, 10, "shards"),
            "one of iid, dirichlet, pathological, quantity",
        ),
        (lambda: partition(np.arange(5), 6, "iid"), "clients <= 5"),
        (lambda: partition(np.arange(5), 0, "iid"), "clients >= 1"),
        (lambda: partition(np.arange(5), 2.0, "iid"), "whole number"),
        (lambda: partition(MNIST_LIKE, 10, "dirichlet", alpha=0.0), "alpha > 0"),
        (lambda: partition(MNIST_LIKE, 10, "quantity", alpha=-1.0), "alpha > 0"),
        (lambda: partition(MNIST_LIKE, 10, "dirichlet", alpha=float("nan")), "alpha > 0"),
        (lambda: partition(MNIST_LIKE, 10, "iid", min_size=0), "min_size >= 1"),
        (lambda: partition(np.arange(10), 3, "iid", min_size=4), "clients x min_size"),
        (lambda: partition(MNIST_LIKE.reshape(60, 100), 3, "iid"), "1-D"),
        (lambda: partition(np.array([]), 1, "iid"), "non-empty"),
        (lambda: partition([0, 1, 2], 1, "iid"), "non-empty 1-D"),
        (lambda: partition(np.array([0.5, 1.0]), 1, "iid"), "discrete"),
        (lambda: partition(np.array([None, 1]), 1, "iid"), "integers or strings"),
        (lambda: partition(MNIST_LIKE, 2, "pathological"), "raise classes_per_client to 5"),
        (
            lambda: partition(np.arange(6), 2, "pathological", classes_per_client=4),
            "at least one sample per shard",
        ),
        (
            lambda: partition(np.repeat([0, 1], [98, 2]), 5, "dirichlet", alpha=1e-3, min_size=15),
            "no Dirichlet draw",
        ),
        (lambda: describe_partition(MNIST_LIKE, []), "no client"),
        (lambda: describe_partition(np.arange(3), [np.array([0, 3])]), r"indices in 0\.\.2"),
        (lambda: describe_partition(np.arange(3), [np.array([0.0])]), "1-D array of indices"),
    ],
)
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        call()
    assert caught.value.expected and caught.value.got and caught.value.fix

"""Malicious-client behaviours: each does exactly what it says and leaves its input alone."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import InvalidInputError
from veil.federated._aggregate import norm_bound, weighted_mean
from veil.federated._attacks import (
    ATTACKS,
    TRIGGER_SIZE,
    add_trigger,
    flip_labels,
    free_ride,
    poison_backdoor,
    replacement_factor,
    scale_update,
    sign_flip,
)


def test_the_attack_names():
    assert ATTACKS == ("label-flip", "sign-flip", "backdoor", "free-ride")


def test_flip_labels():
    labels = np.array([0, 1, 9, 4], dtype=np.int32)
    flipped = flip_labels(labels, 10)
    np.testing.assert_array_equal(flipped, [9, 8, 0, 5])
    assert flipped.dtype == np.int32
    np.testing.assert_array_equal(flip_labels(flipped, 10), labels)
    np.testing.assert_array_equal(flip_labels(np.array([0, 1]), 2), [1, 0])
    np.testing.assert_array_equal(labels, [0, 1, 9, 4])


def test_sign_flip_and_scale(seed):
    update = np.random.default_rng(seed).normal(size=20)
    original = update.copy()
    np.testing.assert_array_equal(sign_flip(update), -update)
    np.testing.assert_array_equal(sign_flip(update, 3.0), -3.0 * update)
    np.testing.assert_array_equal(scale_update(update, 2.5), 2.5 * update)
    np.testing.assert_array_equal(update, original)


def test_model_replacement_swaps_the_global_model(seed):
    # Bagdasaryan et al. eq. 3: with benign updates near zero, boosting by n / eta makes
    # FedAvg's next model (global + eta * mean update) the attacker's own model.
    rng = np.random.default_rng(seed)
    global_model, wanted = rng.normal(size=50), rng.normal(size=50)
    clients, server_lr = 10, 0.5
    boost = replacement_factor(clients, server_lr)
    assert boost == 20.0
    updates = np.zeros((clients, 50))
    updates[3] = scale_update(wanted - global_model, boost)
    new_model = global_model + server_lr * weighted_mean(updates, np.ones(clients))
    np.testing.assert_allclose(new_model, wanted, rtol=1e-12, atol=1e-12)
    # The norm bound (Sun et al. 2019) takes the boost away.
    bounded, clipped = norm_bound(updates, 1.0)
    assert clipped == 1
    assert np.linalg.norm(bounded[3]) <= 1.0


def test_free_ride_returns_nothing_or_a_disguise(seed):
    np.testing.assert_array_equal(free_ride((3, 4)), np.zeros((3, 4)))
    assert free_ride((3, 4)).dtype == np.float64
    noise = free_ride((100, 100), np.random.default_rng(seed), sigma=0.01)
    # The sample sd of 10^4 normals has relative sd 1/sqrt(2 * 10^4) = 0.7 %; 5 % is 7 sd out,
    # a false failure below 1e-11. The mean's sd is 1e-4; 1e-3 is 10 sd.
    assert abs(noise.std() / 0.01 - 1.0) < 0.05
    assert abs(noise.mean()) < 1e-3
    # Claiming examples while sending zeros shrinks FedAvg's step towards zero.
    honest = np.ones((1, 6))
    diluted = weighted_mean(np.vstack([honest, free_ride((1, 6))]), np.array([10.0, 30.0]))
    np.testing.assert_allclose(diluted, 0.25)


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 1, 8, 8), (4, 3, 5, 6)])
def test_add_trigger_stamps_the_bottom_right_corner(shape, seed):
    images = np.random.default_rng(seed).uniform(0.0, 0.5, size=shape)
    original = images.copy()
    stamped = add_trigger(images)
    assert (stamped[..., -TRIGGER_SIZE:, -TRIGGER_SIZE:] == 1.0).all()
    mask = np.zeros(shape, dtype=bool)
    mask[..., -TRIGGER_SIZE:, -TRIGGER_SIZE:] = True
    np.testing.assert_array_equal(stamped[~mask], images[~mask])
    assert mask.sum() == shape[0] * int(np.prod(shape[1:-2])) * 9
    np.testing.assert_array_equal(images, original)


def test_add_trigger_uses_the_given_range():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    stamped = add_trigger(images, high=255)
    assert stamped.dtype == np.uint8
    assert stamped[:, -3:, -3:].min() == 255
    assert stamped.sum() == 2 * 9 * 255
    normalised = add_trigger(np.zeros((1, 1, 28, 28)), high=(1 - 0.1307) / 0.3081)
    np.testing.assert_allclose(normalised[0, 0, -1, -1], 2.8215, atol=1e-4)


def test_poison_backdoor(seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.5, size=(40, 1, 8, 8))
    labels = rng.integers(0, 9, size=40)  # never the target 9
    poisoned, relabelled = poison_backdoor(images, labels, 9, 0.25, np.random.default_rng(seed))
    chosen = np.flatnonzero(relabelled != labels)
    assert chosen.size == 10
    assert (relabelled[chosen] == 9).all()
    np.testing.assert_array_equal(poisoned[chosen], add_trigger(images[chosen]))
    untouched = np.setdiff1d(np.arange(40), chosen)
    np.testing.assert_array_equal(poisoned[untouched], images[untouched])
    # Reproducible by the generator's seed; the inputs are left alone.
    again, _ = poison_backdoor(images, labels, 9, 0.25, np.random.default_rng(seed))
    np.testing.assert_array_equal(again, poisoned)
    assert (labels != 9).all()
    same, kept = poison_backdoor(images, labels, 9, 0.0, rng)
    np.testing.assert_array_equal(same, images)
    np.testing.assert_array_equal(kept, labels)
    _, everything = poison_backdoor(images, labels, 9, 1.0, rng)
    assert (everything == 9).all()


IMAGES = np.zeros((4, 8, 8))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: flip_labels(np.array([0, 10]), 10), r"labels in 0\.\.9"),
        (lambda: flip_labels(np.array([-1]), 10), r"labels in 0\.\.9"),
        (lambda: flip_labels(np.array([0.0]), 10), "integer array"),
        (lambda: flip_labels([0, 1], 10), "integer array"),
        (lambda: flip_labels(np.array([0]), 1), "n_classes >= 2"),
        (lambda: sign_flip(np.zeros(3), 0.0), "scale must be positive"),
        (lambda: sign_flip(np.zeros(3, dtype=np.int64)), "float array"),
        (lambda: scale_update(np.zeros(3), float("inf")), "factor must be positive"),
        (lambda: scale_update([0.0], 2.0), "float array"),
        (lambda: replacement_factor(0), "n_clients >= 1"),
        (lambda: replacement_factor(10, 0.0), "server_lr must be positive"),
        (lambda: free_ride((3, -1)), "update_shape entry >= 0"),
        (lambda: free_ride((3,), rng=42), "random generator"),
        (lambda: free_ride((3,), np.random.default_rng(0), sigma=0.0), "sigma must be positive"),
        (lambda: add_trigger(np.zeros((8, 8))), r"N x H x W or N x C x H x W"),
        (lambda: add_trigger(np.zeros((2, 2, 2))), "height and width >= 3"),
        (lambda: add_trigger(IMAGES, high=float("nan")), "high must be finite"),
        (lambda: add_trigger(IMAGES, high="1"), "high must be a number"),
        (lambda: poison_backdoor(IMAGES, np.zeros(3), 0, 0.5, np.random.default_rng()), r"\(4,\)"),
        (lambda: poison_backdoor(IMAGES, np.zeros(4), -1, 0.5, np.random.default_rng()), "target"),
        (
            lambda: poison_backdoor(IMAGES, np.zeros(4), 0, 1.5, np.random.default_rng()),
            r"\[0, 1\]",
        ),
        (lambda: poison_backdoor(IMAGES, np.zeros(4), 0, 0.5, 7), "random generator"),
    ],
)
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        call()
    assert caught.value.expected and caught.value.got and caught.value.fix

"""Malicious-client behaviours for the robustness benchmark and tests, as small pure functions.

Each returns new arrays and leaves its input untouched.

* **Label flipping** (:func:`flip_labels`; Biggio et al. 2012, Tolpegin et
  al. 2020, "Data poisoning attacks against federated learning systems"):
  the client trains on ``y -> n_classes - 1 - y``.
* **Sign flipping** (:func:`sign_flip`; a standard Byzantine behaviour, e.g.
  Damaskinos et al. 2018 and Karimireddy et al. 2021): the client sends
  ``-scale * update``, pulling the average away from descent.
* **Model replacement** (:func:`scale_update`, :func:`replacement_factor`;
  Bagdasaryan et al. 2020, "How to backdoor federated learning", AISTATS):
  the attacker boosts its update by ``gamma = n / eta`` (clients per round
  over the server learning rate) so that, averaged with ``n - 1`` benign
  updates close to zero, it replaces the global model with its own.
* **Backdoor** (:func:`add_trigger`, :func:`poison_backdoor`; Gu et al.
  2017, "BadNets"): a 3x3 patch of maximum intensity in the bottom-right
  corner, on a fraction of the attacker's images, all relabelled ``target``.
  Combined with boosting it is the attack of Bagdasaryan et al.; Sun et al.
  2019's norm bound (:func:`veil.federated._aggregate.norm_bound`) is the
  defence it is measured against.
* **Free riding** (:func:`free_ride`; Lin et al. 2019, Fraboni et al. 2021,
  "Free-rider attacks on model aggregation in federated learning",
  AISTATS): the client trains nothing, returns the global model unchanged
  (a zero update) while claiming its examples; given a generator it adds
  small Gaussian noise ("disguised" free riding) so that its update is not
  trivially recognisable.

The randomness (which examples to poison, the free rider's disguise) comes
from a :class:`numpy.random.Generator` the caller passes: it simulates an
adversary, it is not privacy noise.
"""

from __future__ import annotations

import math

import numpy as np

from veil.errors import InvalidInputError
from veil.federated._aggregate import _positive
from veil.federated._aggregate import check_whole as _whole

__all__ = [
    "ATTACKS",
    "TRIGGER_SIZE",
    "add_trigger",
    "flip_labels",
    "free_ride",
    "poison_backdoor",
    "replacement_factor",
    "scale_update",
    "sign_flip",
]

ATTACKS = ("label-flip", "sign-flip", "backdoor", "free-ride")
"""The malicious behaviours a simulated client can take, by name."""

TRIGGER_SIZE = 3
"""The side of the square backdoor trigger, in pixels."""

_DEFAULT_DISGUISE = 1e-3


def _labels(labels: object, n_classes: int) -> np.ndarray:
    fix = f"pass integer class labels in 0..{n_classes - 1}"
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
        got = f"dtype {labels.dtype}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise InvalidInputError(
            "labels must be an integer array",
            expected="a NumPy array of integer class labels",
            got=got,
            fix=fix,
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise InvalidInputError(
            "labels fall outside 0..n_classes-1",
            expected=f"labels in 0..{n_classes - 1}",
            got=f"labels from {labels.min()} to {labels.max()}",
            fix=fix,
        )
    return labels


def _update(update: object) -> np.ndarray:
    if not isinstance(update, np.ndarray) or update.dtype.kind != "f":
        got = f"dtype {update.dtype}" if isinstance(update, np.ndarray) else type(update).__name__
        raise InvalidInputError(
            "update must be a float array",
            expected="a NumPy float array (a model update)",
            got=got,
            fix="pass the flattened model update as a float array",
        )
    return update


def flip_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Every label ``y`` replaced by ``n_classes - 1 - y`` (same dtype, a new array).

    Raises:
        InvalidInputError: ``n_classes < 2`` or a label outside ``0..n_classes-1``.
    """
    classes = _whole(n_classes, "n_classes", minimum=2)
    array = _labels(labels, classes)
    return (classes - 1 - array).astype(array.dtype)


def sign_flip(update: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``-scale * update``: the update pointed uphill, optionally amplified.

    Raises:
        InvalidInputError: ``scale`` is not positive and finite, or ``update``
            is not a float array.
    """
    return -_positive(scale, "scale") * _update(update)


def replacement_factor(n_clients: int, server_lr: float = 1.0) -> float:
    """Bagdasaryan et al.'s boost ``gamma = n_clients / server_lr`` for model replacement.

    Raises:
        InvalidInputError: ``n_clients < 1`` or ``server_lr`` not positive and finite.
    """
    return _whole(n_clients, "n_clients", minimum=1) / _positive(server_lr, "server_lr")


def scale_update(update: np.ndarray, factor: float) -> np.ndarray:
    """``factor * update``: a boosted update (use :func:`replacement_factor` for ``factor``).

    Raises:
        InvalidInputError: ``factor`` is not positive and finite, or ``update``
            is not a float array.
    """
    return _positive(factor, "factor") * _update(update)


def free_ride(
    update_shape: tuple[int, ...],
    rng: np.random.Generator | None = None,
    *,
    sigma: float = _DEFAULT_DISGUISE,
) -> np.ndarray:
    """A free rider's float64 update: zeros (no training), or ``N(0, sigma^2)`` noise with ``rng``.

    The client still reports its example count, so FedAvg weights its
    contribution of nothing as if it had trained.

    Raises:
        InvalidInputError: a negative dimension in ``update_shape``, ``rng``
            not a NumPy generator, or ``sigma`` not positive and finite.
    """
    shape = tuple(_whole(size, "update_shape entry") for size in update_shape)
    if rng is None:
        return np.zeros(shape)
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(
            "rng must be a NumPy random generator",
            expected="numpy.random.Generator or None",
            got=type(rng).__name__,
            fix="pass numpy.random.default_rng(seed), or None for a plain zero update",
        )
    return rng.normal(0.0, _positive(sigma, "sigma"), size=shape)


def _images(images: object) -> np.ndarray:
    fix = "pass a batch of images shaped N x H x W or N x C x H x W"
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4):
        got = f"shape {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InvalidInputError(
            "images must be a batch of 2-D images",
            expected="a NumPy array shaped N x H x W or N x C x H x W",
            got=got,
            fix=fix,
        )
    if min(images.shape[-2:]) < TRIGGER_SIZE:
        raise InvalidInputError(
            "images are too small for the trigger",
            expected=f"height and width >= {TRIGGER_SIZE}",
            got=f"shape {images.shape}",
            fix=fix,
        )
    return images


def add_trigger(images: np.ndarray, *, high: float = 1.0) -> np.ndarray:
    """A copy of ``images`` with a 3x3 patch set to ``high`` in each bottom-right corner.

    ``images`` is ``N x H x W`` or ``N x C x H x W`` (every channel is
    stamped); ``high`` is the top of their value range (1.0 for ``[0, 1]``,
    255 for ``uint8``, ``(1 - mean) / std`` after normalisation).

    Raises:
        InvalidInputError: ``images`` has another shape, images smaller than
            3x3, or ``high`` is not finite.
    """
    array = _images(images)
    if isinstance(high, bool) or not isinstance(high, (int, float, np.number)):
        raise InvalidInputError(
            "high must be a number",
            expected="the images' maximum intensity, such as 1.0 or 255",
            got=repr(high),
            fix="pass high=1.0 for images in [0, 1]",
        )
    if not math.isfinite(float(high)):
        raise InvalidInputError(
            "high must be finite",
            expected="the images' maximum intensity, such as 1.0 or 255",
            got=repr(high),
            fix="pass high=1.0 for images in [0, 1]",
        )
    stamped = array.copy()
    stamped[..., -TRIGGER_SIZE:, -TRIGGER_SIZE:] = high
    return stamped


def poison_backdoor(
    images: np.ndarray,
    labels: np.ndarray,
    target: int,
    fraction: float,
    rng: np.random.Generator,
    *,
    high: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of ``images`` and ``labels`` with ``round(fraction N)`` random examples backdoored.

    The chosen examples (drawn without replacement by ``rng``) carry the
    trigger of :func:`add_trigger` and the label ``target``; the rest are
    unchanged.

    Raises:
        InvalidInputError: ``labels`` does not match ``images``, ``target`` is
            negative, ``fraction`` outside ``[0, 1]``, or ``rng`` is not a
            NumPy generator.
    """
    array = _images(images)
    goal = _whole(target, "target")
    if not isinstance(labels, np.ndarray) or labels.shape != (array.shape[0],):
        got = f"shape {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise InvalidInputError(
            "labels must give one label per image",
            expected=f"a NumPy array of shape ({array.shape[0]},)",
            got=got,
            fix="pass the labels of these same images",
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.number))
        or not 0.0 <= float(fraction) <= 1.0
    ):
        raise InvalidInputError(
            "fraction must lie in [0, 1]",
            expected="the share of examples to poison, 0 <= fraction <= 1",
            got=repr(fraction),
            fix="pass a fraction such as 0.1",
        )
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(
            "rng must be a NumPy random generator",
            expected="numpy.random.Generator",
            got=type(rng).__name__,
            fix="pass numpy.random.default_rng(seed)",
        )
    chosen = rng.choice(array.shape[0], size=round(float(fraction) * array.shape[0]), replace=False)
    poisoned = array.copy()
    poisoned[chosen] = add_trigger(array[chosen], high=high)
    relabelled = labels.copy()
    relabelled[chosen] = goal
    return poisoned, relabelled
